"""Backbone throughput on this machine: training and inference images/s, FLOPs per split point.

Used to size the quick preset (train_subset x epochs / images per second = training time).

    python bench/bench_backbone.py --arch resnet18 --size 32 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from grl_aecnn.backbone.models import build_model
from grl_aecnn.backbone.models import ARCHS
from grl_aecnn.backbone.split import split_info
from grl_aecnn.backbone.split_points import split_points


def images_per_s(step, batch: int, repeats: int) -> float:
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", choices=list(ARCHS))
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args.arch, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))

    def train_step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.no_grad():
            model(x)

    model.train()
    train = images_per_s(train_step, args.batch, args.repeats)
    model.eval()
    infer = images_per_s(infer_step, args.batch, args.repeats)
    print(f"{args.arch} {args.size}px batch {args.batch}, {args.threads} thread(s): "
          f"train {train:.0f} img/s, inference {infer:.0f} img/s, train/inference {infer / train:.1f}x")
    for split in split_points(args.arch):
        info = split_info(model, split, args.size)
        print(f"  {split:7s} tensor {str(info.shape):15s} {info.float32_bytes:8d} B  "
              f"head {info.head_flops / 1e6:8.1f} MFLOP  tail {info.tail_flops / 1e6:8.1f} MFLOP")


if __name__ == "__main__":
    main()
