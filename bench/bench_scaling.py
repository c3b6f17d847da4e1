"""Scaling with worker nodes: PPO sampling env steps/s and codec trials per minute on 1 vs 2 nodes.

Each measurement starts a loopback cluster (`ray.cluster_utils.Cluster`: a head with no CPUs
for tasks and N worker nodes of --cpus-per-node CPUs, each its own raylet and object store),
so work can only run on the worker nodes. Sampling uses one RLlib env runner per worker CPU;
the codec sweep runs the tiny preset's points (digits, random ResNet-18) with one trial per
worker CPU. On one machine the nodes share its cores: the ratio shows that work spreads over
nodes, not what separate machines would give. Ratios come from this one run.

    OMP_NUM_THREADS=1 python bench/bench_scaling.py [--nodes 1 2] [--steps 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import tempfile
import time
from typing import Iterator

from bench_policy import DEFAULT_PROFILE, sampling_steps_per_s

from grl_aecnn.config import ExperimentConfig, load_config
from grl_aecnn.runtime import configure_process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def loopback_cluster(nodes: int, cpus_per_node: int) -> Iterator[str]:
    """A connected head (0 CPUs) + `nodes` worker nodes on this machine; yields its address."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "gcs_server_port": _free_port(), "include_dashboard": False, "object_store_memory": 200 * 2**20})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=cpus_per_node, object_store_memory=200 * 2**20)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster.address
    finally:
        ray.shutdown()
        cluster.shutdown()


def sampling(cfg: ExperimentConfig, runners: int, steps: int) -> float:
    """Env steps/s of `runners` RLlib env runners (policy inference included)."""
    from ray.tune.registry import register_env

    from grl_aecnn.profile import load_profile
    from grl_aecnn.rl.train import ENV_NAME, PolicyRun, env_config
    from grl_aecnn.rl.vector_env import make_vector_env

    register_env(ENV_NAME, make_vector_env)
    env_cfg = env_config(cfg, load_profile(DEFAULT_PROFILE), PolicyRun("grl-aecnn", ("aecnn",)))
    return sampling_steps_per_s(cfg, env_cfg, runners, steps)


def codec_trials(cfg: ExperimentConfig, concurrent: int) -> tuple[float, int, int]:
    """(codec trials completed per minute, trials, distinct nodes they trained on) of the tiny
    preset's points."""
    import torch

    from data_pipelines.datasets import load_splits
    from grl_aecnn.backbone.models import build_model
    from grl_aecnn.codecs.store import point_specs
    from grl_aecnn.codecs.sweep import prepare_inputs, run_trials

    cfg = cfg.model_copy(deep=True)
    cfg.codecs.max_concurrent_trials = concurrent
    torch.manual_seed(0)
    splits = load_splits(cfg.data)
    model = build_model("resnet18", splits.num_classes).eval()
    meta = {"arch": "resnet18", "num_classes": splits.num_classes, "dataset": splits.name}
    stage = cfg.stage_dir("codecs")
    inputs = prepare_inputs(cfg, model, meta, splits, stage)
    specs = point_specs(cfg.codecs, inputs.importance, inputs.shape[0])
    start = time.perf_counter()
    _, nodes = run_trials(cfg, inputs, specs, stage, resume=False)
    used = {node for point_nodes in nodes.values() for node in point_nodes}
    return 60 * len(specs) / (time.perf_counter() - start), len(specs), len(used)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2000, help="env steps per sampling measurement")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the tiny preset (e.g. codecs.train_samples=128)")
    args = parser.parse_args()
    configure_process()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nodes in args.nodes:
            workers = nodes * args.cpus_per_node
            cfg = load_config("tiny", [f"output_dir={tmp}/n{nodes}", f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db",
                                       "codecs.cpus_per_trial=1", *args.overrides])
            with loopback_cluster(nodes, args.cpus_per_node):
                steps_s = sampling(cfg, workers, args.steps)
                trials_min, trials, used = codec_trials(cfg, workers)
            rows.append((nodes, steps_s, trials_min))
            print(f"{nodes} worker node(s): {steps_s:,.0f} env steps/s ({workers} env runners), "
                  f"{trials_min:.1f} codec trials/min ({trials} trials, {workers} at a time, on {used} node(s))", flush=True)
    base = rows[0]
    for nodes, steps_s, trials_min in rows[1:]:
        print(f"{nodes} vs {base[0]} node(s): sampling x{steps_s / base[1]:.2f}, codec trials x{trials_min / base[2]:.2f} "
              "(nodes share this machine's cores)")


if __name__ == "__main__":
    main()
