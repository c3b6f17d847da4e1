"""Vectorised MEC core: B independent copies x N devices x M servers per call, in NumPy
(the admission greedy is compiled, `grl_aecnn.sim.allocation`).

Two parts with one job each:
- `slot_outcome` is the deterministic system model: given a slot's state and the offloading
  decisions it returns latencies, on-time flags, accuracies and rewards. Policies call it on
  the *estimated* state to score candidates; the simulator calls it on the *realised* state.
- `VecMEC` is the random process: positions, compute rates, fading, capacity, arrivals,
  deadlines and estimates, drawn in a fixed order that never depends on the actions or on the
  offered operating points, so every policy and codec set sees the same episodes from a seed
  (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from grl_aecnn.sim import channel
from grl_aecnn.sim.allocation import allocate, min_shares
from grl_aecnn.sim.points import PointTable
from grl_aecnn.sim.settings import ScenarioConfig

TIME_TOL = 1e-9


@dataclass(frozen=True)
class SlotState:
    """What decides a slot's outcome, batch first (B, N[, M]); physical units."""

    gain: np.ndarray  # (B, N, M) channel power gain
    capacity: np.ndarray  # (B, M) available ES FLOP/s (F_m * beta_m)
    device_flops: np.ndarray  # (B, N) device FLOP/s
    deadline: np.ndarray  # (B, N) seconds
    task: np.ndarray  # (B, N) bool
    distance: np.ndarray  # (B, N, M) metres

    def tile(self, k: int) -> "SlotState":
        """k copies of a single slot (B = 1), to score k candidate decisions at once."""
        return SlotState(**{f.name: np.repeat(getattr(self, f.name), k, axis=0) for f in fields(self)})

    def repeat_batch(self, c: int) -> "SlotState":
        """The whole batch c times over (B c), to score c candidates on the same B draws."""
        return SlotState(**{f.name: np.concatenate([getattr(self, f.name)] * c) for f in fields(self)})


@dataclass(frozen=True)
class SlotOutcome:
    latency: np.ndarray  # (B, N) seconds, inf when dropped by admission
    on_time: np.ndarray  # (B, N) bool (False where no task)
    accuracy: np.ndarray  # (B, N) accuracy of the chosen point at the realised SNR
    reward: np.ndarray  # (B, N) accuracy if on time, -psi if late, 0 without a task
    offloaded: np.ndarray  # (B, N) bool


def encode_action(server: np.ndarray | int, point: np.ndarray | int, num_points: int) -> np.ndarray | int:
    """Action code of offloading to server m with point v: 1 + m V + v (0 is local)."""
    return 1 + server * num_points + point


def action_count(num_servers: int, num_points: int) -> int:
    """Actions per device: local plus every (server, point)."""
    return 1 + num_servers * num_points


