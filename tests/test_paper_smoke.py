"""The `paper` preset's shapes end to end on CPU: ResNet-50 at 224 px, stem split, a miniature of
its codec ladder, its GCN sizes and network, on a generated ImageFolder, every stage for one step
or iteration, through the normal CLI. Catches a paper preset that no longer runs at all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CLASSES = 3
PER_CLASS = 12

# Only sizes shrink: arch, input size, split, codec kinds, GCN widths and the network stay the paper's.
PAPER_SMOKE = [
    "data.dataset=imagefolder", "data.test_fraction=0.25", "data.val_fraction=0.15",
    "backbone.epochs=1", "backbone.batch_size=8", "backbone.num_workers=1", "backbone.use_gpu=false",
    "backbone.cpus_per_worker=1", "backbone.max_failures=0",
    "codecs.aecnn.kept_channels=[1]", "codecs.aecnn.bits=[2]",
    "codecs.bottlenetpp.channels=[1]", "codecs.bottlenetpp.entropy_coded=[true]",
    "codecs.deepjscc.channels=[1]", "codecs.deepjscc.eval_snr_db=[0.0, 20.0]",
    "codecs.train_samples=16", "codecs.val_samples=16", "codecs.test_samples=16", "codecs.batch_size=8",
    "codecs.schedule={attention: 0.5, feature: 0.5, codec: 0.5, joint: 0.5}",
    "codecs.max_concurrent_trials=2", "codecs.cpus_per_trial=1", "codecs.gpus_per_trial=0",
    "codecs.measure_workers=1", "codecs.measure_batch_size=16",
    "policy.ppo.iterations=1", "policy.ppo.train_batch_size=16", "policy.ppo.minibatch_size=8",
    "policy.ppo.num_epochs=1", "policy.ppo.num_env_runners=0", "policy.ppo.num_envs_per_env_runner=1",
    "policy.ppo.checkpoint_frequency=1",
    "policy.droo.slots=4", "policy.droo.batch_size=4",
    "evaluation.episodes=2", "evaluation.slots_per_episode=1", "evaluation.sweep=scenarios_tiny",
    "evaluation.fixed_points=false", "evaluation.robust_samples=2",
    "ray.num_cpus=2",
]


def make_image_folder(root: Path, classes: int = CLASSES, per_class: int = PER_CLASS) -> Path:
    """Small PNGs whose colour and stripe direction depend on the class (so a label is learnable)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)
            img[..., c % 3] += 120
            img[::4 if c % 2 else 1, ::1 if c % 2 else 4] = 255
            Image.fromarray(img).save(root / f"class{c}" / f"{i:03d}.png")
    return root


@pytest.mark.slow
def test_paper_preset_shapes_run_every_stage(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images")
    out = tmp_path / "outputs"
    args = ["--config", "paper", "--set", f"output_dir={out}", "--set", f"data.data_dir={data}",
            "--set", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    for override in PAPER_SMOKE:
        args += ["--set", override]
    done = subprocess.run([sys.executable, "-m", "grl_aecnn.cli", "run", *args], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = next(out.glob("paper*"))
    profile = json.loads((run_dir / "codecs" / "profile.json").read_text())
    assert profile["backbone"]["arch"] == "resnet50"
    assert profile["backbone"]["split_shape"] == [64, 56, 56]
    assert {p["codec"] for p in profile["points"]} >= {"aecnn", "bottlenetpp", "deepjscc"}
