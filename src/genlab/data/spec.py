"""The one description of a dataset that models, metrics and callbacks read."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

KINDS = ("binary", "levels", "dequantized")
#: the data.representation a user sets, for each DataSpec.kind it gives
REPRESENTATION_OF = {"levels": "data.representation=continuous", "dequantized": "data.representation=dequantized",
                     "binary": "data.representation=binarized"}  # fmt: skip
IGNORE = -1  # target id of token positions that are not scored (text batches)


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
        vocab: for token data (text), the symbol of every token id in id order, one character each
            (``len(vocab) == levels``); examples are then int64 ids in ``[0, levels)`` rather than
            values in ``[0, 1]``. ``None`` for everything else. A plain string, so checkpoints that
            store the spec can still be loaded with ``weights_only=True``.

    Raises:
        ValueError: for an unknown kind, an empty shape, fewer than 2 levels, or a vocabulary whose
            length differs from ``levels`` or that repeats a symbol.
    """

    shape: tuple[int, ...]
    kind: str
    levels: int
    num_classes: int | None = None
    vocab: str | None = None

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
        if self.vocab is not None and (len(self.vocab) != self.levels or len(set(self.vocab)) != self.levels):
            raise ValueError(f"DataSpec.vocab must hold {self.levels} distinct symbols, got {len(self.vocab)}")

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

    def summary(self) -> str:
        """A short description, e.g. ``vocabulary of 65, window (64,)`` or ``shape (1, 8, 8), ..., 17 levels``."""
        if self.vocab is not None:
            return f"vocabulary of {self.levels}, window {self.shape}"
        classes = f", {self.num_classes} classes" if self.num_classes else ""
        return f"shape {self.shape}, {REPRESENTATION_OF[self.kind]}, {self.levels} levels{classes}"


class CharVocab:
    """A character vocabulary: token id ``i`` is the character ``symbols[i]``.

    Args:
        symbols: the characters in id order, each once.

    Raises:
        ValueError: if a symbol repeats or is not a single character.
    """

    def __init__(self, symbols: str) -> None:
        if len(set(symbols)) != len(symbols):
            raise ValueError("a vocabulary lists each character once")
        self.symbols = symbols
        codes = torch.tensor([ord(c) for c in symbols], dtype=torch.int64)
        self._codes, self._ids = codes.sort()

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        """The characters of ``text`` in code-point order."""
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, char: str) -> bool:
        return char in self.symbols

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` outside the vocabulary, sorted."""
        return sorted(set(text) - set(self.symbols))

    def encode(self, text: str, unknown: str | None = None) -> torch.Tensor:
        """Token ids of ``text``: ``(len(text),)`` int64.

        Args:
            unknown: a vocabulary character that stands for every character outside the
                vocabulary; ``None`` refuses them.

        Raises:
            ValueError: for characters outside the vocabulary when ``unknown`` is ``None``, or an
                ``unknown`` that is not in the vocabulary.
        """
        if not text:
            return torch.zeros(0, dtype=torch.int64)
        codes = torch.frombuffer(bytearray(text.encode("utf-32-le")), dtype=torch.int32).long()
        pos = torch.searchsorted(self._codes, codes).clamp_(max=len(self) - 1)
        ids = self._ids[pos]
        known = self._codes[pos] == codes
        if not bool(known.all()):
            if unknown is None:
                raise ValueError(f"characters outside the vocabulary: {self.unknown(text)}")
            if unknown not in self:
                raise ValueError(f"the unknown-character token {unknown!r} is not in the vocabulary")
            ids[~known] = self.symbols.index(unknown)
        return ids

    def decode(self, ids: torch.Tensor | Sequence[int]) -> str:
        """The text of token ids ``(N,)``."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
        return "".join(self.symbols[i] for i in ids)