def decode_actions(actions: np.ndarray, num_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Action a -> (offloaded, server m, point v), the inverse of `encode_action`."""
    off = actions > 0
    a0 = np.where(off, actions - 1, 0)
    return off, a0 // num_points, a0 % num_points


def offload_needs(sc: ScenarioConfig, pts: PointTable, gain: np.ndarray, capacity: np.ndarray,
                  device_flops: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, ...]:
    """What offloading with point v over a link of power `gain` to a server of `capacity`
    FLOP/s asks: (device seconds, x = transmit seconds with the whole band, y = server seconds
    with the whole server, accuracy at the link's SNR). Arguments broadcast together; this is
    the one definition both `slot_outcome` and `option_table` use."""
    snr = channel.snr(sc, gain)
    with np.errstate(divide="ignore"):
        digital_tx = pts.bits[v] / (sc.bandwidth_hz * channel.spectral_efficiency(snr))
        snr_db = 10.0 * np.log10(snr)
    x = np.where(pts.is_analog[v], pts.channel_uses[v] / sc.bandwidth_hz, digital_tx)
    y = pts.server_flops[v] / capacity
    t_dev = pts.device_flops[v] / device_flops + sc.encode_time_scale * pts.encode_s[v]
    return t_dev, x, y, pts.accuracy_at(v, snr_db)


def task_reward(sc: ScenarioConfig, task: np.ndarray, on_time: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    """Reward of a task: its accuracy if on time, -psi if late, 0 without a task."""
    return np.where(task, np.where(on_time, accuracy, -sc.penalty), 0.0)


def local_outcome(sc: ScenarioConfig, pts: PointTable, state: SlotState) -> tuple[np.ndarray, np.ndarray]:
    """(latency, reward) of running the whole CNN on the device, (B, N)."""
    latency = pts.local_flops / state.device_flops
    on_time = latency <= state.deadline * (1.0 + TIME_TOL)
    return latency, task_reward(sc, state.task, on_time, np.full(latency.shape, pts.local_accuracy))


def slot_outcome(sc: ScenarioConfig, pts: PointTable, state: SlotState, actions: np.ndarray) -> SlotOutcome:
    """The system model of one slot for a batch of decisions `actions` (B, N) int."""
    off, m, v = decode_actions(actions, pts.num)
    off &= state.task
    rows = np.arange(actions.shape[0])[:, None]
    cols = np.arange(actions.shape[1])[None, :]
    t_dev, x, y, acc_off = offload_needs(sc, pts, state.gain[rows, cols, m], state.capacity[rows, m],
                                         state.device_flops, v)
    admitted, b, c = allocate(np.where(off, m, -1), x, y, state.deadline - t_dev, state.capacity.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        t_off = t_dev + np.where(x > 0, x / b, 0.0) + np.where(y > 0, y / c, 0.0)
    t_local, _ = local_outcome(sc, pts, state)
    latency = np.where(off, np.where(admitted, t_off, np.inf), t_local)
    accuracy = np.where(off, acc_off, pts.local_accuracy)
    on_time = state.task & (latency <= state.deadline * (1.0 + TIME_TOL))
    return SlotOutcome(latency=latency, on_time=on_time, accuracy=accuracy,
                       reward=task_reward(sc, state.task, on_time, accuracy), offloaded=off)


def difference_rewards(sc: ScenarioConfig, pts: PointTable, state: SlotState, actions: np.ndarray,
                       reward: np.ndarray) -> np.ndarray:
    """Each device's marginal contribution to the slot reward, (B, N): the summed reward of
    `actions` minus the summed reward had that device alone run locally instead.

    Unlike the device's own reward it charges the device for what its offload costs the others
    on the shared band and server; the subtracted term does not depend on the device's own
    choice, so a policy gradient with it stays unbiased for the summed reward. 0 for a device
    that runs locally or has no task."""
    batch, n = actions.shape
    counterfactual = np.repeat(actions[None], n, axis=0)  # (N, B, N): row k has device k local
    counterfactual[np.arange(n), :, np.arange(n)] = 0
    alone = slot_outcome(sc, pts, state.repeat_batch(n), counterfactual.reshape(n * batch, n))
    without = alone.reward.sum(axis=1).reshape(n, batch).T
    return reward.sum(axis=1, keepdims=True) - without


class VecMEC:
    """B independent MEC networks advancing slot by slot from one seeded generator.

    A core with batch B and seed s is reproducible; copy b of it is not the same episode as a
    single core with seed s (the draws are batched).
    """

    def __init__(self, sc: ScenarioConfig, batch: int = 1, seed: int | None = None) -> None:
        self.sc = sc
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        self.sites = channel.server_positions(sc)
        self.slot = 0

    def seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Start an episode: new positions, compute rates, fading and capacity state."""
        sc, rng, shape = self.sc, self.rng, (self.batch, self.sc.num_devices)
        pos = rng.uniform(0.0, sc.area_m, size=shape + (2,))
        self.distance = np.linalg.norm(pos[:, :, None, :] - self.sites[None, None], axis=-1)
        self.mean_gain = channel.path_gain(sc, self.distance)
        self.device_flops = rng.uniform(sc.device_flops_min, sc.device_flops_max, size=shape)
        self.fading = channel.complex_normal(rng, self.distance.shape)
        beta0 = sc.capacity_mean + sc.capacity_std * rng.standard_normal((self.batch, sc.num_servers))
        self.beta_hist = [np.clip(beta0, sc.capacity_min, 1.0)] * (sc.capacity_lag_slots + 1)
        self.slot = 0
        self._draw_slot()

    def advance(self) -> None:
        """Move to the next slot: correlated fading and capacity, new tasks and estimates."""
        sc, rng = self.sc, self.rng
        self.fading = channel.fading_step(self.fading, channel.complex_normal(rng, self.fading.shape),
                                          sc.fading_correlation)
        rho = sc.capacity_correlation
        beta = (sc.capacity_mean + rho * (self.beta_hist[-1] - sc.capacity_mean)
                + sc.capacity_std * np.sqrt(1.0 - rho * rho) * rng.standard_normal(self.beta_hist[-1].shape))
        self.beta_hist = self.beta_hist[1:] + [np.clip(beta, sc.capacity_min, 1.0)]
        self.slot += 1
        self._draw_slot()

    def _draw_slot(self) -> None:
        sc, rng, shape = self.sc, self.rng, (self.batch, self.sc.num_devices)
        self.task = rng.random(shape) < sc.task_prob
        self.deadline = rng.uniform(sc.deadline_min_s, sc.deadline_max_s, size=shape)
        gain_noise = rng.standard_normal(self.distance.shape)
        beta_noise = rng.standard_normal(self.beta_hist[0].shape)
        self.gain = self.mean_gain * np.abs(self.fading) ** 2
        self.gain_est = channel.estimate_gain(self.gain, sc.channel_est_error_db, gain_noise)
        self.beta_est = np.clip(self.beta_hist[0] + sc.capacity_est_noise * beta_noise, 0.01, 1.0)

    def realised(self) -> SlotState:
        return SlotState(gain=self.gain, capacity=self.sc.server_flops * self.beta_hist[-1],
                         device_flops=self.device_flops, deadline=self.deadline, task=self.task,
                         distance=self.distance)

    def estimated(self) -> SlotState:
        """What a policy may know: estimated gains and lagged, noisy capacity."""
        return SlotState(gain=self.gain_est, capacity=self.sc.server_flops * self.beta_est,
                         device_flops=self.device_flops, deadline=self.deadline, task=self.task,
                         distance=self.distance)

    def step(self, pts: PointTable, actions: np.ndarray) -> SlotOutcome:
        """Outcome of the current slot under `actions` (B, N), then advance to the next slot."""
        out = slot_outcome(self.sc, pts, self.realised(), actions)
        self.advance()
        return out


def error_free(sc: ScenarioConfig) -> bool:
    """Whether the estimates a policy sees are the realised slot: no channel-estimate error and
    a capacity seen without noise and without a lag that matters."""
    lag_matters = sc.capacity_lag_slots > 0 and sc.capacity_std > 0
    return sc.channel_est_error_db == 0 and sc.capacity_est_noise == 0 and not lag_matters


def capacity_drift(sc: ScenarioConfig) -> float:
    """Std of the AR(1) capacity's change over the lag: sigma sqrt(1 - rho^(2L))."""
    rho = sc.capacity_correlation ** sc.capacity_lag_slots
    return float(sc.capacity_std * np.sqrt(1.0 - rho * rho))


def sample_realisations(sc: ScenarioConfig, est: SlotState, k: int, rng: np.random.Generator) -> SlotState:
    """K draws of the realised slot given the policy's view `est` (B = 1), under the estimate-error
    model `VecMEC` draws from: a log-normal channel error of `channel_est_error_db` (symmetric, so
    the realised gain is the estimate times the same error), and a capacity seen
    `capacity_lag_slots` slots late through `capacity_est_noise`, carried forward by the AR(1)
    capacity process. Tasks, deadlines and device rates are known exactly."""
    base = est.tile(k)
    gain = channel.estimate_gain(base.gain, sc.channel_est_error_db, rng.standard_normal(base.gain.shape))
    seen = base.capacity / sc.server_flops + sc.capacity_est_noise * rng.standard_normal(base.capacity.shape)
    rho = sc.capacity_correlation ** sc.capacity_lag_slots
    beta = (sc.capacity_mean + rho * (seen - sc.capacity_mean)
            + capacity_drift(sc) * rng.standard_normal(base.capacity.shape))
    return replace(base, gain=gain, capacity=sc.server_flops * np.clip(beta, sc.capacity_min, 1.0))


@dataclass(frozen=True)
class OptionTable:
    """Every (device, server, point) option of a single slot (B = 1) under one state."""

    b: np.ndarray  # (N, M, V) minimum bandwidth share meeting the deadline (inf: impossible)
    c: np.ndarray  # (N, M, V) minimum compute share
    accuracy: np.ndarray  # (N, M, V) accuracy at that server's SNR
    local_value: np.ndarray  # (N,) reward of running locally (accuracy or -psi), 0 without a task
    task: np.ndarray  # (N,) bool


def option_grid(sc: ScenarioConfig, pts: PointTable, state: SlotState) -> tuple[np.ndarray, ...]:
    """Every (device, server, point) option of a batch of slots, (B, N, M, V) each: the minimum
    bandwidth and compute shares meeting the deadline when alone (inf: impossible) and the
    accuracy at that server's SNR."""
    v = np.arange(pts.num)
    t_dev, x, y, accuracy = offload_needs(sc, pts, state.gain[..., None], state.capacity[:, None, :, None],
                                          state.device_flops[:, :, None, None], v)
    x, y, accuracy = np.broadcast_arrays(x, y, accuracy)
    b, c = min_shares(x, y, np.broadcast_to(state.deadline[:, :, None, None] - t_dev, x.shape))
    return b, c, accuracy


def option_table(sc: ScenarioConfig, pts: PointTable, state: SlotState) -> OptionTable:
    """The per-option resource needs the allocation works with, for exact solvers (B = 1)."""
    b, c, accuracy = option_grid(sc, pts, state)
    _, local_value = local_outcome(sc, pts, state)
    return OptionTable(b=b[0], c=c[0], accuracy=accuracy[0], local_value=local_value[0], task=state.task[0])
