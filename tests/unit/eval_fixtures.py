"""What the evaluation-test unit tests share: the real evaluation settings, a tensor DataModule, a stub base.

Stub models subclass :class:`GenerativeModel` and declare capabilities like any model: the evaluator
sees only the protocol, so a stub with a known code or density gives exact expected numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from genlab.data.spec import DataSpec
from genlab.models.base import GenerativeModel

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def evaluation_cfg(tmp_path: Path, name: str = "full", **overrides: Any) -> dict[str, Any]:
    """``conf/evaluation/<name>.yaml`` merged over ``default.yaml`` (its defaults list, by hand), with
    ``features.cache_dir`` in ``tmp_path`` and ``overrides`` (dotted keys) on top, as a plain dict."""
    folder = REPO / "conf" / "evaluation"
    cfg = OmegaConf.load(folder / "default.yaml")
    if name != "default":
        top = OmegaConf.load(folder / f"{name}.yaml")
        top.pop("defaults", None)
        cfg = OmegaConf.merge(cfg, top)
    cfg.features.cache_dir = str(tmp_path / "features")
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return OmegaConf.to_container(cfg, resolve=True)


class Tensors:
    """A DataModule reduced to what the evaluator reads: ``split_tensors(split) -> (x, y)``."""

    representation, binarize, threshold = "continuous", "static", 0.5

    def __init__(self, **splits: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.splits = splits

    def split_tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.splits[split]

    def prepare_data(self) -> None:  # the Lightning hooks the evaluator calls before it reads the splits
        pass

    def setup(self, stage: str | None = None) -> None:
        pass


class TinyData(Tensors):
    """Labelled 1x8x8 images on a 5-level grid (``DataSpec((1, 8, 8), "levels", 5, 3)``) whose class brightens one
    band of rows, so a classifier can learn it; ``sizes`` of train, val, test (a split of size 0 is left out)."""

    def __init__(self, sizes: tuple[int, int, int] = (90, 40, 60), seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        splits = {}
        for name, n in zip(("train", "val", "test"), sizes, strict=True):
            if n == 0:
                continue
            y = torch.randint(0, 3, (n,), generator=g)
            k = torch.randint(0, 2, (n, 1, 8, 8), generator=g)
            rows = torch.arange(8).view(1, 1, 8, 1)
            k = torch.where((rows // 3 == y.view(-1, 1, 1, 1)), k + 3, k)
            splits[name] = (k.float() / 4, y)
        super().__init__(**splits)


class Stub(GenerativeModel):
    """A model with nothing but a spec; subclasses set ``capabilities`` and implement the methods."""

    def __init__(self, spec: DataSpec) -> None:
        super().__init__(spec)


def is_png(path: Path) -> bool:
    """Whether ``path`` is a non-empty PNG file."""
    return Path(path).is_file() and Path(path).read_bytes()[:8] == PNG
