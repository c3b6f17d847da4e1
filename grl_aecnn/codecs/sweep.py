"""The codecs stage: a Ray Tune sweep over (codec, operating point), then real-bitstream
measurement on the test split, then the codec profile (SPEC 3.1) and the rate-accuracy plot.

Cost control (the quick preset has a few minutes on 2 cores): the frozen head runs once and
its split tensors are written to shards in the stage folder that every trial reads per batch
(small sets are held whole: `data_pipelines.shards`; a run on a store publishes the shards there
first, and a trial on a node without the folder fetches the shards it reads); the channel
ranking is trained once and shared by every AECNN point; trials train on a subset; one Ray Data pass measures all
points. Resume: split tensors, ranking and trial checkpoints (safetensors and JSON, never
pickles) live in the stage folder. Every trial checkpoints after each training step and at the
end; a resumed sweep starts a new Tune experiment (Tune's own state is pickles and is never
restored) in which each point continues from its newest checkpoint, logging to the same MLflow
run, and finished points are not trained again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from grl_aecnn import storage
from grl_aecnn.backbone.split import split_info, split_resnet
from grl_aecnn.codecs.base import Spec
from grl_aecnn.codecs.measure import CLEAN, CodecMeasurer
from grl_aecnn.codecs.registry import codec_class
from grl_aecnn.codecs.refine import ranking_scores, refined_ranking
from grl_aecnn.codecs.seeds import spec_seed, trial_id, trial_seeds, with_seeds
from grl_aecnn.codecs.settings import CodecsConfig
from grl_aecnn.codecs.store import build_codec, init_codec, load_codec, point_specs, save_codec
from grl_aecnn.codecs.training import STEPS, accuracy, needs_teacher, teacher_logits, train_attention, train_codec
from grl_aecnn.config import ExperimentConfig
from grl_aecnn.profile import (PROFILE_VERSION, BackboneInfo, CodecProfile, OperatingPoint, SeedResult,
                               SnrPoint)
from grl_aecnn.stats import ci95

STAGE = "codecs"
TENSORS_FILE = "split_tensors.safetensors"  # labels, PNG sizes, teacher logits: written last
SHARDS = "split_tensors"  # <stage>/split_tensors/<train|val|test>: the split tensors as shards
IMPORTANCE_FILE = "importance.json"
PROFILE_FILE = "profile.json"
PLOT_FILE = "rate_accuracy.png"
TUNE_NAME = "tune"
WEIGHTS_FILE = "codec.safetensors"  # a finished point (with metrics.json)
STATE_FILE = "state.safetensors"  # a point part-way through training
PROGRESS_FILE = "progress.json"  # {"point", "steps_done", "run_id", "rng"}; steps_done = FINISHED when done
FINISHED = len(STEPS) + 1
KEPT = "checkpoints"  # <stage>/checkpoints/<trial>: the newest checkpoint of each trial, kept across attempts
WEIGHTS_DIR = "codecs"  # <stage>/codecs/<point>.safetensors: the first seed's weights of every point
SEED_WEIGHTS_DIR = "seeds"  # <stage>/codecs/seeds/<point>-seed<i>.safetensors: the other seeds' weights


@dataclass
class SweepInputs:
    """Everything a trial or the measurement needs, computed once in the driver."""

    arch: str
    num_classes: int
    dataset: str
    input_size: int
    split: str
    state: dict[str, torch.Tensor]
    # train_z, val_z, test_z (SplitArray); train_y, val_y, test_y, test_stream (bool: coded through
    # bitstreams), test_png (PNG bytes of the streamed images)[, train_teacher]
    tensors: dict[str, Any]
    importance: np.ndarray | None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.tensors["train_z"].shape[1:])


def train_codecs(cfg: ExperimentConfig, resume: bool) -> dict[str, Any]:
    """Pipeline stage: train every codec point, measure it, write profile.json and the plot."""
    from data_pipelines.datasets import load_splits
    from grl_aecnn.backbone.io import load_trained_backbone

    model, meta = load_trained_backbone(cfg)
    splits = load_splits(cfg.data)
    return run_sweep(cfg, resume, model, meta, splits)


def run_sweep(cfg: ExperimentConfig, resume: bool, model: torch.nn.Module, meta: dict[str, Any],
              splits: Any) -> dict[str, Any]:
    """The stage on an explicit backbone (eval mode) and dataset splits."""
    from grl_aecnn.runtime import init_ray

    init_ray(cfg)
    stage = cfg.stage_dir(STAGE)
    if not resume:
        for name in (TUNE_NAME, KEPT, TENSORS_FILE, SHARDS, IMPORTANCE_FILE, WEIGHTS_DIR):
            path = stage / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        storage.remove(cfg, stage)
    started = time.monotonic()
    inputs = prepare_inputs(cfg, model, meta, splits, stage)
    print(f"[codecs] split tensors and channel ranking ready ({time.monotonic() - started:.0f} s)")
    specs = point_specs(cfg.codecs, inputs.importance, inputs.shape[0])
    trials = with_seeds(specs, cfg.codecs.seeds)
    blobs, nodes = run_trials(cfg, inputs, trials, stage, resume)
    print(f"[codecs] {len(trials)} trials done ({time.monotonic() - started:.0f} s)")
    weights_dir = stage / WEIGHTS_DIR
    (weights_dir / SEED_WEIGHTS_DIR).mkdir(parents=True, exist_ok=True)
    for spec in trials:
        folder = weights_dir if spec_seed(spec) == 0 else weights_dir / SEED_WEIGHTS_DIR
        (folder / f"{trial_id(spec)}.safetensors").write_bytes(blobs[trial_id(spec)])
    frame = measure_points(cfg, inputs, [blobs[trial_id(s)] for s in trials])
    print(f"[codecs] measured through real bitstreams ({time.monotonic() - started:.0f} s)")
    profile = build_profile(inputs, model, frame, specs, blobs)
    path = profile.save(stage / PROFILE_FILE)
    plot_rate_accuracy(profile, stage / PLOT_FILE, cfg.codecs.deepjscc.train_snr_db)
    summary = {**summarize(profile, path), "trial_nodes": nodes}
    _log_stage(stage, summary)
    _log_models(cfg, profile, weights_dir, [s["id"] for s in specs], inputs.tensors["test_z"][:2].numpy())
    return summary


# -- inputs --------------------------------------------------------------------------------

def _subset(labels: np.ndarray, n: int | None, seed: int, stream: int) -> np.ndarray:
    from data_pipelines.datasets import stratified_subset

    return np.arange(len(labels)) if n is None else stratified_subset(labels, n, seed, stream)


def prepare_inputs(cfg: ExperimentConfig, model: torch.nn.Module, meta: dict[str, Any], splits: Any,
                   stage: Path) -> SweepInputs:
    """Split tensors of the train/val/test subsets (as shards) and the channel ranking, cached in
    the stage folder."""
    from data_pipelines.shards import INDEX_FILE, SplitArray, publish
    from data_pipelines.split_tensors import extract_split_tensors, png_sizes

    c = cfg.codecs
    cache = stage / TENSORS_FILE
    names = ("train", "val", "test")
    if cache.exists() and all((stage / SHARDS / n / INDEX_FILE).exists() for n in names):
        tensors = {**load_file(str(cache)), **{f"{n}_z": SplitArray.open(stage / SHARDS / n) for n in names}}
    else:
        head, tail = split_resnet(model.eval(), c.split)
        tensors = {}
        for name, split, n, stream in zip(names, (splits.train, splits.val, splits.test),
                                          (c.train_samples, c.val_samples, c.test_samples), (101, 102, 103)):
            idx = _subset(split.labels, n, cfg.seed, stream)
            tensors[f"{name}_z"], tensors[f"{name}_y"] = extract_split_tensors(head, split, idx,
                                                                               stage / SHARDS / name)
            if name == "test":  # bytes are counted on a stratified part of the scored images
                streamed = _subset(split.labels[idx], c.stream_samples, cfg.seed, stream)
                tensors["test_stream"] = torch.zeros(len(idx), dtype=torch.bool).index_fill_(
                    0, torch.from_numpy(streamed), True)
                tensors["test_png"] = torch.from_numpy(png_sizes(split, idx[streamed]))
        if needs_teacher(c):  # the clean tail's logits: every trial distils them, so computed once here
            tensors["train_teacher"] = teacher_logits(tail, tensors["train_z"])
        save_file({k: v for k, v in tensors.items() if isinstance(v, torch.Tensor)}, str(cache))
    if storage.remote(cfg, stage) is not None:  # trials on nodes without this folder read the store's copy
        for n in names:
            uri = storage.remote(cfg, stage / SHARDS / n)
            publish(stage / SHARDS / n, uri)
            tensors[f"{n}_z"] = tensors[f"{n}_z"].with_uri(uri)
        storage.mark_pushed(stage / SHARDS)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    inputs = SweepInputs(meta.get("arch", "resnet18"), int(meta.get("num_classes", splits.num_classes)),
                         meta.get("dataset", splits.name), cfg.data.input_size, c.split, state, tensors, None)
    if any(codec_class(name).needs_importance for name in c.train):
        inputs.importance = _importance(cfg, inputs, stage)
    return inputs


def _tail(inputs: SweepInputs) -> torch.nn.Module:
    from grl_aecnn.backbone.models import build_model

    model = build_model(inputs.arch, inputs.num_classes)
    model.load_state_dict(inputs.state)
    return split_resnet(model.eval(), inputs.split)[1]


def _importance(cfg: ExperimentConfig, inputs: SweepInputs, stage: Path) -> np.ndarray:
    """The channel ranking every AECNN point keeps a prefix of (``codecs.aecnn.selection``): the
    attention's mean weights, or the refined ranking's scores; the file keeps both."""
    path = stage / IMPORTANCE_FILE
    if path.exists():
        return np.asarray(json.loads(path.read_text())["importance"])
    t, c, tail = inputs.tensors, cfg.codecs, _tail(inputs)
    attention = train_attention(tail, t["train_z"], t["train_y"], c, cfg.seed)
    record = {"split": inputs.split, "selection": c.aecnn.selection, "attention": attention.tolist()}
    importance = attention
    if c.aecnn.selection == "refined":
        ranking = refined_ranking(attention, tail, t["train_z"], t["val_z"], t["val_y"], c,
                                  max(c.aecnn.kept_channels), cfg.seed)
        importance = ranking_scores(ranking)
    order = np.argsort(-importance, kind="stable")
    path.write_text(json.dumps({**record, "importance": importance.tolist(), "ranking": order.tolist()}, indent=1))
    return importance


# -- Tune ------------------------------------------------------------------------------------

def _checkpoint_files(folder: Path) -> dict[str, Any] | None:
    """A trial checkpoint's progress and weights (JSON and safetensors, checked to parse), else None."""
    from safetensors import SafetensorError
    from safetensors.torch import load as parse_safetensors

    try:
        progress = json.loads((folder / PROGRESS_FILE).read_text())
        weights = (folder / (WEIGHTS_FILE if progress["steps_done"] == FINISHED else STATE_FILE)).read_bytes()
        parse_safetensors(weights)
        return {**progress, "weights": weights}
    except (OSError, ValueError, KeyError, TypeError, SafetensorError):
        return None


