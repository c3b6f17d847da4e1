"""The backbone stage: train a torchvision CNN with Ray Train, data-parallel.

Each Ray Train worker loads the dataset itself (small datasets live in memory), trains on its
shard with SGD + Nesterov and a one-cycle schedule, and reports every epoch with a checkpoint.
Ray Train keeps the checkpoints under ``<stage_dir>/ray_train`` and, when the trainer is
started again with the same run name, hands the latest one back through
``ray.train.get_checkpoint()``: that is how ``resume=True`` continues a killed run at the
next epoch. A checkpoint holds safetensors and JSON only, so loading one runs no code (Ray
Train's own record of its checkpoints is JSON too). The learning rate is a pure function of
the global step, so a resumed run follows the same schedule as an uninterrupted one. The driver then writes ``model.safetensors`` +
``meta.json`` and logs the per-epoch history to the active MLflow run.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from data_pipelines.datasets import TensorImages, load_splits, resolve_data_dir
from data_pipelines.transforms import MEAN, STD
from grl_aecnn.backbone.io import save_backbone
from grl_aecnn.backbone.models import build_model
from grl_aecnn.backbone.split import split_info
from grl_aecnn.backbone.split_points import split_points
from grl_aecnn.config import BackboneConfig, DataConfig

if TYPE_CHECKING:
    from grl_aecnn.config import ExperimentConfig

log = logging.getLogger(__name__)  # in a Ray Train worker, logging reaches the driver once (print twice)
RUN_NAME = "ray_train"
FINGERPRINT_FILE = "fingerprint.json"
PROGRESS_LINES = 4  # per epoch, besides the epoch summary
# Settings that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"epochs", "num_workers", "use_gpu", "cpus_per_worker", "max_failures"}
CHECKPOINT_FORMAT = 2  # 2: optimizer state in safetensors (1 pickled it); other formats start over


def lr_at(step: int, total: int, peak: float, warmup_fraction: float) -> float:
    """One-cycle learning rate: linear warm-up from peak/25 to peak, then cosine decay to ~0."""
    warmup = int(warmup_fraction * total)
    if step < warmup:
        return peak * (0.04 + 0.96 * step / warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# -- inside each Ray Train worker ---------------------------------------------------------

def _loader_processes(dataset: Dataset, cpus: int) -> int:
    """In-memory tensors load in the training process; image files decode in the spare CPUs."""
    return 0 if isinstance(dataset, TensorImages) else cpus - 1


def _evaluate(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int,
              rank: int, world: int, cpus: int) -> float:
    """Top-1 accuracy over the whole dataset, each worker scoring every world-th item."""
    shard = Subset(dataset, range(rank, len(dataset), world))
    loader = DataLoader(shard, batch_size=batch_size, num_workers=_loader_processes(dataset, cpus),
                        pin_memory=device.type == "cuda")
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    model.eval()
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(images)
            counts += torch.stack([(logits.argmax(1) == labels).sum().double(),
                                   torch.tensor(float(len(labels)), dtype=torch.float64, device=device)])
    if world > 1:
        dist.all_reduce(counts)
    return float(counts[0] / counts[1])


def _save_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     epoch: int, history: list[dict[str, Any]]) -> None:
    """Weights and optimizer state as safetensors, the rest as JSON: nothing in a checkpoint
    folder runs code when loaded (no pickles)."""
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(folder / "model.safetensors"))
    state = optimizer.state_dict()
    save_file({f"{index}.{name}": value.detach().cpu().contiguous() for index, slots in state["state"].items()
               for name, value in slots.items() if isinstance(value, torch.Tensor)},
              str(folder / "optimizer.safetensors"))
    (folder / "progress.json").write_text(json.dumps({"epoch": epoch, "history": history,
                                                      "param_groups": state["param_groups"]}))


def _load_optimizer(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": _load_progress(folder)["param_groups"]})


def _load_progress(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "progress.json").read_text())


def train_loop(config: dict[str, Any]) -> None:
    """One data-parallel worker: train ``backbone.epochs`` epochs, report and checkpoint each."""
    import ray.train
    import ray.train.torch

    data_cfg = DataConfig.model_validate(config["data"])
    bb = BackboneConfig.model_validate(config["backbone"])
    seed = config["seed"]
    if not bb.use_gpu:
        torch.set_num_threads(bb.cpus_per_worker)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    splits = load_splits(data_cfg)
    torch.manual_seed(seed)  # the same initial weights on every worker
    model = build_model(bb.arch, splits.num_classes, bb.pretrained)
    optimizer = torch.optim.SGD(model.parameters(), lr=bb.lr, momentum=bb.momentum, nesterov=bb.momentum > 0,
                                weight_decay=bb.weight_decay)
    start_epoch, history = 1, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            model.load_state_dict(load_file(str(Path(folder) / "model.safetensors")))
            _load_optimizer(Path(folder), optimizer)
            progress = _load_progress(Path(folder))
        start_epoch, history = progress["epoch"] + 1, progress["history"]
        if rank == 0:
            log.info("[backbone] resuming after epoch %d", progress["epoch"])
    model = ray.train.torch.prepare_model(model)  # to the device; DDP when world > 1
    plain = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    criterion = nn.CrossEntropyLoss(label_smoothing=bb.label_smoothing)

    sampler = DistributedSampler(splits.train, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    loader = DataLoader(splits.train, batch_size=bb.batch_size, sampler=sampler,
                        drop_last=len(sampler) > bb.batch_size,  # no 1-image batch for batch norm
                        num_workers=_loader_processes(splits.train, bb.cpus_per_worker),
                        pin_memory=device.type == "cuda")
    total_steps = bb.epochs * len(loader)
    for epoch in range(start_epoch, bb.epochs + 1):
        sampler.set_epoch(epoch)
        torch.manual_seed(seed * 100_003 + epoch * world + rank)  # augmentation, reproducible on resume
        model.train()
        started = time.perf_counter()
        loss_sum = correct = seen = 0.0
        for batch, (images, labels) in enumerate(loader, start=1):
            step = (epoch - 1) * len(loader) + batch - 1
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total_steps, bb.lr, bb.warmup_fraction)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(images)
                loss = criterion(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
            if rank == 0 and batch % max(1, len(loader) // PROGRESS_LINES) == 0 and batch < len(loader):
                log.info("[backbone] epoch %d/%d %3.0f%%  loss %.4f  %.0f img/s", epoch, bb.epochs,
                         100 * batch / len(loader), loss_sum / seen, seen * world / (time.perf_counter() - started))
        seconds = time.perf_counter() - started
        score = partial(_evaluate, model, device=device, batch_size=2 * bb.batch_size, rank=rank, world=world,
                        cpus=bb.cpus_per_worker)
        metrics = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
                   "val_accuracy": score(splits.val), "lr": optimizer.param_groups[0]["lr"],
                   "epoch_seconds": seconds, "images_per_s": seen * world / seconds}
        if epoch == bb.epochs:
            metrics["test_accuracy"] = score(splits.test)
        history.append(metrics)
        if rank == 0:
            log.info("[backbone] " + "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in metrics.items()))
        with tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                _save_checkpoint(Path(folder), plain, optimizer, epoch, history)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if rank == 0 else None)


# -- the driver ---------------------------------------------------------------------------

def _fingerprint(cfg: "ExperimentConfig") -> dict[str, Any]:
    backbone = {k: v for k, v in cfg.backbone.model_dump(mode="json").items() if k not in RESUMABLE_CHANGES}
    return {"seed": cfg.seed, "data": cfg.data.model_dump(mode="json"), "backbone": backbone,
            "checkpoint_format": CHECKPOINT_FORMAT}


def _prepare_storage(storage: Path, fingerprint: dict[str, Any], resume: bool) -> None:
    """Keep earlier checkpoints only when resuming the same training (same data and optimiser)."""
    marker = storage / FINGERPRINT_FILE
    if storage.exists():
        same = marker.exists() and json.loads(marker.read_text()) == fingerprint
        if resume and not same:
            print("[backbone] settings changed since the last checkpoint: starting over")
        if not (resume and same):
            shutil.rmtree(storage)
    storage.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(fingerprint, indent=2))


def _last_epoch(run_folder: Path) -> int:
    """The newest epoch with a checkpoint in the Ray Train run folder (0 when none)."""
    epochs = [_load_progress(p.parent)["epoch"] for p in run_folder.glob("checkpoint_*/progress.json")]
    return max(epochs, default=0)


def _split_table(model: nn.Module, arch: str, input_size: int) -> dict[str, dict[str, Any]]:
    """Split tensor shape and head/tail FLOPs at every split point, for the codecs and the simulator."""
    table = {}
    for split in split_points(arch):
        info = split_info(model, split, input_size)
        table[split] = {**asdict(info), "float32_bytes": info.float32_bytes}
    return table


def _log_to_mlflow(history: list[dict[str, Any]], sizes: dict[str, int], model_path: Path, meta_path: Path) -> None:
    import mlflow

    mlflow.log_params({f"data.num_{name}": n for name, n in sizes.items()})
    for row in history:
        mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"}, step=row["epoch"])
    mlflow.log_metric("test_accuracy", history[-1]["test_accuracy"])
    mlflow.log_artifact(str(model_path), "backbone")
    mlflow.log_artifact(str(meta_path), "backbone")


def train_backbone(cfg: "ExperimentConfig", resume: bool) -> dict[str, Any]:
    """Pipeline stage: train (or resume) the backbone, save it with its metadata, log to MLflow."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from grl_aecnn.models.logged import log_backbone_model
    from grl_aecnn.runtime import init_ray

    bb = cfg.backbone
    stage = cfg.stage_dir("backbone")
    data_cfg = cfg.data.model_copy(update={"data_dir": str(resolve_data_dir(cfg.data))})
    splits = load_splits(data_cfg)  # fails fast on a missing dataset, before Ray starts
    print(f"[backbone] {bb.arch} on {splits.name} {data_cfg.input_size}px, splits {splits.sizes()}, "
          f"{bb.epochs} epochs, {bb.num_workers} worker(s)")
    storage = stage / "ray_train"
    _prepare_storage(storage, _fingerprint(cfg), resume)
    resumed_from = _last_epoch(storage / RUN_NAME)

    init_ray(cfg)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"data": data_cfg.model_dump(mode="json"), "backbone": bb.model_dump(mode="json"),
                           "seed": cfg.seed},
        scaling_config=ScalingConfig(num_workers=bb.num_workers, use_gpu=bb.use_gpu,
                                     resources_per_worker={"CPU": bb.cpus_per_worker}),
        run_config=RunConfig(name=RUN_NAME, storage_path=str(storage),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=bb.max_failures)),
    )
    started = time.perf_counter()
    result = trainer.fit()
    train_seconds = time.perf_counter() - started

    with result.checkpoint.as_directory() as folder:
        history = _load_progress(Path(folder))["history"]
        model = build_model(bb.arch, splits.num_classes)
        model.load_state_dict(load_file(str(Path(folder) / "model.safetensors")))
    last = history[-1]
    meta = {
        "arch": bb.arch, "num_classes": splits.num_classes, "class_names": splits.class_names,
        "input_size": data_cfg.input_size, "dataset": splits.name, "normalize": {"mean": MEAN, "std": STD},
        "epochs": last["epoch"], "test_accuracy": last["test_accuracy"], "val_accuracy": last["val_accuracy"],
        "split_info": _split_table(model, bb.arch, data_cfg.input_size),
    }
    model_path, meta_path = save_backbone(stage, model, meta)
    _log_to_mlflow(history, splits.sizes(), model_path, meta_path)
    log_backbone_model(cfg, stage, meta)
    print(f"[backbone] test accuracy {last['test_accuracy']:.4f} after {last['epoch']} epochs "
          f"({train_seconds:.0f} s); saved {model_path}")
    return {"test_accuracy": last["test_accuracy"], "val_accuracy": last["val_accuracy"],
            "epochs": last["epoch"], "resumed_from_epoch": resumed_from, "train_seconds": round(train_seconds, 1),
            "model_path": str(model_path), "meta_path": str(meta_path)}
