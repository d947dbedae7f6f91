"""torchvision image sets (MNIST, FashionMNIST, CIFAR-10) decoded once into memory.

torchvision owns the on-disk formats and the downloads; genlab checks the files first so that a
missing, truncated or corrupt file gives one message naming the file and the fix.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import torch
from torchvision import datasets

from genlab.data.base import Batch, TensorDataModule, split_off
from genlab.errors import DataError


def check_idx_file(path: Path) -> tuple[int, ...]:
    """Validate an uncompressed IDX file of unsigned bytes (LeCun et al.'s MNIST format).

    Returns:
        The dimensions the header declares, e.g. ``(N, 28, 28)``.

    Raises:
        DataError: if the file is missing, its header is not an unsigned-byte IDX header, or its
            size differs from what the header declares (a truncated or padded file).
    """
    if not path.is_file():
        raise DataError(f"missing data file {path}")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08 or head[3] == 0:
            raise DataError(
                f"{path} is not an IDX file of unsigned bytes (bad header {head.hex() or 'empty'}); "
                "delete it and download the data again"
            )
        ndim = head[3]
        raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"{path} is truncated inside its header; delete it and download the data again")
    dims = tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
    expected = 4 + 4 * ndim + math.prod(dims)
    if size != expected:
        raise DataError(
            f"{path} is truncated or corrupt: its header declares {dims} ({expected} bytes) but the "
            f"file holds {size} bytes; delete it and download the data again"
        )
    return dims


class TorchvisionDataModule(TensorDataModule):
    """Shared file handling for the torchvision image sets: check, download when missing, load once.

    Subclasses give ``folder`` (where the files live), ``expected_files``, ``fetch()`` (download with
    torchvision) and ``load(train) -> (levels (N, C, H, W) uint8, labels (N,) int64)``.

    Args:
        data_dir: root folder in torchvision's layout.
        download: fetch missing files in ``prepare_data`` (needs network); never otherwise.
        val_fraction: fraction of the training split held out for validation (seeded).
        **kwargs: see :class:`genlab.data.base.TensorDataModule` (representation, batch sizes...).

    Raises:
        DataError: when files are missing (and cannot be downloaded), truncated or corrupt.
    """

    title = ""

    def __init__(self, data_dir: str, download: bool = True, val_fraction: float = 0.1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data_dir, self.download, self.val_fraction = str(data_dir), download, val_fraction

    folder: Path
    expected_files: list[str]

    def fetch(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, train: bool) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError

    def _missing(self) -> list[str]:
        return [f for f in self.expected_files if not (self.folder / f).is_file()]

    def _not_found(self, missing: list[str], why: str) -> DataError:
        return DataError(
            f"{self.title} files not found in {self.folder}: missing {', '.join(missing)}. {why}"
            "Either run with data.download=true on a machine with network, or point data.data_dir "
            f"at a root folder that holds {self.folder.relative_to(self.data_dir)}/ with "
            f"{', '.join(self.expected_files)}."
        )

    def prepare_data(self) -> None:
        missing = self._missing()
        if not missing:
            return
        if not self.download:
            raise self._not_found(missing, "Downloading is off (data.download=false). ")
        try:
            self.fetch()
        except Exception as e:  # network errors arrive as RuntimeError/URLError
            raise self._not_found(missing, f"The download failed ({str(e).splitlines()[0]}). ") from e

    def load_splits(self) -> dict[str, Batch]:
        missing = self._missing()
        if missing:
            raise self._not_found(missing, "")
        train, val = split_off(*self.load(True), self.val_fraction, self.seed)
        return {"train": train, "val": val, "test": self.load(False)}


class MNISTDataModule(TorchvisionDataModule):
    """MNIST (LeCun et al. 1998) via ``torchvision.datasets.MNIST``: ``(B, 1, 28, 28)``, 256 levels, 10 classes.

    Files: ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (uncompressed IDX,
    torchvision's layout). See :class:`TorchvisionDataModule` for the arguments.
    """

    dataset_cls = datasets.MNIST
    title = "MNIST"
    shape = (1, 28, 28)
    levels = 256
    num_classes = 10

    @property
    def folder(self) -> Path:
        return Path(self.data_dir) / self.dataset_cls.__name__ / "raw"

    @property
    def expected_files(self) -> list[str]:
        return [os.path.splitext(os.path.basename(url))[0] for url, _ in self.dataset_cls.resources]

    def fetch(self) -> None:
        self.dataset_cls(self.data_dir, train=True, download=True)

    def load(self, train: bool) -> Batch:
        prefix = "train" if train else "t10k"
        img = check_idx_file(self.folder / f"{prefix}-images-idx3-ubyte")
        lab = check_idx_file(self.folder / f"{prefix}-labels-idx1-ubyte")
        if len(img) != 3 or len(lab) != 1 or img[0] != lab[0] or img[1:] != self.shape[1:]:
            raise DataError(
                f"{self.folder}: {prefix} images {img} and labels {lab} do not match "
                f"(expected (N, {self.shape[1]}, {self.shape[2]}) and (N,)); download the data again"
            )
        ds = self.dataset_cls(self.data_dir, train=train, download=False)
        return ds.data.unsqueeze(1).contiguous(), ds.targets.long()


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Xiao et al. 2017) via ``torchvision.datasets.FashionMNIST``; MNIST's geometry.

    Files: ``<data_dir>/FashionMNIST/raw/...`` with the same IDX names as MNIST.
    """

    dataset_cls = datasets.FashionMNIST
    title = "FashionMNIST"


class _CIFAR10Files(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader, with the per-file md5 check reduced to an existence check.

    The archive's md5 is still verified on download; skipping the per-file check lets genlab read
    any files in the real format (such as the small ones its tests write) and report corruption
    itself.
    """

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10 (Krizhevsky 2009) via torchvision: ``(B, 3, 32, 32)``, 256 levels, 10 classes.

    Files: ``<data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` (pickled
    batches, torchvision's layout). ``representation=binarized`` is refused. See
    :class:`TorchvisionDataModule` for the arguments.
    """

    title = "CIFAR-10"
    shape = (3, 32, 32)
    levels = 256
    num_classes = 10
    allow_binarized = False

    @property
    def folder(self) -> Path:
        return Path(self.data_dir) / datasets.CIFAR10.base_folder

    @property
    def expected_files(self) -> list[str]:
        c = datasets.CIFAR10
        return [n for n, _ in c.train_list + c.test_list] + [c.meta["filename"]]

    def fetch(self) -> None:
        datasets.CIFAR10(self.data_dir, train=True, download=True)

    def load(self, train: bool) -> Batch:
        try:
            ds = _CIFAR10Files(self.data_dir, train=train, download=False)
            data = torch.as_tensor(ds.data).permute(0, 3, 1, 2).contiguous()
            labels = torch.as_tensor(ds.targets, dtype=torch.long)
        except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(
                f"CIFAR-10 files in {self.folder} are truncated or corrupt ({type(e).__name__}: {e}); "
                "delete the folder and download the data again"
            ) from e
        if len(data) != len(labels):
            raise DataError(f"CIFAR-10 files in {self.folder} hold {len(data)} images but {len(labels)} labels")
        return data, labels