def _save_checkpoint(progress: dict[str, Any], weights: bytes, metrics: dict[str, float]) -> None:
    from ray import tune

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / (WEIGHTS_FILE if progress["steps_done"] == FINISHED else STATE_FILE)).write_bytes(weights)
        (Path(tmp) / PROGRESS_FILE).write_text(json.dumps(progress))
        tune.report({**metrics, "steps_done": progress["steps_done"]}, checkpoint=tune.Checkpoint.from_directory(tmp))


def _rng_hex(state: torch.Tensor) -> str:
    return state.numpy().tobytes().hex()


def _rng_state(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(bytes.fromhex(text), dtype=np.uint8).copy())


def _trial(config: dict[str, Any], shared: dict[str, Any]) -> None:
    """One Tune trial: train one codec point with one seed (from its last checkpoint, if any), log
    it as a nested MLflow run, checkpoint after every step and at the end. Its random numbers
    come from its own seeds and, after a checkpoint, the RNG state saved with it; torch runs
    deterministic algorithms, so the trial trains the same wherever and whenever it runs."""
    import mlflow
    import ray
    from ray import tune

    from grl_aecnn.progress import LogLines

    spec = config["point"]
    tid = trial_id(spec)
    retried = tune.get_checkpoint()  # Tune retrying this trial within the same attempt
    if retried is not None:
        with retried.as_directory() as d:
            earlier = _checkpoint_files(Path(d))
    else:
        earlier = shared["resume"].get(tid)
    torch.set_num_threads(max(1, int(shared["cpus"])))
    torch.use_deterministic_algorithms(True, warn_only=True)
    init_seed, train_seed = trial_seeds(shared["seed"], spec)
    inputs: SweepInputs = shared["inputs"]
    cfg = CodecsConfig.model_validate({**shared["codecs"], **spec.get("codecs", {})})  # ablations override
    t = inputs.tensors
    tail = _tail(inputs)
    torch.manual_seed(init_seed)
    codec = load_codec(earlier["weights"], tail)[0] if earlier else build_codec(spec, inputs.shape)
    if not earlier and shared["init"] is not None and init_codec(codec, spec, shared["init"]):
        print(f"[codecs] {tid}: starting from {cfg.init_from}")
    # Every Ray node this trial trained on (a retry after a node loss adds one), for the summary.
    nodes = sorted({*(earlier or {}).get("nodes", []), ray.get_runtime_context().get_node_id()})
    lines = LogLines()
    mlflow.set_tracking_uri(shared["mlflow"]["uri"])
    run_id = earlier["run_id"] if earlier else None
    with mlflow.start_run(run_id=run_id, experiment_id=shared["mlflow"]["experiment_id"],
                          run_name=None if run_id else f"codec/{tid}") as run:
        if run_id is None:
            mlflow.set_tags({**shared["mlflow"]["tags"], "grl_aecnn.stage": "codecs.trial"})
            mlflow.log_params({k: json.dumps(v) if isinstance(v, list) else v for k, v in spec.items()})

        def log(name: str, metrics: dict[str, float]) -> None:
            mlflow.log_metrics({f"{name}.{k}": v for k, v in metrics.items()}, step=STEPS.index(name))
            lines(f"[codecs] {tid} {name}: " + "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()),
                  final=True)

        def checkpoint(steps_done: int, rng: torch.Tensor) -> None:
            _save_checkpoint({"point": tid, "steps_done": steps_done, "run_id": run.info.run_id,
                              "rng": _rng_hex(rng), "nodes": nodes}, save_codec(codec, spec, inputs.shape, tail, []), {})

        start = earlier["steps_done"] if earlier else 0
        if start < FINISHED:
            trained = train_codec(codec, tail, t["train_z"], t["train_y"], cfg, train_seed, log,
                                  t.get("train_teacher"), start=start, on_step=checkpoint,
                                  rng_state=_rng_state(earlier["rng"]) if start else None)
            val_acc = accuracy(codec, tail, t["val_z"], t["val_y"])
            blob = save_codec(codec, spec, inputs.shape, tail, trained)
            mlflow.log_metric("val_accuracy", val_acc)
            with tempfile.TemporaryDirectory() as tmp:
                artifact = Path(tmp) / f"{tid}.safetensors"
                artifact.write_bytes(blob)
                mlflow.log_artifact(str(artifact), artifact_path="codecs")
        else:
            blob, val_acc = earlier["weights"], earlier["val_accuracy"]
        _save_checkpoint({"point": tid, "steps_done": FINISHED, "run_id": run.info.run_id,
                          "val_accuracy": val_acc, "nodes": nodes}, blob, {"val_accuracy": val_acc})


