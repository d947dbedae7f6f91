"""Fixed dequantized data for the classical-model tests (one seeded noise draw, so fits are comparable)."""

import torch

from genlab.data.digits import DigitsDataModule


def dequantized(dm, split="train", seed=0):
    """A split of ``dm`` (dequantized) as one fixed tensor and the DataModule's spec dict."""
    dm.setup("fit")
    x = dm.represent(dm.splits[split][0], generator=torch.Generator().manual_seed(seed))
    return x, dm.spec.to_dict()


def digits():
    """The dequantized digits training split ``(1294, 1, 8, 8)`` and its spec dict."""
    return dequantized(DigitsDataModule(representation="dequantized"))
