"""One ablation as a Ray Tune experiment: a codec trial per (row, seed) through the sweep's own
trials, then the sweep's real-bitstream measurement on the test split.

Every row shares the operating point (k channels, b bits), the training budget and the seeds;
only the ablated mechanism changes:

- selection: the kept channels come from each row's ranking (trained ones per seed; the refined
  row refines each seed's CBAM ranking);
- recovery: the learned decoder, or the pruned channels filled with zeros / training means
  (no decoder weights: the epochs of the steps that run the tail all go to the joint step,
  which adapts the tail to the filled tensors);
- entropy: coding is lossless, so one codec is trained per seed and its symbols are sent with
  the context model, the per-cell model, the per-channel model (both refitted on the same
  training symbols) or fixed-length packing: bytes at exactly equal accuracy;
- schedule: staged (feature -> codec -> joint) or one end-to-end step on the task loss with the
  epochs of the steps that run the tail (codec + joint); both keep the CBAM ranking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from data_pipelines.shards import sample_rows
from grl_aecnn.ablate.selection import channel_importance
from grl_aecnn.ablate.settings import ROWS, AblationConfig
from grl_aecnn.codecs.entropy import SymbolTables
from grl_aecnn.codecs.store import _metadata, load_codec, point_specs
from grl_aecnn.codecs.seeds import trial_id
from grl_aecnn.codecs.settings import Schedule
from grl_aecnn.codecs.sweep import SweepInputs, _tail, measure_points, prepare_inputs, run_trials
from grl_aecnn.codecs.training import FIT_BYTES
from grl_aecnn.config import ExperimentConfig


@dataclass(frozen=True)
class Trial:
    """One measured (row, seed) point."""

    row: str
    seed_index: int
    accuracy: float
    payload_bytes: float


def seeds_of(cfg: ExperimentConfig, n: int) -> list[int]:
    """Training seeds of seed indices 0..n-1, derived from the config seed (same for every row)."""
    return [int(s) for s in np.random.SeedSequence(cfg.seed).generate_state(n)]


def point_id(row: str, index: int) -> str:
    """The trial id of a row's seed index (the sweep's own naming)."""
    return trial_id({"id": row, "seed": index})


def _joint_only(schedule: Schedule) -> dict[str, float]:
    """The epochs of the steps that run the tail (codec + joint), all in the joint step.

    A row without the paper's staged decoder (end-to-end training, or a fill with no decoder
    weights, whose codec step has nothing to train) spends the same tail passes adapting the tail."""
    return {"attention": schedule.attention, "feature": 0.0, "codec": 0.0, "joint": schedule.codec + schedule.joint}


def _trained_rows(abl: AblationConfig) -> list[str]:
    """Rows that need their own training (entropy rows share the paper's trained codec)."""
    return [abl.paper] if abl.mechanism == "entropy" else list(abl.rows or [])


def trial_specs(abl: AblationConfig, cfg: ExperimentConfig, inputs: SweepInputs) -> list[dict[str, Any]]:
    """The Tune trials: one codec spec per trained row and seed."""
    c = cfg.codecs
    t = inputs.tensors
    tail = _tail(inputs)
    rankings: dict[tuple[str, int], np.ndarray] = {}
    specs = []
    for row in _trained_rows(abl):
        method = row if abl.mechanism == "selection" else ROWS["selection"][0]
        for i, seed in enumerate(seeds_of(cfg, abl.seeds)):
            if (method, seed) not in rankings:
                rankings[(method, seed)] = channel_importance(method, tail, t, c, seed, abl.kept_channels)
            base = point_specs(c, rankings[(method, seed)], inputs.shape[0])[0]
            # base keeps the ranking's top k; every row trains with the same seeds, index by index
            spec = {**base, "id": row, "seed": i, "seed_group": base["id"]}
            if abl.mechanism == "recovery":
                spec["recovery"] = row
            if abl.mechanism in ("recovery", "schedule") and row != abl.paper:
                spec["codecs"] = {"schedule": _joint_only(c.schedule)}
            specs.append(spec)
    return specs


def entropy_variant(blob: bytes, row: str, inputs: SweepInputs) -> bytes:
    """The paper's trained codec sent with another entropy coder (same weights: same accuracy)."""
    tensors, meta = st_load(blob), _metadata(blob)
    spec = {**json.loads(meta["spec"]), "id": row}  # the paper's spec keeps its seed index
    if row in ("cell", "channel"):  # no neighbour context: the per-cell tables, or one per channel
        codec, _ = load_codec(blob, _tail(inputs))
        codec.grid = spec["grid"] = codec.grid if row == "cell" else 1
        codec.context = spec["context"] = False
        codec.entropy = SymbolTables(len(codec.channels), codec.shape[1:], codec.entropy.alphabet, codec.grid)
        codec.fit_symbols(sample_rows(inputs.tensors["train_z"], FIT_BYTES, 0))
        tensors["codec.entropy.probs"] = codec.entropy.probs.clone()
    elif row == "raw":
        spec["entropy_coded"] = False
    return st_save(tensors, metadata={**meta, "spec": json.dumps(spec)})


def run_ablation(abl: AblationConfig, cfg: ExperimentConfig, model: Any, meta: dict[str, Any], splits: Any,
                 out: Path, resume: bool) -> list[Trial]:
    """Train and measure every (row, seed); the per-seed results."""
    from grl_aecnn.runtime import init_ray

    init_ray(cfg)
    out.mkdir(parents=True, exist_ok=True)
    no_ranking = cfg.model_copy(update={"codecs": cfg.codecs.model_copy(update={"train": []})})
    inputs = prepare_inputs(no_ranking, model, meta, splits, out)
    specs = trial_specs(abl, cfg, inputs)
    blobs, _ = run_trials(cfg, inputs, specs, out, resume)  # (weights, nodes of each point)
    if abl.mechanism == "entropy":
        blobs.update({point_id(row, i): entropy_variant(blobs[point_id(abl.paper, i)], row, inputs)
                      for row in abl.rows[1:] for i in range(abl.seeds)})
    ids = [point_id(row, i) for row in abl.rows for i in range(abl.seeds)]
    frame: pd.DataFrame = measure_points(cfg, inputs, [blobs[p] for p in ids])
    per_trial = frame[frame.point.isin(abl.rows)].groupby(["point", "seed"]).agg(  # rows named by point and seed
        accuracy=("correct", "mean"), payload=("payload_bytes", "mean"))
    return [Trial(row, i, float(per_trial.loc[(row, i), "accuracy"]), float(per_trial.loc[(row, i), "payload"]))
            for row in abl.rows for i in range(abl.seeds)]