def _mlflow_info(cfg: ExperimentConfig) -> dict[str, Any]:
    import mlflow

    from grl_aecnn.tracking import child_run_tags, setup, tracking_uri

    active = mlflow.active_run()
    experiment_id = active.info.experiment_id if active else setup(cfg).get_experiment_by_name(
        cfg.tracking.experiment).experiment_id
    return {"uri": tracking_uri(cfg), "experiment_id": experiment_id, "tags": child_run_tags(cfg.run_location)}


def _close_finished_runs(cfg: ExperimentConfig, finished: list[dict[str, Any]]) -> None:
    """A trial stopped after its final checkpoint but before its MLflow run closed left that run
    FAILED or RUNNING; its checkpoint says the work is done, so the run is marked FINISHED."""
    from mlflow.tracking import MlflowClient

    from grl_aecnn.tracking import tracking_uri

    client = MlflowClient(tracking_uri(cfg))
    for found in finished:
        if found.get("run_id") and client.get_run(found["run_id"]).info.status != "FINISHED":
            client.set_terminated(found["run_id"], "FINISHED")


def newest_checkpoints(stage: Path, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each point's most advanced checkpoint in the last attempt's Tune folder or among the kept
    ones, kept as ``<stage>/checkpoints/<point>`` (replaced atomically, so a kill loses nothing)."""
    best: dict[str, tuple[dict[str, Any], Path]] = {}
    for folder in [*(stage / KEPT).glob("*"), *(stage / TUNE_NAME).glob("*/checkpoint_*")]:
        found = _checkpoint_files(folder)
        if found is None and (folder / PROGRESS_FILE).exists():
            print(f"[codecs] ignoring checkpoint {folder}: not a valid checkpoint of this project")
        point = found.get("point") if found else None
        if point in ids and (point not in best or found["steps_done"] > best[point][0]["steps_done"]):
            best[point] = (found, folder)
    for point, (found, folder) in best.items():
        kept = stage / KEPT / point
        if folder != kept:
            partial = kept.with_name(point + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            shutil.copytree(folder, partial)
            shutil.rmtree(kept, ignore_errors=True)
            os.replace(partial, kept)
    return {point: found for point, (found, _) in best.items()}


def shard_error(err: BaseException | None) -> Exception | None:
    """The `ShardError` behind a trial's error (Ray and Tune wrap it), as a fresh one-line error."""
    from data_pipelines.shards import ShardError

    for _ in range(16):
        if err is None:
            return None
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException) and cause is not err:
            err = cause
        elif isinstance(err, ShardError):
            return ShardError(" ".join(str(err.args[0] if err.args else err).split()))
        else:
            err = err.__cause__ or err.__context__
    return None


