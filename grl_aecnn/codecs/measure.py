"""Measure trained codecs on real bitstreams: the Ray Data actor that the sweep runs on the test split.

For every streamed sample and every digital point it encodes the split tensor to bytes,
decodes the bytes, rebuilds the tensor on the "server" and classifies it, so payload sizes are
counted from the bytes and accuracy comes from what a receiver would get. Timings are wall time
per sample on one thread: ``encode_ms`` covers the device side (encoder network, quantiser,
entropy coder, header), ``decode_ms`` the entropy decoder plus the server's decoder network
(run batched; its time is split evenly over the batch).

Samples not streamed (``codecs.stream_samples``) take the codec's batched symbol path, the one
the ONNX export runs (``device_symbols`` -> ``server_input``): the same symbols without the
lossless entropy coder, so the whole test split can be scored at the cost of the decoder and
tail alone. Their rows carry accuracy only (bytes and times are NaN).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from grl_aecnn.backbone.split import split_resnet
from grl_aecnn.codecs.base import Codec, Spec
from grl_aecnn.codecs.seeds import spec_seed
from grl_aecnn.codecs.store import load_codec

CLEAN = "clean"


def _resolve(value: Any) -> Any:
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


class CodecMeasurer:
    """Ray Data callable class: batch of split tensors in, one row per (sample, point, seed[, SNR]) out."""

    def __init__(self, backbone: Any, codecs: Any, eval_snr_db: list[float], seed: int = 0):
        from grl_aecnn.backbone.models import build_model

        torch.set_num_threads(1)
        backbone, codecs = _resolve(backbone), _resolve(codecs)
        model = build_model(backbone["arch"], backbone["num_classes"])
        model.load_state_dict(backbone["state"])
        _, self.tail = split_resnet(model.eval(), backbone["split"])
        self.base_tail = {k: v.clone() for k, v in self.tail.state_dict().items()}
        self.points = []
        for blob in codecs:
            codec, spec = load_codec(blob, self.tail)
            self.points.append((codec, spec, {k: v.clone() for k, v in self.tail.state_dict().items()}))
            self.tail.load_state_dict(self.base_tail)
        self.eval_snr_db, self.seed = list(eval_snr_db), seed

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        z = np.array(batch["tensor"], dtype=np.float32)  # a writable copy for torch
        labels = torch.tensor(batch["label"], dtype=torch.long)
        stream = np.asarray(batch["stream"], dtype=bool)
        rows: list[tuple[str, int, float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.tail.load_state_dict(self.base_tail)
        n = len(z)
        zeros = np.zeros(n)
        rows.append((CLEAN, 0, np.nan, self._correct(torch.from_numpy(z), labels), zeros, zeros, zeros))
        for codec, spec, tail_state in self.points:
            self.tail.load_state_dict(tail_state)
            measured = (self._analog(codec, spec, z, labels, int(batch["index"][0])) if codec.analog
                        else self._digital(codec, spec, z, labels, stream))
            rows += [(r[0], spec_seed(spec), *r[1:]) for r in measured]
        return {
            "index": np.tile(np.asarray(batch["index"], dtype=np.int64), len(rows)),
            "point": np.concatenate([np.full(n, r[0], dtype=object) for r in rows]),
            "seed": np.concatenate([np.full(n, r[1], dtype=np.int64) for r in rows]),
            "snr_db": np.concatenate([np.full(n, r[2]) for r in rows]),
            "correct": np.concatenate([r[3] for r in rows]).astype(np.int8),
            "payload_bytes": np.concatenate([r[4] for r in rows]).astype(np.float64),
            "encode_ms": np.concatenate([r[5] for r in rows]),
            "decode_ms": np.concatenate([r[6] for r in rows]),
        }

    def _correct(self, rec: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        return (self.tail(rec).argmax(1) == labels).numpy()

    def _digital(self, codec: Codec, spec: Spec, z: np.ndarray, labels: torch.Tensor,
                 stream: np.ndarray) -> list[tuple]:
        rest = ~stream
        unstreamed = None
        if rest.any():  # one model's variants differ only in the lossless coding: one pass serves all
            symbols = codec.device_symbols(torch.from_numpy(z[rest]))
            unstreamed = self._correct(codec.restore(codec.server_input(symbols)), labels[torch.from_numpy(rest)])
        out = []
        for variant in codec.variants(spec):
            sizes, enc_ms, dec_ms = (np.full(len(z), np.nan) for _ in range(3))
            correct = np.zeros(len(z), dtype=bool)
            if unstreamed is not None:
                correct[rest] = unstreamed
            if stream.any():
                decoded = []
                for i in np.flatnonzero(stream):
                    t0 = time.perf_counter()
                    data = codec.encode(z[i], **variant.encode)
                    t1 = time.perf_counter()
                    decoded.append(codec.decode(data))
                    t2 = time.perf_counter()
                    sizes[i], enc_ms[i], dec_ms[i] = len(data), 1e3 * (t1 - t0), 1e3 * (t2 - t1)
                t0 = time.perf_counter()
                rec = codec.restore(torch.from_numpy(np.stack(decoded)))
                dec_ms[stream] += 1e3 * (time.perf_counter() - t0) / len(decoded)
                correct[stream] = self._correct(rec, labels[torch.from_numpy(stream)])
            out.append((variant.id, np.nan, correct, sizes, enc_ms, dec_ms))
        return out

    def _analog(self, codec: Codec, spec: Spec, z: np.ndarray, labels: torch.Tensor, first: int) -> list[tuple]:
        zt = torch.from_numpy(z)
        out = []
        for snr in self.eval_snr_db:
            gen = torch.Generator().manual_seed(hash((self.seed, spec_seed(spec), first, float(snr))) & 0x7FFFFFFF)
            t0 = time.perf_counter()
            y = codec.transmit(zt, snr, gen)
            t1 = time.perf_counter()
            rec = codec.restore(y)
            t2 = time.perf_counter()
            ms = np.full(len(z), 1e3 / len(z))
            out.append((spec["id"], float(snr), self._correct(rec, labels), np.zeros(len(z)), ms * (t1 - t0),
                        ms * (t2 - t1)))
        return out
