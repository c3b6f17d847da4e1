"""Split tensors: run the frozen backbone head once, then measure codecs on them with Ray Data.

The head is the same for every codec, so its outputs are computed once, batch by batch, into
shards in the stage folder (`data_pipelines.shards`); Tune trials read them per batch.
Measuring every trained codec on the test split is a Ray Data `map_batches` over those shards
with a pool of actors, so it scales out to a cluster by raising the pool size, and no process
holds the whole test set.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from data_pipelines.datasets import ImageSplit
from data_pipelines.shards import ShardWriter, SplitArray
from data_pipelines.transforms import normalize, to_rgb


@torch.no_grad()
def extract_split_tensors(head: nn.Module, split: ImageSplit, indices: np.ndarray, folder: Path,
                          batch_size: int = 256) -> tuple[SplitArray, torch.Tensor]:
    """Head outputs [n, C, H, W] float32 of the given items (no augmentation), written to
    shards in `folder` one batch at a time, and their labels [n]."""
    head.eval()
    writer = ShardWriter(folder)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        images = torch.stack([normalize(to_rgb(split.image_uint8(int(i)))) for i in chunk])
        writer.append(head(images).numpy())
    return writer.close(), torch.as_tensor(split.labels[indices], dtype=torch.long)


def png_sizes(split: ImageSplit, indices: np.ndarray) -> np.ndarray:
    """Bytes of each raw input image as a PNG (the raw-image reference point's payload)."""
    from PIL import Image

    sizes = []
    for i in indices:
        buf = io.BytesIO()
        Image.fromarray(split.raw_image(int(i))).save(buf, format="PNG", optimize=True)
        sizes.append(buf.tell())
    return np.asarray(sizes, dtype=np.int64)


def _read_rows(batch: dict[str, np.ndarray], z: SplitArray, labels: np.ndarray,
               stream: np.ndarray) -> dict[str, np.ndarray]:
    index = batch["data"]
    return {"index": index, "tensor": z[index].numpy(), "label": labels[index], "stream": stream[index]}


def split_tensor_dataset(z: SplitArray, labels: np.ndarray, blocks: int, stream: np.ndarray | None = None) -> "Any":
    """A Ray Dataset with one row per sample: index, tensor [C, H, W] float32, label, and whether
    the sample is coded through real bitstreams (``stream``, default all); the tensors are read
    from the shards by the Ray Data tasks, a block at a time."""
    import ray.data

    # The row indices are made in the driver (`from_numpy`, no read task): a read task would
    # hold a CPU the measuring actors wait for, and with as many actors as CPUs the streaming
    # executor backpressures it forever (seen on 2 CPUs with 2 actors).
    ds = ray.data.from_numpy(np.array_split(np.arange(len(z)), max(1, min(blocks, len(z)))))
    stream = np.ones(len(z), dtype=bool) if stream is None else np.asarray(stream, dtype=bool)
    return ds.map_batches(_read_rows, fn_kwargs={"z": z, "labels": np.asarray(labels), "stream": stream},
                          batch_format="numpy")


def measure_dataset(ds: "Any", udf: type, constructor_kwargs: dict[str, Any], workers: int,
                    batch_size: int, cpus_per_worker: float = 1.0) -> "Any":
    """Run a measuring actor class over the dataset; returns its output rows as a pandas frame."""
    from ray.data import ActorPoolStrategy

    out = ds.map_batches(udf, fn_constructor_kwargs=constructor_kwargs, batch_size=batch_size,
                         batch_format="numpy", compute=ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker)
    frame = out.to_pandas()
    # Arrow-backed columns treat NaN as a value, not as missing: hand back plain NumPy columns.
    return type(frame)({name: frame[name].to_numpy() for name in frame.columns})
