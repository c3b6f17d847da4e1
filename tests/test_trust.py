"""Nothing read from a run folder runs code: signed checkpoints, and a planted pickle whose
unpickling would create a marker file, for the stages that resume (backbone, codecs; the
policies stage in test_resume.py)."""

from __future__ import annotations

import json
import os
import pickle
import stat
from pathlib import Path

import pytest

from grl_aecnn import trust


class Payload:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def plant(folder: Path, names: list[str], marker: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(pickle.dumps(Payload(marker)))


def test_payload_runs_when_unpickled(tmp_path: Path) -> None:
    """The probe works: unpickling it creates the marker."""
    plant(tmp_path, ["probe.pkl"], tmp_path / "marker")
    pickle.loads((tmp_path / "probe.pkl").read_bytes())
    assert (tmp_path / "marker").exists()


@pytest.fixture()
def key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv(trust.KEY_ENV, str(tmp_path / "config" / "key"))
    return trust.load_key()


def test_key_is_created_private_and_reused(tmp_path: Path, key: bytes) -> None:
    path = tmp_path / "config" / "key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert trust.load_key() == key and len(key) == 64
    path.chmod(0o666)
    with pytest.raises(trust.Untrusted, match="writable by other users"):
        trust.load_key()


def _checkpoint(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "state.pkl").write_bytes(b"weights")
    (folder / "sub" / "meta.json").write_text("{}")
    return folder


def test_signed_folder_copies_only_its_signed_files(tmp_path: Path, key: bytes) -> None:
    folder = _checkpoint(tmp_path / "ckpt")
    trust.sign(folder, key)
    plant(folder, ["planted.pkl"], tmp_path / "marker")  # added after signing: never copied
    with trust.verified_copy(folder, key) as safe:
        assert sorted(p.relative_to(safe).as_posix() for p in safe.rglob("*") if p.is_file()) == [
            "state.pkl", "sub/meta.json"]
        assert (safe / "state.pkl").read_bytes() == b"weights"
    assert not safe.exists()


@pytest.mark.parametrize("tamper", ["change", "unsigned", "other key", "forged manifest", "escape"])
def test_tampered_folder_is_refused(tmp_path: Path, key: bytes, tamper: str) -> None:
    folder = _checkpoint(tmp_path / "ckpt")
    trust.sign(folder, key)
    signature = folder / trust.SIGNATURE
    record = json.loads(signature.read_text())
    if tamper == "change":
        (folder / "state.pkl").write_bytes(pickle.dumps(Payload(tmp_path / "marker")))
    elif tamper == "unsigned":
        signature.unlink()
    elif tamper == "other key":
        trust.sign(folder, b"x" * 64)
    elif tamper == "forged manifest":  # the attacker recomputes the file hashes but has no key
        record["files"]["state.pkl"] = "0" * 64
        signature.write_text(json.dumps(record))
    else:
        outside = tmp_path / "outside.pkl"
        outside.write_bytes(b"x")
        record["files"] = {"../outside.pkl": record["files"]["state.pkl"]}
        signature.write_text(json.dumps(record))
    with pytest.raises(trust.Untrusted, match=str(folder)):
        trust.verify(folder, key)


def test_copy_signed_replaces_atomically(tmp_path: Path, key: bytes) -> None:
    folder = _checkpoint(tmp_path / "ckpt")
    trust.sign(folder, key)
    dest = tmp_path / "kept" / "000002"
    dest.parent.mkdir()
    trust.copy_signed(folder, dest, key)
    trust.verify(dest, key)
    assert not dest.with_name("000002.partial").exists()
    assert (dest / "sub" / "meta.json").exists()


# -- stages ------------------------------------------------------------------------------------

def test_codecs_stage_never_restores_a_planted_tuner(ray_local, tiny_config, tmp_path: Path) -> None:
    """`Tuner.restore` would unpickle tuner.pkl; the sweep trains from its own checkpoints instead."""
    from grl_aecnn import tracking
    from grl_aecnn.codecs.sweep import KEPT, TUNE_NAME, run_sweep
    from grl_aecnn.config import load_config
    from tests.test_codec_sweep import _digits_backbone

    cfg = load_config("quick", [
        "name=tiny", f"output_dir={tiny_config.output_dir}", "data.dataset=digits", "data.input_size=32",
        "codecs.train=[aecnn]", "codecs.aecnn.kept_channels=[2]", "codecs.aecnn.bits=[2]",
        "codecs.train_samples=64", "codecs.val_samples=32", "codecs.test_samples=32", "codecs.batch_size=32",
        "codecs.max_concurrent_trials=1", "codecs.measure_workers=1", "codecs.measure_batch_size=16",
        "codecs.aecnn.decoder_width=8"])
    marker = tmp_path / "marker"
    stage = cfg.stage_dir("codecs")
    plant(stage / TUNE_NAME, ["tuner.pkl", "trainable.pkl"], marker)
    (stage / TUNE_NAME / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    forged = stage / KEPT / "aecnn-k2-b2"  # a finished point made of a pickle, not safetensors
    plant(forged, ["codec.safetensors"], marker)
    (forged / "progress.json").write_text(json.dumps({"point": "aecnn-k2-b2", "steps_done": 4, "run_id": None,
                                                      "val_accuracy": 1.0}))
    model, meta, splits = _digits_backbone(cfg)
    with tracking.stage_run(cfg, "codecs"):
        summary = run_sweep(cfg, True, model, meta, splits)
    assert not marker.exists()
    assert summary["points"] == 4  # local, raw-image, float32 and the point, trained: the forgery was ignored


def test_backbone_resume_loads_no_pickle(ray_local, tiny_config, tmp_path: Path) -> None:
    """Ray Train hands back the newest checkpoint; the stage reads only its safetensors and JSON."""
    from grl_aecnn import tracking
    from grl_aecnn.backbone.train import RUN_NAME, train_backbone

    cfg = tiny_config.model_copy(deep=True)
    cfg.data.input_size, cfg.data.train_subset, cfg.data.val_subset, cfg.data.test_subset = 16, 100, 30, 30
    cfg.backbone.batch_size = 50
    with tracking.stage_run(cfg, "backbone"):
        train_backbone(cfg, resume=False)
    run_folder = cfg.run_dir / "backbone" / "ray_train" / RUN_NAME
    marker = tmp_path / "marker"
    for checkpoint in (c for c in run_folder.glob("checkpoint_*") if c.is_dir()):
        plant(checkpoint, ["optimizer.pt", "model.pt", "algorithm_state.pkl"], marker)
    plant(run_folder, ["trainer.pkl", "tuner.pkl"], marker)

    cfg.backbone.epochs = 2
    with tracking.stage_run(cfg, "backbone"):
        resumed = train_backbone(cfg, resume=True)
    assert resumed["resumed_from_epoch"] == 1 and resumed["epochs"] == 2
    assert not marker.exists()
    assert os.listdir(run_folder)  # the resume really used this folder
