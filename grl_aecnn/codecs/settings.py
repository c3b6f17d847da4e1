"""Config section `codecs`: which codecs to train, at which operating points, and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from grl_aecnn.settings_base import Section

SplitName = Literal["stem", "layer1", "layer2", "layer3", "layer4"]


class AECNNPoints(Section):
    kept_channels: list[int] = Field([1, 2, 4, 8, 16], min_length=1)
    bits: list[int] = Field([2, 4, 8], min_length=1)


class BottleNetPoints(Section):
    channels: list[int] = Field([1, 2, 4, 8], min_length=1, description="Encoder output channels.")
    entropy_coded: list[bool] = Field([False, True], min_length=1)


class DeepJSCCPoints(Section):
    channels: list[int] = Field([1, 2, 4, 8], min_length=1, description="Real channel symbols per position / 2.")
    train_snr_db: float = 10.0
    eval_snr_db: list[float] = Field([-5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0], min_length=2)


class CodecsConfig(Section):
    split: SplitName = "stem"
    train: list[Literal["aecnn", "bottlenetpp", "deepjscc"]] = ["aecnn", "bottlenetpp", "deepjscc"]
    aecnn: AECNNPoints = AECNNPoints()
    bottlenetpp: BottleNetPoints = BottleNetPoints()
    deepjscc: DeepJSCCPoints = DeepJSCCPoints()
    epochs_per_step: int = Field(1, ge=1, description="Epochs for each step of step-by-step training.")
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    max_concurrent_trials: int = Field(2, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)
