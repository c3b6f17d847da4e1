"""Export benchmarks: ``mlflow.pyfunc.load_model`` time of a GRL policy, and the exported
(ONNX) policy's decision time per slot.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_export.py [--policy-dir DIR] [--slots 2000]

- load: a fresh Python process that has already imported mlflow and torch (as a serving
  process has) times ``mlflow.pyfunc.load_model("models:/<name>/1")`` of a registered policy
  from a local sqlite store (target < 2 s), and the load of the downloaded model folder alone
  (``suppress_warnings=True`` skips MLflow's scan of the installed packages); the cold figure
  adds the imports.
- decision: the ONNX file of ``grl-aecnn export`` on onnxruntime with one thread, one
  observation per call, at 14x2 padded to 32x4 (the quick preset's scenario; target < 0.5 ms
  median).

``--policy-dir``: an exported policy folder (``policies/<name>`` of a run); without it, a
GCN of the quick preset's size with random weights (the timing does not depend on them).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import onnxruntime as ort
import torch

from grl_aecnn.config import load_config
from grl_aecnn.export import export_policy
from grl_aecnn.models.logged import log_policy_model
from grl_aecnn.models.policy_net import OBS_KEYS
from grl_aecnn.profile import load_profile
from grl_aecnn.runtime import configure_process
from grl_aecnn.sim.env import MECEnv

PROFILE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "profile_small.json"
LOAD = """
import sys, time
t0 = time.perf_counter()
import mlflow, torch
t1 = time.perf_counter()
mlflow.set_tracking_uri(sys.argv[1])
if sys.argv[3] == "local":  # the model folder already on disk, MLflow's environment check skipped
    path = mlflow.artifacts.download_artifacts(sys.argv[2])
    t1 = time.perf_counter()
    mlflow.pyfunc.load_model(path, suppress_warnings=True)
else:
    mlflow.pyfunc.load_model(sys.argv[2])
t2 = time.perf_counter()
print(t2 - t1, t2 - t0)
"""


def random_policy(cfg, env: MECEnv, dest: Path) -> Path:
    """A quick-preset GCN with random weights, exported as the policies stage does."""
    from grl_aecnn.rl.policy import export_policy as export_folder
    from grl_aecnn.rl.policy import module_dir
    from grl_aecnn.rl.train import module_spec

    torch.manual_seed(0)
    spec = module_spec(cfg.policy.ppo)
    module = spec.module_class(observation_space=env.observation_space, action_space=env.action_space,
                               model_config=spec.model_config)
    module.save_to_path(module_dir(dest / "checkpoint"))
    return export_folder(dest / "checkpoint", dest / "grl-aecnn", {"name": "grl-aecnn", "codecs": ["aecnn"]})


def load_seconds(store: str, uri: str, mode: str, repeats: int) -> tuple[float, float]:
    """Median (load_model, cold process incl. imports) seconds over ``repeats`` fresh processes."""
    runs = [subprocess.run([sys.executable, "-c", LOAD, store, uri, mode], capture_output=True, text=True,
                           check=True) for _ in range(repeats)]
    figures = [tuple(float(x) for x in r.stdout.split()) for r in runs]
    return statistics.median(f[0] for f in figures), statistics.median(f[1] for f in figures)


def decision_ms(onnx_file: Path, observations: list[dict[str, np.ndarray]]) -> tuple[float, float]:
    """Median and 95th percentile of one ``session.run`` per observation, one thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    feeds = [{k: obs[k][None].astype(np.float32) for k in OBS_KEYS} for obs in observations]
    for feed in feeds[:50]:
        session.run(None, feed)
    times = []
    for feed in feeds:
        start = time.perf_counter()
        session.run(None, feed)
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times), float(np.percentile(times, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy-dir", type=Path, default=None)
    parser.add_argument("--slots", type=int, default=2000, help="observations timed for the decision time")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes timed for the load time")
    args = parser.parse_args()
    configure_process()
    torch.set_num_threads(1)
    cfg = load_config("quick", ["name=bench"])
    env = MECEnv(cfg.scenario.model_copy(update={"codecs": ["aecnn"]}), load_profile(PROFILE), ["aecnn"])
    sc = cfg.scenario
    print(f"scenario {sc.num_devices}x{sc.num_servers} padded to {sc.max_devices}x{sc.max_servers}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = args.policy_dir or random_policy(cfg, env, root)
        obs, _ = env.reset(seed=0)
        observed = []
        for slot in range(args.slots):
            observed.append(obs)
            obs, _, _, truncated, _ = env.step(np.zeros(env.action_space.shape, np.int64))
            if truncated:
                obs, _ = env.reset(seed=slot)
        store = f"sqlite:///{root / 'mlflow.db'}"
        mlflow.set_tracking_uri(store)
        with mlflow.start_run():
            info = log_policy_model(cfg, "grl-aecnn", folder, {k: v[None] for k, v in observed[0].items()}, {})
        uri = f"models:/bench.grl-aecnn/{info.registered_model_version}"
        load, cold = load_seconds(store, uri, "registry", args.repeats)
        local, _ = load_seconds(store, uri, "local", args.repeats)
        print(f"mlflow.pyfunc.load_model({uri!r}): {load:.3f} s (target < 2 s; includes opening the sqlite "
              f"registry and MLflow's installed-package check); cold process with `import mlflow, torch`: "
              f"{cold:.2f} s")
        print(f"mlflow.pyfunc.load_model(<downloaded model folder>, suppress_warnings=True): {local:.3f} s")
        export_policy(folder, {k: v[None] for k, v in observed[0].items()}, root / "policy.onnx")
        median, p95 = decision_ms(root / "policy.onnx", observed)
        print(f"exported policy decision per slot, onnxruntime 1 thread: median {median:.3f} ms, "
              f"p95 {p95:.3f} ms over {len(observed)} slots (target < 0.5 ms median)")


if __name__ == "__main__":
    main()
