"""Seeds of the codec sweep: every trial's random numbers derive from the config seed, the point
id and the seed index alone (``np.random.SeedSequence``), so a trial trains the same whatever
the trial order, the worker it lands on, the concurrency or a resume."""

from __future__ import annotations

import zlib

import numpy as np

from grl_aecnn.codecs.base import Spec


def spec_seed(spec: Spec) -> int:
    """The seed index of a trial's spec (0 for specs written before seeds were a sweep dimension)."""
    return int(spec.get("seed", 0))


def trial_id(spec: Spec) -> str:
    """A trial's name and file stem: the point id, with ``-seed<i>`` for every seed but the first."""
    return spec["id"] if spec_seed(spec) == 0 else f"{spec['id']}-seed{spec_seed(spec)}"


def with_seeds(specs: list[Spec], seeds: int) -> list[Spec]:
    """Each point's spec once per seed index, seed-major (every point's first seed trains first)."""
    return [{**spec, "seed": i} for i in range(seeds) for spec in specs]


def trial_seeds(config_seed: int, spec: Spec) -> tuple[int, int]:
    """(weight-initialisation seed, training seed) of a trial, 32-bit each. Specs with the same
    ``seed_group`` (an ablation's rows, default: the point id) share them seed index by seed index."""
    entropy = [config_seed, zlib.crc32(spec.get("seed_group", spec["id"]).encode()), spec_seed(spec)]
    init, train = np.random.SeedSequence(entropy).generate_state(2)
    return int(init), int(train)
