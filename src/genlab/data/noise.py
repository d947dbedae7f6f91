"""Images of uniform random levels, of any shape: data that need no file, where only the shape matters (the cost of
sampling, smoke tests of an architecture on a size no dataset here has, e.g. CIFAR-10's 3x32x32)."""

from __future__ import annotations

import torch

from genlab.checks import positive_int
from genlab.data.base import Batch, TensorDataModule
from genlab.errors import ConfigError


class NoiseImagesDataModule(TensorDataModule):
    """``(N, C, H, W)`` images whose every sub-pixel is an independent uniform level in ``[0, levels)``, seeded; no
    labels (``num_classes`` is ``None``). The uniform model is the best model of them: ``log2 levels`` bits/dim.

    Args:
        shape: ``[C, H, W]``.
        levels: grey levels per sub-pixel (>= 2).
        num_train, num_val, num_test: examples per split.
        **kwargs: see :class:`genlab.data.base.TensorDataModule`.

    Raises:
        ConfigError: for a shape that is not three positive sizes, fewer than 2 levels, or empty splits.
    """

    def __init__(self, shape=(3, 32, 32), levels: int = 256, num_train: int = 512, num_val: int = 128,
                 num_test: int = 128, **kwargs) -> None:  # fmt: skip
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ConfigError(f"data.shape must be [C, H, W] of positive sizes, got {list(shape)}")
        if levels < 2:
            raise ConfigError(f"data.levels must be at least 2, got {levels}")
        self.shape, self.levels, self.num_classes = shape, levels, None
        super().__init__(**kwargs)
        sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.sizes = {split: positive_int(f"data.num_{split}", n) for split, n in sizes.items()}

    def load_splits(self) -> dict[str, Batch]:
        g = torch.Generator().manual_seed(self.seed)
        dtype = torch.uint8 if self.levels <= 256 else torch.int64
        return {
            split: (
                torch.randint(self.levels, (n, *self.shape), generator=g, dtype=dtype),
                torch.zeros(n, dtype=torch.long),
            )
            for split, n in self.sizes.items()
        }
