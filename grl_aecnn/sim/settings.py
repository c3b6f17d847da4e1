"""Config section `scenario`: the MEC system model (equations and sources in docs/system-model.md).

Every number the simulator uses lives here, so a sweep is a list of overrides of this section.
Defaults marked *calibration* in the docs were chosen so that decisions matter (SPEC 4).
"""

from __future__ import annotations

from pydantic import Field, model_validator

from grl_aecnn.profile import OFFLOAD_CODECS
from grl_aecnn.settings_base import Section

MAX_NETWORK = 1024


class ScenarioConfig(Section):
    # -- network size and observation padding -------------------------------------------
    num_devices: int = Field(14, ge=1, le=MAX_NETWORK, description="Devices, 1..1024.")
    num_servers: int = Field(2, ge=1, le=MAX_NETWORK, description="Edge servers, 1..1024.")
    max_devices: int = Field(32, ge=1, le=MAX_NETWORK,
                             description="Observation padding: largest network a policy serves (at most 1024).")
    max_servers: int = Field(4, ge=1, le=MAX_NETWORK)
    codecs: list[str] = Field(["aecnn"], min_length=1,
                              description=f"Profile codecs offered as offloading points: {', '.join(OFFLOAD_CODECS)}.")

    # -- time and tasks -----------------------------------------------------------------
    slot_s: float = Field(0.1, gt=0, description="Slot length; every task must finish within its slot.")
    episode_slots: int = Field(100, ge=1, le=10**6, description="Slots per episode (positions are re-drawn per episode).")
    task_prob: float = Field(0.9, gt=0, le=1, description="Probability that a device has a task in a slot.")
    deadline_min_s: float = Field(0.02, gt=0, description="Per-task deadline ~ U[deadline_min_s, deadline_max_s].")
    deadline_max_s: float = Field(0.1, gt=0)
    penalty: float = Field(1.0, ge=0, description="psi: reward of a task that misses its deadline is -psi.")

    # -- geometry and channel (DROO's path-loss model) ------------------------------------
    area_m: float = Field(100.0, gt=0, description="Side of the square area devices are dropped in.")
    min_distance_m: float = Field(1.0, gt=0)
    antenna_gain: float = Field(4.11, gt=0, description="A_d in DROO's path loss.")
    carrier_hz: float = Field(915e6, gt=0)
    pathloss_exponent: float = Field(2.8, gt=0)
    tx_power_w: float = Field(0.1, gt=0)
    noise_w: float = Field(1e-10, gt=0, description="Receiver noise power over the ES band (DROO's N0).")
    bandwidth_hz: float = Field(0.4e6, gt=0, description="Uplink bandwidth of each ES, shared among its tasks.")
    fading_correlation: float = Field(0.5, ge=0, lt=1, description="Gauss-Markov rho of the Rayleigh fading.")
    channel_est_error_db: float = Field(2.0, ge=0, description="Std of the channel-estimate error in dB.")

    # -- compute ------------------------------------------------------------------------
    device_flops_min: float = Field(0.2e9, gt=0, description="Device FLOP/s ~ U[min, max] per episode.")
    device_flops_max: float = Field(1.0e9, gt=0)
    encode_time_scale: float = Field(
        0.0, ge=0, le=1e6, description="Device seconds per second of the profile's measured encode time, added to "
                                        "device_flops/f_n (0: FLOPs only, independent of the profiling host).")
    server_flops: float = Field(40e9, gt=0, description="Nominal ES FLOP/s, scaled by beta_m.")
    capacity_mean: float = Field(0.6, gt=0, le=1, description="Mean available fraction beta_m.")
    capacity_std: float = Field(0.2, ge=0, description="Stationary std of beta_m (AR(1), clipped).")
    capacity_correlation: float = Field(0.8, ge=0, lt=1, description="AR(1) coefficient of beta_m per slot.")
    capacity_min: float = Field(0.1, gt=0, le=1)
    capacity_lag_slots: int = Field(1, ge=0, le=1000, description="The policy sees beta from this many slots ago ...")
    capacity_est_noise: float = Field(0.05, ge=0, description="... plus Gaussian noise of this std.")

    @model_validator(mode="after")
    def _consistent(self) -> "ScenarioConfig":
        if self.num_devices > self.max_devices:
            raise ValueError(f"num_devices ({self.num_devices}) exceeds max_devices ({self.max_devices})")
        if self.num_servers > self.max_servers:
            raise ValueError(f"num_servers ({self.num_servers}) exceeds max_servers ({self.max_servers})")
        if self.deadline_min_s > self.deadline_max_s:
            raise ValueError(f"deadline_min_s ({self.deadline_min_s}) exceeds deadline_max_s ({self.deadline_max_s})")
        if self.deadline_max_s > self.slot_s:
            raise ValueError(f"deadline_max_s ({self.deadline_max_s}) exceeds slot_s ({self.slot_s})")
        if self.device_flops_min > self.device_flops_max:
            raise ValueError(f"device_flops_min ({self.device_flops_min}) exceeds device_flops_max")
        if not self.capacity_min <= self.capacity_mean:
            raise ValueError(f"capacity_mean ({self.capacity_mean}) is below capacity_min ({self.capacity_min})")
        if self.min_distance_m >= self.area_m:
            raise ValueError(f"min_distance_m ({self.min_distance_m}) must be below area_m ({self.area_m})")
        if "local" in self.codecs:
            raise ValueError("codecs: 'local' is always offered; list only offloading codecs")
        unknown = sorted(set(self.codecs) - set(OFFLOAD_CODECS))
        if unknown or len(set(self.codecs)) != len(self.codecs):
            raise ValueError(f"codecs: {self.codecs} must be distinct names from {', '.join(OFFLOAD_CODECS)}")
        return self
