"""Codec benchmark: entropy-coder efficiency and speed, and the rate-accuracy table of a profile.

    python bench/bench_codec.py                          # digits + an untrained ResNet-18 head
    python bench/bench_codec.py --stage outputs/quick/codecs   # split tensors and profile of a run

Part 1 codes real split tensors with AECNN's quantiser at several (k, b) and compares the
payload (entropy-coded symbols only, and the whole stream with its header) with
- the ideal code length under the codec's own static model (target: within 2 %),
- the empirical entropy of the test symbols (histograms per channel and grid cell: a lower
  bound for any static model with that context), the payload of a per-channel model (no
  spatial context) and of the neighbour-context model (`codecs.entropy_context`, the default),
- zlib -9 and zstd -19 on the same symbols (one byte per symbol, and bit-packed),
and times encode and decode of one sample on one thread.
Part 2 prints the profile's rate-accuracy table.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import zstandard

from grl_aecnn.codecs import quantize as q
from grl_aecnn.codecs.aecnn import AECNNCodec
from grl_aecnn.codecs.entropy import ContextModel, SymbolModel, cell_index, pack_raw


def split_tensors(stage: Path | None) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None]:
    """(train, test) split tensors: from a codecs stage folder, else digits through a random head."""
    if stage is not None:
        import json

        from data_pipelines.shards import SplitArray

        imp = stage / "importance.json"
        ranking = np.asarray(json.loads(imp.read_text())["ranking"]) if imp.exists() else None
        train, test = (SplitArray.open(stage / "split_tensors" / name)[:] for name in ("train", "test"))
        return train, test, ranking
    from grl_aecnn.backbone.models import build_model
    from grl_aecnn.backbone.split import split_resnet
    from grl_aecnn.config import DataConfig
    from data_pipelines.datasets import load_splits
    from data_pipelines.split_tensors import extract_split_tensors

    torch.manual_seed(0)
    splits = load_splits(DataConfig(dataset="digits", input_size=32))
    head = split_resnet(build_model("resnet18", 10).eval(), "stem")[0]
    with tempfile.TemporaryDirectory() as tmp:
        train, _ = extract_split_tensors(head, splits.train, np.arange(len(splits.train)), Path(tmp) / "train")
        test, _ = extract_split_tensors(head, splits.test, np.arange(min(300, len(splits.test))), Path(tmp) / "test")
        return train[:], test[:], None


def entropy_bits(symbols: np.ndarray, alphabet: int, grid: tuple[int, int]) -> float:
    """Empirical entropy (bits) of [N, k, H, W] symbols with one histogram per channel and cell."""
    n, k, h, w = symbols.shape
    cells = cell_index(h, w, grid)
    total = 0.0
    for c in range(k):
        for cell in np.unique(cells):
            counts = np.bincount(symbols[:, c].reshape(n, -1)[:, cells == cell].ravel(), minlength=alphabet)
            p = counts[counts > 0] / counts.sum()
            total += -(counts[counts > 0] * np.log2(p)).sum()
    return total


def time_one(fn, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return 1e3 * (time.perf_counter() - start) / reps


def bench_coder(train: torch.Tensor, test: torch.Tensor, ranking: np.ndarray | None,
                points: list[tuple[int, int]]) -> None:
    c = train.shape[1]
    order = ranking if ranking is not None else np.argsort(-train.mean(dim=(0, 2, 3)).numpy(), kind="stable")
    f32 = 4 * np.prod(train.shape[1:])
    print(f"\n## Entropy coder on {len(test)} test split tensors {tuple(train.shape[1:])} "
          f"(float32 = {f32} B), symbol model fitted on {len(train)} training tensors\n")
    print("| k | b | symbols | stream B | payload B | ideal B | payload/ideal | entropy B | per-channel model B "
          "| context model B | context dec ms | zlib-9 B | zstd-19 B | zstd-19 packed B | ratio vs f32 | enc ms | dec ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k, bits in points:
        if k > c:
            continue
        codec = AECNNCodec(tuple(train.shape[1:]), tuple(sorted(int(i) for i in order[:k])), bits, width=4)
        codec.calibrate(train)
        codec.fit_symbols(train)
        model = codec.symbols
        syms = np.stack([codec.quantized(x)[1] for x in test.numpy()])
        streams = [codec.encode(x) for x in test.numpy()]
        payloads = [len(model.encode(s)) for s in syms]
        ideal = np.mean([model.information_bits(s) for s in syms]) / 8
        ent = entropy_bits(syms, q.levels(bits) + 1, model.probs.shape[1:3]) / len(syms) / 8
        train_syms = np.stack([codec.quantized(x)[1] for x in train.numpy()])
        flat = SymbolModel.fit(train_syms, q.levels(bits) + 1, grid=1)
        per_channel = np.mean([len(flat.encode(s)) for s in syms])
        ctx = ContextModel.fit(train_syms, q.levels(bits) + 1, grid=codec.grid)
        ctx_payloads = [ctx.encode(s) for s in syms]
        ctx_dec = time_one(lambda: ctx.decode(ctx_payloads[0], syms[0].shape), 100)
        as_bytes = [s.astype(np.uint8 if bits <= 8 else np.uint16).tobytes() for s in syms]
        zl = np.mean([len(zlib.compress(b, 9)) for b in as_bytes])
        zs = zstandard.ZstdCompressor(level=19)
        zsd = np.mean([len(zs.compress(b)) for b in as_bytes])
        zsp = np.mean([len(zs.compress(pack_raw(s, bits))) for s in syms])
        x0 = test[0].numpy()
        enc = time_one(lambda: codec.encode(x0), 300)
        dec = time_one(lambda: codec.decode(streams[0]), 300)
        print(f"| {k} | {bits} | {syms[0].size} | {np.mean([len(s) for s in streams]):.1f} | {np.mean(payloads):.1f} "
              f"| {ideal:.1f} | {np.mean(payloads) / ideal:.3f} | {ent:.1f} | {per_channel:.1f} "
              f"| {np.mean([len(p) for p in ctx_payloads]):.1f} | {ctx_dec:.3f} | {zl:.1f} | {zsd:.1f} | {zsp:.1f} "
              f"| {f32 / np.mean([len(s) for s in streams]):.0f}x | {enc:.3f} | {dec:.3f} |")
    # one large message: all samples' symbols of the widest point in one stream (coder overhead amortised)
    k, bits = max(points)
    k = min(k, c)
    codec = AECNNCodec(tuple(train.shape[1:]), tuple(range(k)), bits, width=4)
    codec.calibrate(train)
    codec.fit_symbols(train)
    syms = np.concatenate([codec.quantized(x)[1] for x in test.numpy()], axis=0)
    tiled = SymbolModel(np.tile(codec.symbols.probs, (len(test), 1, 1, 1)))
    big = len(tiled.encode(syms))
    print(f"\nOne stream of all {len(test)} samples (k={k}, b={bits}, {syms.size} symbols): payload {big} B, "
          f"ideal {tiled.information_bits(syms) / 8:.1f} B, ratio {big / (tiled.information_bits(syms) / 8):.4f}")


def bench_profile(path: Path) -> None:
    from grl_aecnn.profile import load_profile

    profile = load_profile(path)
    bb = profile.backbone
    clean = bb.clean_accuracy
    print(f"\n## Rate-accuracy: {bb.arch} on {bb.dataset}, {bb.input_size} px, split {bb.split} {bb.split_shape}, "
          f"clean top-1 {100 * clean:.2f} %\n")
    print("| point | payload B | channel uses | ratio vs float32 | top-1 % | loss (points) | device MFLOPs "
          "| server MFLOPs | enc ms | dec ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in sorted(profile.points, key=lambda p: (p.codec, -(p.compression_ratio or 0), p.id)):
        ratio = f"{p.compression_ratio:.0f}x" if p.compression_ratio else "-"
        payload = f"{p.payload_bytes:.1f}" if p.payload_bytes is not None else "-"
        uses = f"{p.channel_uses:.0f}" if p.channel_uses else "-"
        print(f"| {p.id} | {payload} | {uses} | {ratio} | {100 * p.accuracy:.2f} | {100 * (clean - p.accuracy):+.2f} "
              f"| {p.device_flops / 1e6:.1f} | {p.server_flops / 1e6:.1f} | {p.encode_ms:.3f} | {p.decode_ms:.3f} |")
        if p.accuracy_vs_snr:
            print("|  ^ vs SNR | " + ", ".join(f"{s.snr_db:g} dB: {100 * s.accuracy:.1f} %" for s in p.accuracy_vs_snr)
                  + " | | | | | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", type=Path, help="a codecs stage folder (split tensors, importance, profile)")
    parser.add_argument("--profile", type=Path, help="a profile.json (default: <stage>/profile.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train, test, ranking = split_tensors(args.stage)
    bench_coder(train, test, ranking, [(1, 2), (2, 2), (2, 4), (4, 2), (4, 4), (8, 2), (8, 4), (64, 4)])
    profile = args.profile or (args.stage / "profile.json" if args.stage else None)
    if profile is not None and profile.exists():
        bench_profile(profile)


if __name__ == "__main__":
    main()
