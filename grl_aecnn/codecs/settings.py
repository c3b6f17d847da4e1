"""Config section `codecs`: which codecs to train, at which operating points, and how."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from grl_aecnn.settings_base import Section

MAX_CODE_CHANNELS = 1024


def _no_repeats(values: list) -> list:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"repeated entries {', '.join(repeated)}: list each at most once")
    return values


# every family's split points; which ones an arch has: grl_aecnn/backbone/split_points.py
SplitName = Literal["stem", "layer1", "layer2", "layer3", "layer4", "stage1", "stage2", "stage3"]
ScaleMode = Literal["calibrated", "per-sample"]


class AECNNPoints(Section):
    kept_channels: list[Annotated[int, Field(ge=1)]] = Field(
        [1, 2, 4, 8, 16], min_length=1, description="Channels kept, each 1 .. the split's channel count, no repeats.")
    bits: list[Annotated[int, Field(ge=1, le=16)]] = Field([2, 4, 8], min_length=1,
                                                          description="Quantiser bits, each 1..16, no repeats.")
    attention_reduction: int = Field(4, ge=1, le=4096, description="Hidden size of the attention MLP is C / this.")
    attention_sparsity: float = Field(0.01, ge=0, description="L1 weight on the attention, sharpening the ranking.")
    selection: Literal["attention", "refined"] = Field(
        "attention", description="Kept channels: the attention's top k, or greedy picks among its top "
                                 "refine_shortlist by each set's validation loss (grl_aecnn/codecs/refine.py).")
    refine_shortlist: int = Field(16, ge=1, le=4096, description="Channels the refined selection picks among.")
    decoder_width: int = Field(64, ge=1, le=4096, description="Channels inside the feature-recovery decoder.")
    scales: ScaleMode = Field(
        "calibrated", description="Quantiser range: per-channel clip fixed from training data (nothing in the "
                                  "header), or each sample's channel maximum (a header byte per channel).")
    clip_percentile: float = Field(99.5, gt=0, le=100, description="Calibrated scale = this percentile of the channel.")

    _unique = field_validator("kept_channels", "bits")(lambda v: _no_repeats(v))


class BottleNetPoints(Section):
    channels: list[Annotated[int, Field(ge=1, le=MAX_CODE_CHANNELS)]] = Field(
        [1, 2, 4, 8], min_length=1, description="Encoder output channels, each 1..1024, no repeats.")
    entropy_coded: list[bool] = Field([False, True], min_length=1,
                                      description="Profile variants of each trained model: as published, entropy-coded.")
    stride: int = Field(2, ge=1, le=4, description="Spatial downsampling of the encoder.")
    width: int = Field(64, ge=1, le=4096)
    channel: Literal["awgn", "erasure"] = "awgn"
    max_noise: float = Field(0.1, ge=0, description="Upper end of the training AWGN std / erasure probability.")

    _unique = field_validator("channels", "entropy_coded")(lambda v: _no_repeats(v))


class DeepJSCCPoints(Section):
    channels: list[Annotated[int, Field(ge=1, le=MAX_CODE_CHANNELS)]] = Field(
        [1, 2, 4, 8], min_length=1, description="Complex channel symbols per position, each 1..1024, no repeats.")
    stride: int = Field(2, ge=1, le=4)
    width: int = Field(64, ge=1, le=4096)
    train_snr_db: float = Field(10.0, ge=-50, le=100, description="dB, -50..100.")
    eval_snr_db: list[Annotated[float, Field(ge=-50, le=100)]] = Field(
        [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0], min_length=2, description="dB, each -50..100, no repeats.")

    _unique = field_validator("channels", "eval_snr_db")(lambda v: _no_repeats(v))


class Schedule(Section):
    """Epochs of each training step over the training split tensors; a fraction trains on a random
    subset, 0 skips the step. The feature step never runs the tail (only the codec's few convs),
    so its epochs are cheap next to those of the steps that back-propagate through the tail."""

    attention: float = Field(1.0, gt=0, description="Channel attention in front of the frozen tail (once per split).")
    feature: float = Field(0.0, ge=0, description="Codec alone on feature MSE (no tail).")
    codec: float = Field(1.0, ge=0, description="Codec with the tail frozen, on task loss + feature MSE.")
    joint: float = Field(1.0, ge=0, description="Codec and the `tail_finetune` tail modules on the task loss.")


class CodecsConfig(Section):
    split: SplitName = "stem"
    train: list[Literal["aecnn", "bottlenetpp", "deepjscc"]] = Field(["aecnn", "bottlenetpp", "deepjscc"])
    aecnn: AECNNPoints = AECNNPoints()
    bottlenetpp: BottleNetPoints = BottleNetPoints()
    deepjscc: DeepJSCCPoints = DeepJSCCPoints()
    entropy_grid: int = Field(8, ge=1, le=64, description="Entropy model context: symbol frequencies per channel in each "
                                                   "cell of a grid x grid split of the plane (1: per channel).")
    entropy_context: bool = Field(True, description="Code AECNN symbols (up to 4 bits) under the context of their "
                                                    "neighbours in the previous channel, above and left.")
    train_samples: int | None = Field(None, ge=16, le=10**9,
                                      description="Training images for codec training (None: all).")
    val_samples: int = Field(500, ge=16, le=10**9, description="Validation images for each trial's reported accuracy.")
    test_samples: int | None = Field(None, ge=16, le=10**9,
                                     description="Test images the profile's accuracies are measured on (None: all).")
    stream_samples: int | None = Field(None, ge=16, le=10**9,
                                       description="Of those, the images coded through real bitstreams: payload "
                                                   "bytes and coder times are their mean (None: all). The rest "
                                                   "take the same quantised symbols without the lossless "
                                                   "entropy coder, for accuracy only.")
    schedule: Schedule = Schedule()
    seeds: int = Field(1, ge=1, le=100, description="Trainings of every point, each from its own seed; the "
                                                     "profile's accuracy and bytes are their mean, with a 95 % "
                                                     "interval and the per-seed values.")
    batch_size: int = Field(128, ge=1, le=65_536)
    lr: float = Field(1e-3, gt=0, le=10)
    distillation: float = Field(0.5, ge=0, le=1, description="Weight of distilling the clean backbone's logits "
                                                             "in the task loss (the rest is cross-entropy).")
    distill_temperature: float = Field(2.0, gt=0)
    feature_loss_weight: float = Field(1.0, ge=0, description="Weight of the feature MSE next to the task loss.")
    tail_finetune: Literal["none", "first", "all"] = Field(
        "all", description="Backbone tail modules trained in the joint step: none, the first stage, or all.")
    max_concurrent_trials: int = Field(2, ge=1, le=4096)
    cpus_per_trial: float = Field(1.0, gt=0, le=1024)
    max_failures: int = Field(2, ge=0, le=1000,
                              description="Tune retries of a failed trial (e.g. its node died) from its last checkpoint.")
    gpus_per_trial: float = Field(0.0, ge=0, le=64)
    measure_workers: int = Field(2, ge=1, le=4096, description="Ray Data actors measuring codecs on the test split.")
    measure_batch_size: int = Field(128, ge=1, le=65_536)
    init_from: str | None = Field(
        None, description="A trained codec's weights file to start from (fine-tuning): points of the same "
                          "codec and tensor shapes start from it (`train-codecs --init-from` also takes an "
                          "MLflow run or model URI).")

    _unique = field_validator("train")(lambda v: _no_repeats(v))
