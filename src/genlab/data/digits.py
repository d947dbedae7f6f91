"""scikit-learn's bundled 8x8 handwritten digits: the offline default dataset."""

from __future__ import annotations

import torch

from genlab.data.base import Batch, TensorDataModule, split_off


class DigitsDataModule(TensorDataModule):
    """The 1,797 8x8 digits of ``sklearn.datasets.load_digits`` (UCI optdigits test set).

    Pixels are integer grey levels 0..16 (17 levels), served as ``(B, 1, 8, 8)`` floats per
    ``representation``; labels are the digit classes 0..9. The data ship inside scikit-learn, so
    nothing is downloaded. The train/val/test split is fixed by ``seed``.

    Args:
        val_fraction: fraction of the non-test examples held out for validation.
        test_fraction: fraction of all examples held out for testing.
        **kwargs: see :class:`genlab.data.base.TensorDataModule`.
    """

    shape = (1, 8, 8)
    levels = 17
    num_classes = 10

    def __init__(self, val_fraction: float = 0.1, test_fraction: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction

    def load_splits(self) -> dict[str, Batch]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        levels = torch.as_tensor(bunch.images, dtype=torch.uint8).unsqueeze(1)
        labels = torch.as_tensor(bunch.target, dtype=torch.long)
        rest, test = split_off(levels, labels, self.test_fraction, self.seed)
        train, val = split_off(*rest, self.val_fraction, self.seed + 1)
        return {"train": train, "val": val, "test": test}
