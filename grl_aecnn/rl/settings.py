"""Config section `policy.ppo`: RLlib PPO for the GRL policies (GRL-AECNN, -BottleNet++, -DeepJSCC).

Defaults are the quick preset's: a small GCN and ~1 minute of PPO per policy on 2 cores.
`tune_configs/paper.yaml` scales them up for a cluster.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from grl_aecnn.settings_base import Section


class PPOConfig(Section):
    # -- model --------------------------------------------------------------------------
    model: Literal["gcn", "mlp"] = Field("gcn", description="GCN actor-critic, or the MLP ablation.")
    hidden: int = Field(32, ge=4, le=4096, description="Embedding width (GCN) or layer width (MLP).")
    gcn_layers: int = Field(2, ge=1, le=64, description="Message-passing rounds over the device-server graph.")
    mlp_layers: int = Field(2, ge=1, le=64)
    init_from: str | None = Field(
        None, description="Exported policy folder to start from (fine-tuning; `train-policy --init-from` "
                          "also takes an MLflow run or model URI). Same model and widths needed.")

    # -- PPO ----------------------------------------------------------------------------
    iterations: int = Field(15, ge=1, le=10**6, description="Training iterations (one train batch each).")
    lr: float = Field(3e-3, gt=0, le=10)
    gamma: float = Field(
        0.0, ge=0, le=1,
        description="0: a slot's decisions never change later slots (the draws ignore actions), so each "
                    "slot is a contextual bandit and the reward minus the value is the advantage.",
    )
    gae_lambda: float = Field(0.9, ge=0, le=1)
    credit: Literal["difference", "device", "slot"] = Field(
        "difference",
        description="difference: each device's action is scored by its marginal contribution to the "
                    "slot reward (the reward had it run locally subtracted) minus its own value; device: "
                    "by its own reward minus its own value, blind to what its offload costs the others "
                    "(both per-device PPO ratio, advantage, value and entropy; need gamma 0); slot: RLlib's "
                    "PPO loss, one advantage of the summed slot reward for all N decisions.",
    )
    train_batch_size: int = Field(1000, ge=8, le=10**7, description="Env steps (slots) per iteration.")
    minibatch_size: int = Field(250, ge=8, le=10**7)
    num_epochs: int = Field(4, ge=1, le=1000)
    clip_param: float = Field(0.2, gt=0)
    entropy_coeff: float = Field(0.0, ge=0)
    vf_loss_coeff: float = Field(0.5, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)

    # -- scale-out and fault tolerance ----------------------------------------------------
    num_env_runners: int = Field(0, ge=0, le=4096, description="0: sample in the trial's own process (its `cpus_per_trial`).")
    num_envs_per_env_runner: int = Field(8, ge=1, le=4096, description="Simulator copies stepped together per runner.")
    max_concurrent_trials: int = Field(0, ge=0, le=4096, description="Policies trained at once; 0: as many as CPUs allow.")
    cpus_per_trial: float = Field(1.0, gt=0, le=1024, description="CPUs Ray reserves for each policy's trial process "
                                                               "(a fraction lets more policies share the cores).")
    checkpoint_frequency: int = Field(5, ge=1, le=10**6, description="Iterations between checkpoints (resume points).")
    restart_failed_env_runners: bool = True
    max_env_runner_restarts: int = Field(10, ge=0, le=10**4)
    max_failures: int = Field(2, ge=0, le=1000, description="Tune retries of a failed trial from its last checkpoint.")

    @model_validator(mode="after")
    def _device_credit_is_a_bandit(self) -> "PPOConfig":
        if self.credit != "slot" and self.gamma != 0:
            raise ValueError(f"credit='{self.credit}' needs gamma == 0 (got gamma={self.gamma}): a device's reward "
                             "is its own only within the slot; set credit='slot' to discount over slots")
        return self
