"""Image-classification datasets with deterministic, stratified train/val/test splits.

``load_splits(data_cfg)`` is the one entry point. Every split yields
``(float32 [3, S, S] normalised, int label)`` with ``S = data_cfg.input_size`` and offers
``raw_image(i)`` (``S x S x 3`` uint8, before normalisation) for the codecs' raw-image
reference. Small datasets (Fashion-MNIST, digits) are held as uint8 tensors resized once
in batches; file datasets (Caltech-101, ImageFolder) decode and resize per item.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import torch
from torch.utils.data import Dataset

from data_pipelines.transforms import normalize, random_crop_flip, resize_uint8, to_hwc_numpy, to_rgb
from grl_aecnn.config import DataConfig

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                       "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# Separate random streams per decision, so changing one subset size leaves the others alone.
_VAL, _TEST, _TRAIN_SUB, _VAL_SUB, _TEST_SUB = range(5)


class DatasetNotFound(FileNotFoundError):
    """The dataset files are not where the config points; the message says how to get them."""


# -- splits ------------------------------------------------------------------------------

def stratified_subset(labels: np.ndarray, n: int, seed: int, stream: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` items whose class mix matches ``labels`` (largest-remainder quotas)."""
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, stream])
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    take = np.floor(quota).astype(int)
    order = np.lexsort((np.arange(len(classes)), -(quota - take)))  # biggest remainder first
    take[order[: n - take.sum()]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def stratified_split(labels: np.ndarray, fraction: float, seed: int, stream: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)`` index arrays; ``held_out`` is a stratified ``fraction`` of the items."""
    held = stratified_subset(labels, round(fraction * len(labels)), seed, stream)
    return np.setdiff1d(np.arange(len(labels)), held), held


def _limit(indices: np.ndarray, labels: np.ndarray, n: int | None, seed: int, stream: int) -> np.ndarray:
    if n is None:
        return indices
    return indices[stratified_subset(labels[indices], n, seed, stream)]


# -- datasets ----------------------------------------------------------------------------

class ImageSplit(Dataset):
    """One split: uint8 images in, normalised float tensors out; ``augment`` only for training."""

    labels: np.ndarray

    def __init__(self, labels: np.ndarray, augment: bool) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def image_uint8(self, index: int) -> torch.Tensor:
        """uint8 ``[C, S, S]`` (C is 1 or 3) at input size."""
        raise NotImplementedError

    def raw_image(self, index: int) -> np.ndarray:
        """``S x S x 3`` uint8 at input size, before augmentation and normalisation."""
        return to_hwc_numpy(self.image_uint8(index))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.image_uint8(index)
        if self.augment:
            image = random_crop_flip(image)
        return normalize(to_rgb(image)), int(self.labels[index])


class TensorImages(ImageSplit):
    """A split held in memory as a uint8 tensor ``[N, C, S, S]`` (``.images``)."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray, augment: bool = False) -> None:
        super().__init__(labels, augment)
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(self.labels):
            raise ValueError(f"expected uint8 [N, C, H, W] images matching {len(self.labels)} labels")
        self.images = images

    def image_uint8(self, index: int) -> torch.Tensor:
        return self.images[index]


class FileImages(ImageSplit):
    """A split over a torchvision file dataset whose items are ``(PIL image, label)``."""

    def __init__(self, base: Dataset, indices: np.ndarray, labels: np.ndarray, size: int,
                 augment: bool = False) -> None:
        super().__init__(labels[indices], augment)
        self.base, self.indices, self.size = base, np.asarray(indices), size

    def image_uint8(self, index: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        pil = self.base[int(self.indices[index])][0].convert("RGB")
        image = TF.center_crop(TF.resize(TF.pil_to_tensor(pil), self.size, antialias=True), self.size)
        return image.contiguous()


@dataclass
class DatasetSplits:
    name: str
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    num_classes: int
    class_names: list[str]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


# -- sources -----------------------------------------------------------------------------

def resolve_data_dir(data_cfg: DataConfig) -> Path:
    """Absolute dataset root: ``data_dir``, else the dataset's default location.

    Resolved in the driver, so Ray workers (other cwd, other environment) see the same path.
    """
    if data_cfg.data_dir:
        return Path(data_cfg.data_dir).expanduser().resolve()
    if data_cfg.dataset == "fashion-mnist":
        return Path(os.environ.get("FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    return (Path.cwd() / "data").resolve()


def _idx_path(folder: Path, stem: str) -> Path:
    """The IDX file ``stem.gz`` or ``stem`` in folder; DatasetNotFound when neither is a file."""
    for path in (folder / f"{stem}.gz", folder / stem):
        if path.is_file():
            return path
    raise DatasetNotFound(
        f"Fashion-MNIST file {stem}(.gz) not found in {folder}. Install it with "
        "`apt-get install dataset-fashion-mnist` (puts it in /usr/share/datasets/fashion-mnist), "
        "or point to a folder holding the IDX files with `--set data.data_dir=/path`."
    )


def _read_idx(folder: Path, stem: str) -> np.ndarray:
    """An IDX file of uint8 (``stem`` or ``stem.gz``): magic 0 0 8 ndim, big-endian dims, data."""
    path = _idx_path(folder, stem)
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            blob = handle.read()
    except (OSError, EOFError) as err:
        raise DatasetNotFound(f"Fashion-MNIST file {path} cannot be read ({err})") from None
    ndim = blob[3] if len(blob) >= 4 and blob[:3] == b"\0\0\x08" else 0
    shape = tuple(int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if not 1 <= ndim <= 3 or len(blob) != 4 + 4 * ndim + int(np.prod(shape)):
        raise DatasetNotFound(f"Fashion-MNIST file {path} is not a uint8 IDX file of the size its header states")
    return np.frombuffer(blob, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_mnist(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    x_train, y_train, x_test, y_test = (_read_idx(root, stem) for stem in FASHION_MNIST_FILES)
    return x_train[:, None], y_train, x_test[:, None], y_test, FASHION_MNIST_CLASSES


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return images, bunch.target, [str(c) for c in bunch.target_names]


def _caltech101(data_cfg: DataConfig, root: Path) -> tuple[Dataset, np.ndarray, list[str]]:
    from torchvision.datasets import Caltech101

    try:
        base = Caltech101(str(root), target_type="category", download=data_cfg.download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DatasetNotFound(
            f"Caltech-101 not found under {root / 'caltech101'} ({err}). Put the extracted "
            "101_ObjectCategories there, point to its parent with `--set data.data_dir=/path`, "
            "or allow the download with `--set data.download=true` (needs internet)."
        ) from None
    return base, np.asarray(base.y), list(base.categories)


def _imagefolder(root: Path) -> tuple[Dataset, np.ndarray, list[str]]:
    from torchvision.datasets import ImageFolder

    try:
        base = ImageFolder(str(root))
    except FileNotFoundError as err:
        raise DatasetNotFound(
            f"no ImageFolder tree at {root} ({err}). Expected <root>/<class>/<image>; "
            "set it with `--set data.data_dir=/path`."
        ) from None
    return base, np.asarray(base.targets), list(base.classes)


# -- assembly ----------------------------------------------------------------------------

def split_indices(data_cfg: DataConfig, labels: np.ndarray,
                   test_labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index arrays for train/val (into ``labels``) and test (into ``test_labels`` when given,
    else carved from ``labels`` first)."""
    seed = data_cfg.seed
    if test_labels is None:
        pool, test = stratified_split(labels, data_cfg.test_fraction, seed, _TEST)
        test_source = labels
    else:
        pool, test, test_source = np.arange(len(labels)), np.arange(len(test_labels)), test_labels
    keep, held = stratified_split(labels[pool], data_cfg.val_fraction, seed, _VAL)
    train, val = pool[keep], pool[held]
    return (_limit(train, labels, data_cfg.train_subset, seed, _TRAIN_SUB),
            _limit(val, labels, data_cfg.val_subset, seed, _VAL_SUB),
            _limit(test, test_source, data_cfg.test_subset, seed, _TEST_SUB))


def _in_memory(data_cfg: DataConfig, name: str, images: np.ndarray, labels: np.ndarray,
               test_images: np.ndarray | None, test_labels: np.ndarray | None,
               class_names: list[str]) -> DatasetSplits:
    train, val, test = split_indices(data_cfg, labels, test_labels)
    if test_images is None:
        test_images, test_labels = images, labels

    def make(source: np.ndarray, source_labels: np.ndarray, idx: np.ndarray, augment: bool) -> TensorImages:
        resized = resize_uint8(torch.from_numpy(np.ascontiguousarray(source[idx])), data_cfg.input_size)
        return TensorImages(resized, source_labels[idx], augment)

    return DatasetSplits(name, make(images, labels, train, data_cfg.augment), make(images, labels, val, False),
                         make(test_images, test_labels, test, False), len(class_names), class_names)


def _from_files(data_cfg: DataConfig, name: str, base: Dataset, labels: np.ndarray,
                class_names: list[str]) -> DatasetSplits:
    train, val, test = split_indices(data_cfg, labels, None)
    size = data_cfg.input_size
    return DatasetSplits(name, FileImages(base, train, labels, size, data_cfg.augment),
                         FileImages(base, val, labels, size), FileImages(base, test, labels, size),
                         len(class_names), class_names)


def check_available(data_cfg: DataConfig) -> None:
    """DatasetNotFound unless the dataset's files are where the config points (cheap: reads nothing
    large), so a run can refuse to start instead of failing inside its first stage."""
    root = resolve_data_dir(data_cfg)
    if data_cfg.dataset == "fashion-mnist":
        for stem in FASHION_MNIST_FILES:
            _idx_path(root, stem)
    elif data_cfg.dataset == "caltech101":
        if not data_cfg.download and not (root / "caltech101" / "101_ObjectCategories").is_dir():
            raise DatasetNotFound(f"Caltech-101 not found under {root / 'caltech101'}: put the extracted "
                                  "101_ObjectCategories there or allow `--set data.download=true`")
    elif data_cfg.dataset == "imagefolder" and not (root.is_dir() and any(p.is_dir() for p in root.iterdir())):
        raise DatasetNotFound(f"no ImageFolder tree at {root}: expected <root>/<class>/<image>; "
                              "set it with `--set data.data_dir=/path`")


def load_splits(data_cfg: DataConfig) -> DatasetSplits:
    """The configured dataset as deterministic train/val/test splits (raises DatasetNotFound)."""
    root = resolve_data_dir(data_cfg)
    name = data_cfg.dataset
    if name == "fashion-mnist":
        x_train, y_train, x_test, y_test, classes = _fashion_mnist(root)
        return _in_memory(data_cfg, name, x_train, y_train, x_test, y_test, classes)
    if name == "digits":
        images, labels, classes = _digits()
        return _in_memory(data_cfg, name, images, labels, None, None, classes)
    if name == "caltech101":
        return _from_files(data_cfg, name, *_caltech101(data_cfg, root))
    return _from_files(data_cfg, name, *_imagefolder(root))
