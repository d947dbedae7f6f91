"""The one description of a dataset that models, metrics and callbacks read."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("binary", "levels", "dequantized")


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its data, and nothing more.

    Args:
        shape: shape of one example, e.g. ``(C, H, W)`` for images.
        kind: how values are represented, which fixes the likelihood units:
            ``"binary"`` values in ``{0, 1}`` (a probability mass per dimension);
            ``"levels"`` values ``k / (levels - 1)`` on a grid in ``[0, 1]`` (a probability mass over
            ``levels`` bins per dimension); ``"dequantized"`` values ``(k + u) / levels`` with
            ``u ~ U[0, 1)``, on which a model is a density on ``[0, 1]^D``.
        levels: number of discrete values per dimension in the source data (2 for binary,
            17 for scikit-learn's digits, 256 for 8-bit images).
        num_classes: number of label classes, or ``None`` when unlabelled.

    Raises:
        ValueError: for an unknown kind, an empty shape or fewer than 2 levels.
    """

    shape: tuple[int, ...]
    kind: str
    levels: int
    num_classes: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.kind not in KINDS:
            raise ValueError(f"DataSpec.kind must be one of {KINDS}, got {self.kind!r}")
        if not self.shape or any(s <= 0 for s in self.shape):
            raise ValueError(f"DataSpec.shape must be non-empty and positive, got {self.shape}")
        if self.levels < 2:
            raise ValueError(f"DataSpec.levels must be >= 2, got {self.levels}")
        if self.kind == "binary" and self.levels != 2:
            raise ValueError("binary data has exactly 2 levels")

    @property
    def num_dims(self) -> int:
        """D, the number of dimensions of one example (e.g. ``C * H * W``)."""
        return math.prod(self.shape)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so it can live in a checkpoint loaded with ``weights_only=True``."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def coerce(cls, spec: DataSpec | dict[str, Any]) -> DataSpec:
        """Accept a ``DataSpec`` or its ``to_dict()`` form (as stored in hparams and checkpoints)."""
        if isinstance(spec, DataSpec):
            return spec
        return cls(**dict(spec))
