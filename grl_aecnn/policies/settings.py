"""Config section `policy`: PPO (GRL policies, see grl_aecnn/rl/settings.py) and DROO."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from grl_aecnn.rl.settings import PPOConfig
from grl_aecnn.settings_base import Section
from grl_aecnn.sim.scenarios import ScenarioDistribution


class DROOConfig(Section):
    """DROO-AECNN (Huang et al. 2020; defaults from revenol/DROO except where noted)."""

    slots: int = Field(2000, ge=1, le=10**8, description="Online training slots.")
    hidden: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(
        [256, 256], min_length=1, max_length=16, description="MLP widths, each 1..65536 (DROO: 120, 80 for N=10).")
    lr: float = Field(1e-3, gt=0, le=10, description="Adam learning rate (DROO used 1e-2 with binary outputs).")
    memory_size: int = Field(1024, ge=1, le=10**7)
    batch_size: int = Field(128, ge=1, le=10**6)
    training_interval: int = Field(10, ge=1, le=10**6)
    k_window: int = Field(32, ge=1, le=10**6, description="Adaptive K: window (Delta) over recent best candidate indices.")
    sampled_candidates: int = Field(8, ge=0, le=10**4, description="Extra training candidates sampled from the softmax.")
    k_max: int | None = Field(None, ge=1, le=10**4, description="Most candidates per slot (default: devices + 1).")


class CriticConfig(Section):
    """The GRL policies' model-based critic (`grl_aecnn.policies.candidates`): at every slot the
    actor's logits give candidate decisions and the one with the highest expected slot reward
    under the known estimate-error model is played. ``order_preserving: 1, to_local: 0, sampled: 0, polish: 0``
    plays the actor's argmax alone."""

    order_preserving: int = Field(8, ge=1, le=4096, description="Order-preserving candidates (DROO's quantisation "
                                                               "of the actor's logits; 1: the argmax alone).")
    to_local: int = Field(8, ge=0, le=4096, description="Cut-back candidates: the argmax with its 1, 2, ... least "
                                                      "convincing offloads run locally.")
    sampled: int = Field(8, ge=0, le=4096, description="Candidates drawn from the actor's per-device softmax.")
    polish: int = Field(2, ge=0, le=4096, description="Rounds of the best single-device change (to local, or to one "
                                                   "of its `polish_choices` best offloads) while the expected reward rises.")
    polish_choices: int = Field(2, ge=1, le=4096, description="Offloads per device a polish round tries.")
    polish_devices: int = Field(8, ge=1, le=4096, description="Devices a polish round may move to another offload: "
                                                            "those whose two best actions the actor rates closest "
                                                            "(any device may move to local).")
    samples: int = Field(16, ge=1, le=4096, description="Realisations of channel and capacity each candidate is "
                                                      "scored on (the same for all; 1 when the model is error-free). "
                                                      "16: with 8 the sampled mean misranks close candidates under "
                                                      "volatile capacity (bench/bench_critic.py).")

    @property
    def active(self) -> bool:
        return self.order_preserving > 1 or self.to_local > 0 or self.sampled > 0 or self.polish > 0


ACTOR_ONLY = CriticConfig(order_preserving=1, to_local=0, sampled=0, polish=0, samples=1)


class PolicyConfig(Section):
    ppo: PPOConfig = PPOConfig()
    droo: DROOConfig = DROOConfig()
    critic: CriticConfig = Field(default_factory=CriticConfig,
                                 description="How the GRL policies pick a slot's decision from the actor's logits.")
    train_scenarios: ScenarioDistribution = Field(
        default_factory=ScenarioDistribution,
        description="Scenarios the GRL policies train over (each simulator copy draws one per episode); "
                    "empty: the configured scenario alone.")
