"""Backbone: models, the split module, checkpoint files, and a real Ray Train run that resumes."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from grl_aecnn import tracking
from grl_aecnn.backbone.io import BackboneNotFound, load_backbone_dir, load_trained_backbone, save_backbone
from grl_aecnn.backbone.models import build_model, classifier
from grl_aecnn.backbone.split import count_flops, split_info, split_model
from grl_aecnn.backbone.split_points import SPLIT_CHANNELS, split_points
from grl_aecnn.backbone.train import RUN_NAME, _prepare_storage, lr_at, train_backbone

META = {"arch": "resnet18", "num_classes": 4, "class_names": list("abcd"), "input_size": 32, "dataset": "digits"}


@pytest.fixture(scope="module")
def resnet18() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("resnet18", 10).eval()


def test_build_model_classes_and_unknown_arch():
    assert build_model("resnet50", 7).fc.out_features == 7
    for arch in ("mobilenet_v2", "efficientnet_b0"):
        model = build_model(arch, 7)
        holder, name = classifier(model)  # the layer `pretrained=True` replaces
        assert getattr(holder, name) is model.classifier[-1] and model.classifier[-1].out_features == 7
    with pytest.raises(ValueError, match="resnet18"):
        build_model("vgg11", 10)


@pytest.mark.parametrize(("arch", "split"), [(a, s) for a in ("resnet18", "mobilenet_v2", "efficientnet_b0")
                                             for s in split_points(a)])
@pytest.mark.parametrize("size", [32, 28])
def test_head_then_tail_equals_model(arch: str, split: str, size: int):
    """Every family, every split point, also at Fashion-MNIST's native 28 px."""
    torch.manual_seed(0)
    model = build_model(arch, 10).eval()
    x = torch.randn(2, 3, size, size)
    head, tail = split_model(model, split)
    with torch.no_grad():
        z = head(x)
        assert torch.allclose(tail(z), model(x), atol=1e-5)
    info = split_info(model, split, size)
    assert tuple(z.shape[1:]) == info.shape and info.shape[0] == SPLIT_CHANNELS[arch][split]
    assert info.float32_bytes == 4 * z[0].numel()
    assert info.total_flops == pytest.approx(count_flops(model, x), rel=1e-6)


def test_head_and_tail_share_the_models_modules():
    """Training the tail trains the model: the codec stage fine-tunes the tail in place."""
    model = build_model("mobilenet_v2", 10)
    _, tail = split_model(model, "stage2")
    first = next(tail[0].parameters())
    assert any(first is p for p in model.parameters())


def test_split_shapes_and_flops_move_to_the_device(resnet18: torch.nn.Module):
    infos = [split_info(resnet18, s, 64) for s in split_points("resnet18")]
    assert [i.shape for i in infos] == [(64, 16, 16), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    heads = [i.head_flops for i in infos]
    assert heads == sorted(heads) and heads[0] > 0
    with pytest.raises(ValueError, match="layer1"):
        split_model(resnet18, "layer9")
    with pytest.raises(ValueError, match="stage1"):
        split_model(build_model("efficientnet_b0", 10), "layer1")


def test_one_cycle_schedule():
    assert lr_at(0, 100, 1.0, 0.2) == pytest.approx(0.04)
    assert lr_at(20, 100, 1.0, 0.2) == pytest.approx(1.0)
    assert lr_at(60, 100, 1.0, 0.2) == pytest.approx(0.5)
    assert lr_at(99, 100, 1.0, 0.2) < 0.01


def test_backbone_files_round_trip_and_errors(tmp_path: Path):
    model = build_model("resnet18", 4)
    save_backbone(tmp_path, model, META)
    loaded, meta = load_backbone_dir(tmp_path)
    assert meta == META and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    with pytest.raises(BackboneNotFound, match="train-backbone"):
        load_backbone_dir(tmp_path / "empty")
    blob = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(BackboneNotFound, match="corrupt"):
        load_backbone_dir(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(blob)
    (tmp_path / "meta.json").write_text(json.dumps({**META, "num_classes": 5}))
    with pytest.raises(BackboneNotFound, match="corrupt"):
        load_backbone_dir(tmp_path)


def test_checkpoints_kept_only_when_resuming_the_same_training(tmp_path: Path):
    storage = tmp_path / "ray_train"
    _prepare_storage(storage, {"lr": 0.1}, resume=True)
    (storage / "checkpoint").mkdir()
    _prepare_storage(storage, {"lr": 0.1}, resume=True)
    assert (storage / "checkpoint").exists()
    _prepare_storage(storage, {"lr": 0.2}, resume=True)
    assert not (storage / "checkpoint").exists()
    (storage / "checkpoint").mkdir()
    _prepare_storage(storage, {"lr": 0.2}, resume=False)
    assert not (storage / "checkpoint").exists()


def _history(run_folder: Path) -> list[dict]:
    newest = max(run_folder.glob("checkpoint_*/progress.json"), key=lambda p: json.loads(p.read_text())["epoch"])
    return json.loads(newest.read_text())["history"]


def _test_accuracy(cfg) -> float:
    """Top-1 of the saved backbone on the config's test split, computed here from scratch."""
    from data_pipelines.datasets import load_splits

    test = load_splits(cfg.data).test
    model, _ = load_trained_backbone(cfg)
    with torch.no_grad():
        images = torch.stack([test[i][0] for i in range(len(test))])
        predicted = model(images).argmax(1).numpy()
    return float((predicted == test.labels).mean())


def test_ray_train_run_checkpoints_resumes_and_logs_to_mlflow(ray_local, tiny_config, mlflow_store: str):
    cfg = tiny_config.model_copy(deep=True)
    cfg.data.input_size, cfg.data.train_subset, cfg.data.val_subset, cfg.data.test_subset = 16, 200, 50, 50
    cfg.backbone.batch_size = 50

    with tracking.stage_run(cfg, "backbone") as first_run:
        first = train_backbone(cfg, resume=False)
    run_folder = cfg.run_dir / "backbone" / "ray_train" / RUN_NAME
    assert first["epochs"] == 1 and first["resumed_from_epoch"] == 0
    assert first["test_accuracy"] == pytest.approx(_test_accuracy(cfg))  # what the saved model scores
    epoch_one = _history(run_folder)
    assert [row["epoch"] for row in epoch_one] == [1]

    cfg.backbone.epochs = 2
    with tracking.stage_run(cfg, "backbone") as second_run:
        second = train_backbone(cfg, resume=True)
    assert second["epochs"] == 2 and second["resumed_from_epoch"] == 1
    history = _history(run_folder)
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[0] == epoch_one[0], "epoch 1 must come from the checkpoint, not be trained again"

    model, meta = load_trained_backbone(cfg)
    assert not model.training and meta["epochs"] == 2 and meta["num_classes"] == 10
    assert meta["test_accuracy"] == second["test_accuracy"] and set(meta["split_info"]) == set(split_points("resnet18"))
    assert meta["split_info"]["layer1"]["shape"] == [64, 4, 4]

    client = MlflowClient(mlflow_store)
    run = client.get_run(second_run.info.run_id)
    assert run.data.params["backbone.arch"] == "resnet18" and run.data.params["data.num_train"] == "200"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    assert run.data.metrics["test_accuracy"] == pytest.approx(second["test_accuracy"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "backbone")}
    # The weights and their metadata, logged as an MLflow Model (grl_aecnn.models) beside them.
    assert {"backbone/model.safetensors", "backbone/meta.json", "backbone/MLmodel"} <= artifacts
    assert mlflow.get_run(first_run.info.run_id).info.status == "FINISHED"
