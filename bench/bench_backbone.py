"""Backbone throughput on this machine (training and inference images/s) and, for every CNN
family, the split tensor and FLOPs at each split point with what each codec adds on the device.

Used to size the quick preset (train_subset x epochs / images per second = training time) and
for the README's table of device costs (``--flops-only``: counts, no timing).

    python bench/bench_backbone.py --arch resnet18 --size 32 --threads 2
    python bench/bench_backbone.py --arch all --size 32 --flops-only
"""

from __future__ import annotations

import argparse
import time

import torch

from grl_aecnn.backbone.models import ARCHS, build_model
from grl_aecnn.backbone.split import split_info
from grl_aecnn.backbone.split_points import split_points
from grl_aecnn.codecs.store import build_codec

# the quick preset's smallest BottleNet++ and DeepJSCC points (AECNN's encoder has no multiply-adds)
ENCODERS = {
    "bottlenetpp-c2": {"codec": "bottlenetpp", "channels": 2, "stride": 2, "width": 64, "channel": "awgn",
                       "max_noise": 0.1, "grid": 8},
    "deepjscc-c2": {"codec": "deepjscc", "channels": 2, "stride": 2, "width": 64, "train_snr_db": 10.0},
}


def images_per_s(step, batch: int, repeats: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return batch * repeats / (time.perf_counter() - start)


def throughput(arch: str, size: int, batch: int, repeats: int) -> None:
    model = build_model(arch, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))

    def train_step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.no_grad():
            model(x)

    model.train()
    train = images_per_s(train_step, batch, repeats)
    model.eval()
    infer = images_per_s(infer_step, batch, repeats)
    print(f"{arch} {size}px batch {batch}, {torch.get_num_threads()} thread(s): "
          f"train {train:.0f} img/s, inference {infer:.0f} img/s, train/inference {infer / train:.1f}x")


def flops_table(arch: str, size: int) -> None:
    """Split tensor, head/tail MFLOPs and the device MFLOPs of each codec's encoder, per split point."""
    model = build_model(arch, 10).eval()
    print(f"{arch} {size}px: split, tensor, float32 bytes, head / tail MFLOP, encoder MFLOP "
          f"(aecnn 0, {', '.join(ENCODERS)})")
    for split in split_points(arch):
        info = split_info(model, split, size)
        encoders = [build_codec({"id": name, **spec}, info.shape).eval().flops()[0] / 1e6
                    for name, spec in ENCODERS.items()]
        print(f"  {split:7s} {str(info.shape):15s} {info.float32_bytes:8d} B  head {info.head_flops / 1e6:8.2f}  "
              f"tail {info.tail_flops / 1e6:8.2f}  encoders " + " / ".join(f"{e:.2f}" for e in encoders))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", choices=[*ARCHS, "all"])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs, time nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for arch in ARCHS if args.arch == "all" else [args.arch]:
        if not args.flops_only:
            throughput(arch, args.size, args.batch, args.repeats)
        flops_table(arch, args.size)


if __name__ == "__main__":
    main()
