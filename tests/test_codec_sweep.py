"""The codecs stage end to end on digits: Tune trials on a real local Ray, MLflow child runs,
Ray Data measurement, a valid profile with two seeds per point, resume after an interruption
in the middle of a trial, and the same points from an uninterrupted run of a subset (one of the
heavier tests: six tiny trials in all)."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import mlflow
import pytest
import torch
from safetensors.torch import load_file

import numpy as np
from data_pipelines.shards import SplitArray

from grl_aecnn import tracking
from grl_aecnn.backbone.split import split_resnet
from grl_aecnn.codecs.store import load_codec
from grl_aecnn.codecs.sweep import STATE_FILE, TUNE_NAME, run_sweep
from grl_aecnn.profile import load_profile


def interrupt_after_first_checkpoint(tune_dir: Path, name: str = "codec.safetensors") -> threading.Event:
    """Send SIGUSR1, Tune's own stop signal (as Ctrl+C), once one trial has saved a checkpoint
    holding `name` (the final weights, or `state.safetensors` of a step); setting the returned
    event cancels the watch."""
    cancel = threading.Event()

    def watch() -> None:
        while not cancel.wait(0.2):
            if list(tune_dir.glob(f"*/checkpoint_*/{name}")):
                os.kill(os.getpid(), signal.SIGUSR1)
                return

    threading.Thread(target=watch, daemon=True).start()
    return cancel


@pytest.fixture()
def sweep_config(tiny_config):
    from grl_aecnn.config import load_config

    overrides = [f"{k}={v}" for k, v in {
        "name": "tiny", "output_dir": tiny_config.output_dir, "data.dataset": "digits", "data.input_size": 32,
        "ray.num_cpus": 2, "codecs.train": "[aecnn, bottlenetpp]", "codecs.aecnn.kept_channels": "[2]",
        "codecs.aecnn.bits": "[2]", "codecs.bottlenetpp.channels": "[1]", "codecs.train_samples": 96,
        "codecs.val_samples": 32, "codecs.test_samples": 48, "codecs.stream_samples": 24, "codecs.batch_size": 48,
        "codecs.max_concurrent_trials": 1, "codecs.measure_workers": 1, "codecs.measure_batch_size": 24,
        "codecs.seeds": 2, "codecs.aecnn.selection": "refined", "codecs.aecnn.refine_shortlist": 8,
        "codecs.aecnn.decoder_width": 16, "codecs.bottlenetpp.width": 16, "codecs.tail_finetune": "first",
        # every step, so a trial stopped after its first step checkpoint is stopped mid-training
        "codecs.schedule": "{attention: 0.25, feature: 2.0, codec: 0.25, joint: 0.25}", "codecs.lr": 0.002,
    }.items()]
    return load_config("quick", overrides)


def _digits_backbone(cfg):
    from data_pipelines.datasets import load_splits
    from grl_aecnn.backbone.models import build_model

    torch.manual_seed(0)
    splits = load_splits(cfg.data)
    model = build_model("resnet18", splits.num_classes).eval()
    meta = {"arch": "resnet18", "num_classes": splits.num_classes, "dataset": "digits", "input_size": 32}
    return model, meta, splits


def _trial_runs(experiment: str) -> list[str]:
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="tags.`grl_aecnn.stage` = 'codecs.trial'")
    return sorted(runs["tags.mlflow.runName"])


def _without_times(path: str | Path) -> dict:
    """A profile as JSON, without the measured times (the one part that may differ run to run);
    points by id."""
    data = json.loads(Path(path).read_text())
    for point in data["points"]:
        point.pop("encode_ms", None)
        point.pop("decode_ms", None)
    data["points"] = {point["id"]: point for point in data["points"]}
    return data


@pytest.mark.slow
def test_sweep_writes_profile_and_resumes(ray_local, sweep_config):
    cfg = sweep_config
    model, meta, splits = _digits_backbone(cfg)
    with tracking.stage_run(cfg, "codecs") as parent:
        # stopped after the first step checkpoint: the resumed trial continues mid-training
        cancel = interrupt_after_first_checkpoint(cfg.run_dir / "codecs" / TUNE_NAME, STATE_FILE)
        try:
            with pytest.raises(RuntimeError, match="did not finish"):
                run_sweep(cfg, False, model, meta, splits)
        finally:
            cancel.set()
        first = _trial_runs(cfg.tracking.experiment)
        assert len(first) == 1, first
        summary = run_sweep(cfg, True, model, meta, splits)
    runs = _trial_runs(cfg.tracking.experiment)
    # the interrupted trial continued its own run: one child run per trial in all
    assert runs == ["codec/aecnn-k2-b2", "codec/aecnn-k2-b2-seed1", "codec/bottlenetpp-c1",
                    "codec/bottlenetpp-c1-seed1"]
    child = mlflow.search_runs(experiment_names=[cfg.tracking.experiment],
                               filter_string="tags.`grl_aecnn.stage` = 'codecs.trial'")
    assert set(child["tags.mlflow.parentRunId"]) == {parent.info.run_id}
    assert (child["status"] == "FINISHED").all()

    stage = cfg.run_dir / "codecs"
    profile = load_profile(summary["profile"])
    ids = {p.id for p in profile.points}
    assert ids == {"local", "raw-image", "float32", "aecnn-k2-b2", "bottlenetpp-c1", "bottlenetpp-c1-ec"}
    assert summary["points"] == 6
    assert (stage / "rate_accuracy.png").stat().st_size > 1000
    assert (stage / "codecs" / "aecnn-k2-b2.safetensors").exists()
    assert (stage / "codecs" / "seeds" / "aecnn-k2-b2-seed1.safetensors").exists()
    assert (stage / TUNE_NAME).is_dir()
    importance = json.loads((stage / "importance.json").read_text())
    ranking = importance["ranking"]
    # refined selection: the kept channels are greedy picks among the attention's top 8
    attention_top = np.argsort(-np.asarray(importance["attention"]), kind="stable")[:8]
    assert importance["selection"] == "refined" and set(ranking[:2]) <= set(attention_top.tolist())
    aecnn = next(p for p in profile.points if p.id == "aecnn-k2-b2")
    assert aecnn.kept_channels == 2 and aecnn.bits == 2
    assert 0 < aecnn.payload_bytes < 4 * 64 * 8 * 8 and aecnn.compression_ratio > 1
    # the headline figures are the mean over the two seeds, with their interval
    assert [s.seed for s in aecnn.seeds] == [0, 1]
    assert aecnn.accuracy == pytest.approx(np.mean([s.accuracy for s in aecnn.seeds]))
    assert aecnn.payload_bytes == pytest.approx(np.mean([s.payload_bytes for s in aecnn.seeds]))
    assert aecnn.accuracy_ci95 == pytest.approx(12.706 * abs(aecnn.seeds[0].accuracy - aecnn.seeds[1].accuracy) / 2,
                                                rel=1e-3)
    local = profile.local_point()
    assert local.server_flops == 0 and local.device_flops == profile.backbone.total_flops
    assert len(ranking) == profile.backbone.split_shape[0]

    # the pruned channels are the top of the importance ranking, and the profile's payload is
    # the mean length of real bitstreams of the streamed part of the test split tensors
    tail = split_resnet(model, "stem")[1]
    codec, spec = load_codec((stage / "codecs" / "aecnn-k2-b2.safetensors").read_bytes(), tail)
    assert list(codec.channels) == sorted(ranking[:2])
    test_z = SplitArray.open(stage / "split_tensors" / "test", in_memory_bytes=0)[:].numpy()  # read from shards
    streamed = load_file(str(stage / "split_tensors.safetensors"))["test_stream"].numpy()
    assert len(test_z) == 48 and streamed.sum() == 24
    assert aecnn.seeds[0].payload_bytes == pytest.approx(np.mean([len(codec.encode(x)) for x in test_z[streamed]]))
    assert aecnn.drop_ci95 is not None

    # reproducible: AECNN alone (other trials, other order), uninterrupted, both seeds at once, in
    # another run folder: the same points but for measured times; resuming that finished run
    # trains nothing again
    other = cfg.model_copy(update={"name": "tiny-again", "codecs": cfg.codecs.model_copy(
        update={"train": ["aecnn"], "max_concurrent_trials": 2})})
    with tracking.stage_run(other, "codecs"):
        again = run_sweep(other, False, model, meta, splits)
        run_sweep(other, True, model, meta, splits)
    assert other.run_dir != cfg.run_dir
    before, after = _without_times(summary["profile"]), _without_times(again["profile"])
    assert set(after["points"]) == {"local", "raw-image", "float32", "aecnn-k2-b2"}
    assert after == {**before, "points": {k: v for k, v in before["points"].items() if k in after["points"]}}
    assert _trial_runs(cfg.tracking.experiment) == sorted(runs + runs[:2])