def run_trials(cfg: ExperimentConfig, inputs: SweepInputs, specs: list[dict[str, Any]], stage: Path,
               resume: bool) -> tuple[dict[str, bytes], dict[str, list[str]]]:
    """Train the points that are not finished (continuing each from its newest checkpoint);
    the weights file of every point and the ids of the Ray nodes it trained on."""
    from ray import tune

    c = cfg.codecs
    earlier = newest_checkpoints(stage, [trial_id(s) for s in specs]) if resume else {}
    blobs = {point: found["weights"] for point, found in earlier.items() if found["steps_done"] == FINISHED}
    nodes = {point: earlier[point].get("nodes", []) for point in blobs}
    for point, found in earlier.items():
        if point not in blobs:
            print(f"[codecs] {point}: resuming after step {found['steps_done']} of {len(STEPS)}")
    _close_finished_runs(cfg, [earlier[point] for point in blobs])
    pending = [s for s in specs if trial_id(s) not in blobs]
    errors = ""
    path = stage / TUNE_NAME
    storage.push(cfg, stage / KEPT)  # the kept checkpoints reach the store before Tune's folder goes
    shutil.rmtree(path, ignore_errors=True)  # Tune's state of an earlier attempt is never restored
    storage.remove(cfg, path)
    if pending:
        shared = {"inputs": inputs, "codecs": c.model_dump(mode="json"), "seed": cfg.seed,
                  "cpus": c.cpus_per_trial, "mlflow": _mlflow_info(cfg), "resume": earlier,
                  "init": Path(c.init_from).read_bytes() if c.init_from else None}
        trainable = tune.with_resources(tune.with_parameters(_trial, shared=shared),
                                        {"cpu": c.cpus_per_trial, "gpu": c.gpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            param_space={"point": tune.grid_search(pending)},
            # a finished trial's worker process takes the next point: no new process, no re-import
            tune_config=tune.TuneConfig(max_concurrent_trials=c.max_concurrent_trials, reuse_actors=True),
            run_config=tune.RunConfig(name=TUNE_NAME, storage_path=storage.ray_storage_path(cfg, stage), verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=c.max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )
        grid = tuner.fit()
        for result in grid:
            if result.error is None and result.checkpoint is not None:
                with result.checkpoint.as_directory() as d:
                    found = _checkpoint_files(Path(d))
                if found and found["steps_done"] == FINISHED:
                    blobs[trial_id(result.config["point"])] = found["weights"]
                    nodes[trial_id(result.config["point"])] = found.get("nodes", [])
        for result in grid:
            bad = shard_error(result.error)
            if bad is not None:  # a missing or corrupt shard: one line naming it, not a trial's traceback
                raise bad
        errors = "; ".join(f"{trial_id(r.config['point'])}: {r.error}" for r in grid if r.error is not None)
    missing = [trial_id(s) for s in specs if trial_id(s) not in blobs]
    if missing:
        raise RuntimeError(f"codec trials did not finish: {missing} ({errors or 'stopped early'}); "
                           f"rerun with resume to finish them")
    return blobs, nodes


# -- measurement and profile -------------------------------------------------------------------

def measure_points(cfg: ExperimentConfig, inputs: SweepInputs, blobs: list[bytes]) -> Any:
    """One Ray Data pass over the test split tensors measuring every point (and the clean tail)."""
    import ray

    from data_pipelines.split_tensors import measure_dataset, split_tensor_dataset

    c = cfg.codecs
    t = inputs.tensors
    backbone = ray.put({"arch": inputs.arch, "num_classes": inputs.num_classes, "split": inputs.split,
                        "state": inputs.state})
    stream = t.get("test_stream")  # absent in a cache from before the split: every image streamed
    ds = split_tensor_dataset(t["test_z"], t["test_y"].numpy(), 4 * c.measure_workers,
                              None if stream is None else stream.numpy())
    kwargs = {"backbone": backbone, "codecs": ray.put(blobs), "eval_snr_db": _eval_snrs(c), "seed": cfg.seed}
    try:
        return measure_dataset(ds, CodecMeasurer, kwargs, c.measure_workers, c.measure_batch_size)
    except Exception as err:  # a Ray Data task's missing or corrupt shard: the one line naming it
        bad = shard_error(err)
        if bad is None:
            raise
        raise bad from None


def _eval_snrs(c: CodecsConfig) -> list[float]:
    return sorted(set(c.deepjscc.eval_snr_db) | {c.deepjscc.train_snr_db})


def _drop_ci95(point_rows: Any, clean: Any) -> float:
    """Half-width of the 95 % normal interval of mean(clean - point) over the test images: the
    rows' correctness averaged over seeds per image, paired with the clean tail's on that image."""
    per_image = point_rows.groupby("index").correct.mean()
    diff = clean.reindex(per_image.index).to_numpy(float) - per_image.to_numpy(float)
    return float(1.96 * diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0


def _seed_results(rows: Any, drop_ci95: float) -> dict[str, Any]:
    """Per-seed results of one profile point and its fields: accuracy and payload as the mean over
    seeds, with the accuracy's 95 % interval over seeds and the test set's. `rows`: one row per seed
    (index: seed)."""
    seeds = [SeedResult(seed=int(seed), accuracy=float(row.accuracy),
                        payload_bytes=None if np.isnan(row.payload) else float(row.payload))
             for seed, row in rows.iterrows()]
    acc, half = ci95([s.accuracy for s in seeds])
    fields = {"accuracy": acc, "accuracy_ci95": half, "drop_ci95": drop_ci95, "seeds": seeds,
              "encode_ms": float(rows.enc.mean()), "decode_ms": float(rows.dec.mean())}
    if seeds[0].payload_bytes is not None:
        fields["payload_bytes"] = float(np.mean([s.payload_bytes for s in seeds]))
    return fields


def build_profile(inputs: SweepInputs, model: torch.nn.Module, frame: Any, specs: list[Spec],
                  blobs: dict[str, bytes]) -> CodecProfile:
    """The profile from the measurement rows of every trial; `specs`: one per point (the first
    seed's), `blobs`: every trial's weights by trial id."""
    info = split_info(model, inputs.split, inputs.input_size)
    measures = {"accuracy": ("correct", "mean"), "payload": ("payload_bytes", "mean"),
                "enc": ("encode_ms", "mean"), "dec": ("decode_ms", "mean")}
    digital = frame[frame.snr_db.isna()].groupby(["point", "seed"]).agg(**measures)
    analog = frame[frame.snr_db.notna()].groupby(["point", "snr_db", "seed"]).agg(**measures)
    analog["payload"] = np.nan
    clean_rows = frame[frame.point == CLEAN]
    clean = float(clean_rows.correct.mean())
    clean_per_image = clean_rows.groupby("index").correct.mean()
    png = float(inputs.tensors["test_png"].double().mean())
    backbone = BackboneInfo(arch=inputs.arch, input_size=inputs.input_size, dataset=inputs.dataset,
                            num_classes=inputs.num_classes, clean_accuracy=clean, total_flops=info.total_flops,
                            split=inputs.split, split_shape=info.shape, input_bytes_mean=png)
    points = [
        OperatingPoint(id="local", codec="local", accuracy=clean, device_flops=info.total_flops, server_flops=0.0),
        OperatingPoint(id="raw-image", codec="raw-image", payload_bytes=png, accuracy=clean, device_flops=0.0,
                       server_flops=info.total_flops, compression_ratio=info.float32_bytes / png),
        OperatingPoint(id="float32", codec="float32", split=inputs.split, payload_bytes=float(info.float32_bytes),
                       accuracy=clean, device_flops=info.head_flops, server_flops=info.tail_flops,
                       compression_ratio=1.0),
    ]
    tail = _tail(inputs)
    for spec in specs:
        codec, _ = load_codec(blobs[trial_id(spec)], tail)
        enc_flops, dec_flops = codec.flops()
        common = {"split": inputs.split, "device_flops": info.head_flops + enc_flops,
                  "server_flops": dec_flops + info.tail_flops}
        for variant in codec.variants(spec):
            rows = frame[frame.point == variant.id]
            if codec.analog:
                per_snr = analog.loc[variant.id]
                table = [SnrPoint(snr_db=float(snr), accuracy=float(per_snr.loc[snr].accuracy.mean()))
                         for snr in per_snr.index.unique(level="snr_db")]
                drop = _drop_ci95(rows[rows.snr_db == spec["train_snr_db"]], clean_per_image)
                fields = _seed_results(per_snr.loc[spec["train_snr_db"]], drop)
                fields["accuracy_vs_snr"] = table
            else:
                fields = _seed_results(digital.loc[variant.id], _drop_ci95(rows, clean_per_image))
                fields["compression_ratio"] = info.float32_bytes / fields["payload_bytes"]
            points.append(OperatingPoint(id=variant.id, codec=codec.kind, **variant.fields, **fields, **common))
    return CodecProfile(version=PROFILE_VERSION, backbone=backbone, points=points)


def capacity_bytes(point: OperatingPoint, snr_db: float) -> float:
    """Bytes a capacity-achieving digital link would carry in an analog point's channel uses."""
    return float(point.channel_uses) * np.log2(1 + 10 ** (snr_db / 10)) / 8


def plot_rate_accuracy(profile: CodecProfile, path: Path, train_snr_db: float) -> Path:
    """Accuracy vs payload bytes (log x), one curve per codec (AECNN: one per bit depth), with the
    95 % interval over seeds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list[tuple[float, float, float]]] = {}
    for p in profile.points:
        ci = p.accuracy_ci95 or 0.0
        if p.codec == "aecnn":
            curves.setdefault(f"AECNN {p.bits}-bit", []).append((p.payload_bytes, p.accuracy, ci))
        elif p.codec == "bottlenetpp":
            label = "BottleNet++ + entropy coder" if p.entropy_coded else "BottleNet++ (8-bit, as published)"
            curves.setdefault(label, []).append((p.payload_bytes, p.accuracy, ci))
        elif p.codec == "deepjscc":
            curves.setdefault(f"DeepJSCC (capacity bytes at {train_snr_db:g} dB)", []).append(
                (capacity_bytes(p, train_snr_db), p.accuracy, ci))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in sorted(curves.items()):
        xs, ys, cis = zip(*sorted(pts))
        ax.errorbar(xs, ys, yerr=cis, marker="o", capsize=3, label=label)
    for pid, marker in (("raw-image", "s"), ("float32", "^")):
        p = next((q for q in profile.points if q.id == pid), None)
        if p is not None:
            ax.scatter([p.payload_bytes], [p.accuracy], marker=marker, color="k", zorder=3, label=pid)
    ax.axhline(profile.backbone.clean_accuracy, color="grey", ls="--", lw=1, label="clean backbone")
    f32 = profile.backbone.split_shape[0] * profile.backbone.split_shape[1] * profile.backbone.split_shape[2] * 4
    ax.axvline(f32 / 256, color="grey", ls=":", lw=1, label="256x smaller than float32")
    ax.set_xscale("log")
    ax.set_xlabel("payload per sample [bytes]")
    ax.set_ylabel("top-1 accuracy (test)")
    ax.set_title(f"{profile.backbone.arch} / {profile.backbone.dataset}, split {profile.backbone.split}")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def best_aecnn(profile: CodecProfile, min_ratio: float = 256.0) -> OperatingPoint | None:
    """The most accurate AECNN point at least `min_ratio` times smaller than the float32 tensor."""
    cands = [p for p in profile.points if p.codec == "aecnn" and (p.compression_ratio or 0) >= min_ratio]
    return max(cands, key=lambda p: (p.accuracy, p.compression_ratio), default=None)


def summarize(profile: CodecProfile, path: Path) -> dict[str, Any]:
    best = best_aecnn(profile)
    clean = profile.backbone.clean_accuracy
    return {
        "profile": str(path),
        "points": len(profile.points),
        "clean_accuracy": clean,
        "best_aecnn_256x": None if best is None else {
            "id": best.id, "payload_bytes": best.payload_bytes, "compression_ratio": best.compression_ratio,
            "accuracy": best.accuracy, "accuracy_ci95": best.accuracy_ci95,
            "loss_points": 100 * (clean - best.accuracy), "loss_points_ci95": 100 * (best.drop_ci95 or 0.0)},
    }


def _log_models(cfg: ExperimentConfig, profile: CodecProfile, weights_dir: Path, point_ids: list[str],
                example: np.ndarray) -> None:
    """Every point as a registered MLflow Model (``grl_aecnn.models.logged``), on the stage run."""
    import mlflow

    from grl_aecnn.models.logged import log_codec_models

    if mlflow.active_run() is not None:
        log_codec_models(cfg, profile, {pid: weights_dir / f"{pid}.safetensors" for pid in point_ids}, example)


def _log_stage(stage: Path, summary: dict[str, Any]) -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    mlflow.log_artifact(str(stage / PROFILE_FILE))
    mlflow.log_artifact(str(stage / PLOT_FILE))
    mlflow.log_metric("clean_accuracy", summary["clean_accuracy"])
    best = summary["best_aecnn_256x"]
    if best:
        mlflow.log_metrics({"aecnn_256x_accuracy": best["accuracy"], "aecnn_256x_ratio": best["compression_ratio"],
                            "aecnn_256x_loss_points": best["loss_points"],
                            "aecnn_256x_loss_points_ci95": best["loss_points_ci95"]})
