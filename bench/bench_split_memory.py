"""Peak memory of the codec stage against the number of split tensors (paper shape 64x56x56).

Runs the real stage (`run_sweep`: head -> shards, channel ranking, one Tune trial, Ray Data
measurement) once per size, each in a fresh process, on generated 224 px images through a
random ResNet-18 (its stem split is the paper's 64x56x56). Training is a fixed number of batches
and the distillation teacher is off, so work that grows with the set is the head, the shard
writes and the ranking pass; memory must not grow with it. Prints the peak RSS of the driver,
the Tune trial process and the other Ray workers for each size, and the growth (one run).
Needs about 0.8 MB of disk per tensor (13 GB for 16k) in --workdir.

    python bench/bench_split_memory.py --sizes 2000 16000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from data_pipelines.datasets import ImageSplit

SIDE = 224
FIXED = 16  # val and test tensors, and training batches of this many rows x 4


class GeneratedImages(ImageSplit):
    """`n` reproducible random 224 px images, labelled by parity."""

    def __init__(self, n: int, offset: int) -> None:
        super().__init__(np.arange(n) % 2, augment=False)
        self.offset = offset

    def image_uint8(self, index: int) -> torch.Tensor:
        rng = np.random.default_rng(self.offset + index)
        return torch.from_numpy(rng.integers(0, 256, (3, SIDE, SIDE), dtype=np.uint8))


def _is_trial(title: str) -> bool:
    return "ImplicitFunc" in title or "_trial" in title


def _peak_hwm(pids: dict[int, tuple[str, int]], stop: threading.Event) -> None:
    """Peak RSS (VmHWM) of every process below this one, by process title, until `stop`."""
    import psutil

    me = psutil.Process()
    while not stop.is_set():
        for proc in me.children(recursive=True):
            try:
                title = " ".join(proc.cmdline())[:80]
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except (psutil.Error, OSError):
                continue
            hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0)
            seen, peak = pids.get(proc.pid, ("", 0))
            # A Ray worker's title changes as it is reused (IDLE after the trial): keep the trial's.
            pids[proc.pid] = (seen if _is_trial(seen) else title, max(hwm, peak))
        stop.wait(0.2)


def one_size(n: int, workdir: Path) -> dict[str, float]:
    """Run the codec stage on `n` training tensors; peak RSS in MiB of each kind of process."""
    from data_pipelines.datasets import DatasetSplits
    from grl_aecnn.backbone.models import build_model
    from grl_aecnn.codecs.sweep import run_sweep
    from grl_aecnn.config import load_config

    steps = 4 * FIXED / n  # epochs giving 4 batches of FIXED rows in every step
    cfg = load_config("quick", [
        "name=bench-split", f"output_dir={workdir}", f"tracking.tracking_uri=sqlite:///{workdir}/mlflow.db",
        f"data.input_size={SIDE}", "codecs.split=stem", "codecs.train=[aecnn]", "codecs.aecnn.kept_channels=[2]",
        "codecs.aecnn.bits=[8]", f"codecs.train_samples={n}", f"codecs.val_samples={FIXED}",
        f"codecs.test_samples={FIXED}", f"codecs.batch_size={FIXED}", "codecs.distillation=0",
        f"codecs.schedule={{attention: {steps}, feature: {steps}, codec: {steps}, joint: 0}}",
        "codecs.max_concurrent_trials=1", "codecs.cpus_per_trial=1", "codecs.measure_workers=1",
        "ray.num_cpus=2"])
    torch.manual_seed(0)
    model = build_model("resnet18", 2).eval()
    splits = DatasetSplits("generated", GeneratedImages(n, 0), GeneratedImages(FIXED, n),
                           GeneratedImages(FIXED, n + FIXED), 2, ["even", "odd"])
    pids: dict[int, tuple[str, int]] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_peak_hwm, args=(pids, stop), daemon=True)
    watcher.start()
    start = time.perf_counter()
    run_sweep(cfg, False, model, {"arch": "resnet18", "num_classes": 2, "dataset": "generated"}, splits)
    seconds = time.perf_counter() - start
    stop.set()
    watcher.join()
    is_trial = {pid: _is_trial(title) for pid, (title, _) in pids.items()}
    trial = [kb for pid, (_, kb) in pids.items() if is_trial[pid]]
    other = [kb for pid, (title, kb) in pids.items() if title.startswith("ray::") and not is_trial[pid]]
    return {"n": n, "seconds": seconds, "driver_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "trial_mib": max(trial, default=0) / 1024, "other_workers_mib": max(other, default=0) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 16000])
    parser.add_argument("--workdir", type=Path, default=None, help="where the shards go (default: a temp folder)")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.workdir)))
        return
    rows = []
    print(f"{'tensors':>8} {'seconds':>8} {'driver MiB':>11} {'trial MiB':>10} {'other workers MiB':>18}", flush=True)
    for n in args.sizes:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            done = subprocess.run([sys.executable, __file__, "--one", str(n), "--workdir", tmp],
                                  capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"size {n} failed:\n{done.stderr[-3000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"{r['n']:>8} {r['seconds']:>8.1f} {r['driver_mib']:>11.0f} {r['trial_mib']:>10.0f} "
              f"{r['other_workers_mib']:>18.0f}", flush=True)
    first, last = rows[0], rows[-1]
    for key in ("driver_mib", "trial_mib", "other_workers_mib"):
        growth = 100 * (last[key] / max(first[key], 1e-9) - 1)
        print(f"{key[:-4]}: {growth:+.1f} % from {first['n']} to {last['n']} tensors "
              f"({'under' if growth < 10 else 'NOT under'} the 10 % bound)")


if __name__ == "__main__":
    main()
