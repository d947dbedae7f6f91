"""Character-level text corpora held in memory as int64 token ids: tiny-shakespeare or any UTF-8 file.

The file is split by position: the first ``splits[0]`` of its characters train, the next
``splits[1]`` validate and the last ``splits[2]`` test (90/5/5 by default). The vocabulary is the
set of characters of the training split, in code-point order, and travels with the run inside the
:class:`~genlab.data.spec.DataSpec` (``spec.vocab``), so checkpoints carry it.

Characters of the validation or test split that never occur in the training split (the rule):
they are all mapped to one extra token, ``"\\ufffd"`` (U+FFFD REPLACEMENT CHARACTER), which is added
to the vocabulary only when such characters exist (or is already in it when the training text holds
it). The model never sees it in training, so every unseen character is still scored, and costs what
the model gives to the unknown token: nothing is skipped. Tiny-shakespeare needs no such token
(its 65 characters all occur in the first 90%).

Training examples are random windows of ``block_size + 1`` consecutive tokens (inputs are the first
``block_size``, targets the last ``block_size``). Validation and test score the **whole** split:
consecutive non-overlapping windows whose targets cover every token of the split exactly once;
each window's inputs are its targets shifted right by one, so the first token of a split is
predicted from the character before it in the file. Target positions past the end of the split (in
the last window) hold :data:`IGNORE` and are not scored.
"""

from __future__ import annotations

import hashlib
import math
import os
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import torch

from genlab.data.base import ResumableLoader, TensorBatchLoader, follow_trainer, rank_and_world
from genlab.data.spec import IGNORE, CharVocab, DataSpec
from genlab.errors import ConfigError, DataError

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
UNKNOWN = "\ufffd"

Batch = tuple[torch.Tensor, torch.Tensor]


def split_bounds(n: int, splits: Sequence[float]) -> tuple[int, int]:
    """Character offsets ``(b1, b2)``: train is ``[0, b1)``, val ``[b1, b2)``, test ``[b2, n)``.

    ``b1 = floor(splits[0] * n)``, ``b2 = floor((splits[0] + splits[1]) * n)``.

    Raises:
        ConfigError: unless ``splits`` is three non-negative fractions summing to 1 with a positive
            training fraction.
    """
    fr = [float(f) for f in splits]
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6 or fr[0] <= 0:
        raise ConfigError(
            f"data.splits must be three fractions train/val/test >= 0 summing to 1 (train > 0), got {list(splits)}; "
            "e.g. data.splits=[0.9,0.1,0.0]"
        )
    b1 = math.floor(fr[0] * n)
    if fr[1] == 0:
        return b1, b1
    b2 = n if fr[2] == 0 else math.floor((fr[0] + fr[1]) * n)
    return b1, max(b1, b2)


def eval_windows(ids: torch.Tensor, start: int, end: int, block_size: int) -> Batch:
    """Non-overlapping windows that score every token of ``ids[start:end]`` exactly once.

    Window ``k`` predicts the targets at positions ``first + k T .. first + k T + T - 1``
    (``first = max(start, 1)``; ``T = block_size``) from the tokens one position earlier, so a
    target's context is the tokens before it inside its window, plus the token just before the
    window. Positions at or past ``end`` get target :data:`IGNORE` (their inputs repeat the last
    token, and, being later than every scored position, cannot affect a score).

    Args:
        ids: ``(N,)`` int64 token ids of the whole text.
        start, end: the split, ``0 <= start <= end <= N``.
        block_size: window length ``T``.

    Returns:
        ``(x, y)``, each ``(num_windows, T)`` int64; ``(y != IGNORE).sum() == end - max(start, 1)``.
    """
    first = max(start, 1)
    n = max(0, end - first)
    num = math.ceil(n / block_size)
    pos = first + torch.arange(num * block_size).view(num, block_size)
    last = max(end - 1, 0)
    y = torch.where(pos < end, ids[pos.clamp(max=last)], IGNORE)
    x = ids[(pos - 1).clamp(max=last)]
    return x, y


class RandomWindowLoader(ResumableLoader):
    """Batches of random windows of ``block_size + 1`` consecutive tokens: ``(x, y)``, each ``(B, T)`` int64.

    ``x`` is the first ``T`` tokens of each window, ``y`` the last ``T`` (the next token at every
    position). Window starts are uniform over ``[0, N - T - 1]``, drawn from a generator seeded by
    ``seed``, the epoch (calls to ``__iter__``) and the rank, so each process of a distributed run draws
    its own windows. One vectorised gather per batch. Resumable mid-epoch (:class:`ResumableLoader`): a resumed
    pass draws and drops the starts of the batches already trained on.

    Args:
        ids: ``(N,)`` int64 tokens, ``N >= block_size + 1``.
        block_size: ``T``.
        batch_size: windows per batch ``B``.
        num_batches: batches per epoch (``len`` of the loader).
        seed, rank, world_size: seeding and sharding.
    """

    def __init__(
        self, ids: torch.Tensor, block_size: int, batch_size: int, num_batches: int,
        seed: int = 0, rank: int = 0, world_size: int = 1,
    ) -> None:  # fmt: skip
        self.ids, self.block_size, self.batch_size, self.num_batches = ids, block_size, batch_size, num_batches
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.offsets = torch.arange(block_size + 1)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[Batch]:
        if self.epoch_of is not None:
            self.epoch = self.epoch_of()
        g = torch.Generator().manual_seed(self.seed + 7919 * self.epoch + 1_000_003 * self.rank)
        first = self.start()
        self.epoch += 1
        high = len(self.ids) - self.block_size
        for b in range(self.num_batches):
            starts = torch.randint(0, high, (self.batch_size,), generator=g)
            if b < first:
                continue
            self.yielded = b + 1
            w = self.ids[starts[:, None] + self.offsets]
            yield w[:, :-1], w[:, 1:]


class TextDataModule(L.LightningDataModule):
    """A character-level text corpus: tiny-shakespeare (Karpathy 2015) by default, or any UTF-8 file.

    See the module docstring for the splits, the vocabulary, the unknown-character rule and the
    windows. ``spec`` is ``DataSpec(shape=(block_size,), kind="levels", levels=vocab_size,
    vocab=<characters>)``, so bits/dim are bits per character. It is computed from the file on first
    use (before ``setup``), downloading the default corpus first when needed.

    Args:
        path: a UTF-8 text file; ``None``: tiny-shakespeare at ``<data_dir>/tinyshakespeare/input.txt``.
        data_dir: root of downloaded data (used when ``path`` is ``None``).
        download: fetch tiny-shakespeare from ``url`` when it is missing (never for ``path``).
        url: where tiny-shakespeare is downloaded from.
        sha256: expected SHA-256 of the download (``None``: not checked).
        block_size: window length ``T`` in characters.
        batch_size: training windows per batch.
        eval_batch_size: validation/test windows per batch (default ``batch_size``).
        splits: train/val/test fractions of the file, by position (the validation part must be
            non-empty; the test part may be empty, e.g. ``[0.9, 0.1, 0.0]``).
        train_batches_per_epoch: batches per training epoch (``None``: one pass worth of tokens,
            ``train_chars // (batch_size * block_size * world_size)``, at least 1).
        seed: seed of the training windows.

    Raises:
        ConfigError: for impossible sizes or splits.
        DataError: when the file is missing (and cannot be downloaded), is not UTF-8, or is too short.
    """

    def __init__(
        self,
        path: str | None = None,
        data_dir: str | None = None,
        download: bool = True,
        url: str = TINY_SHAKESPEARE_URL,
        sha256: str | None = TINY_SHAKESPEARE_SHA256,
        block_size: int = 256,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        splits: Sequence[float] = (0.9, 0.05, 0.05),
        train_batches_per_epoch: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("block_size", block_size), ("batch_size", batch_size),
                            ("eval_batch_size", eval_batch_size or batch_size),
                            ("train_batches_per_epoch", train_batches_per_epoch or 1)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"data.{name} must be a positive integer, got {value!r}")
        if path is None and data_dir is None:
            raise ConfigError("give data.path (a UTF-8 text file) or data.data_dir (where tiny-shakespeare lives)")
        self.path, self.data_dir, self.download, self.url, self.sha256 = path, data_dir, download, url, sha256
        self.block_size, self.batch_size = block_size, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.splits = [float(f) for f in splits]
        split_bounds(10, self.splits)  # validate early
        self.train_batches_per_epoch, self.seed = train_batches_per_epoch, seed
        self.vocab: CharVocab | None = None
        self.ids: torch.Tensor | None = None
        self.bounds: dict[str, tuple[int, int]] = {}
        self._eval: dict[str, Batch] = {}

    # --- the file --------------------------------------------------------------------------------
    @property
    def file(self) -> Path:
        """The text file read: ``path``, or ``<data_dir>/tinyshakespeare/input.txt``."""
        if self.path is not None:
            return Path(self.path).expanduser()
        return Path(self.data_dir).expanduser() / "tinyshakespeare" / "input.txt"

    def _not_found(self, why: str) -> DataError:
        if self.path is not None:
            return DataError(f"text file not found: {self.file} (data.path); point data.path at a UTF-8 .txt file")
        return DataError(
            f"tiny-shakespeare not found: expected {self.file}. {why}Either run with data.download=true on a "
            f"machine with network, copy the file there (from {self.url}), or set data.path=<a UTF-8 .txt file>."
        )

    def prepare_data(self) -> None:
        """Download tiny-shakespeare when it is missing and ``download`` is on (atomically, checksummed).

        Raises:
            DataError: when the file is missing and cannot be downloaded.
        """
        if self.file.is_file():
            return
        if self.path is not None:
            raise self._not_found("")
        if not self.download:
            raise self._not_found("Downloading is off (data.download=false). ")
        try:
            with urllib.request.urlopen(self.url, timeout=30) as response:
                data = response.read()
        except Exception as e:  # URLError, timeouts, HTTP errors
            raise self._not_found(f"The download from {self.url} failed ({type(e).__name__}: {e}). ") from e
        if self.sha256 and hashlib.sha256(data).hexdigest() != self.sha256:
            raise DataError(f"the download from {self.url} does not have the expected SHA-256 {self.sha256}")
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, self.file)  # atomic: concurrent processes never see a partial file

    def _load(self) -> None:
        if self.ids is not None:
            return
        if not self.file.is_file():
            self.prepare_data()
        try:
            text = self.file.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{self.file} is not UTF-8 text ({e}); convert it or choose another data.path") from e
        b1, b2 = split_bounds(len(text), self.splits)
        if b1 < self.block_size + 1:
            raise DataError(
                f"the training split of {self.file} has {b1} characters, fewer than block_size + 1 = "
                f"{self.block_size + 1}; use a longer text, a larger data.splits[0] or a smaller block_size"
            )
        if b2 == b1:
            raise ConfigError(f"data.splits={self.splits} leaves no validation characters in {self.file}")
        vocab = CharVocab.from_text(text[:b1])
        if vocab.unknown(text[b1:]) and UNKNOWN not in vocab:
            vocab = CharVocab(vocab.symbols + UNKNOWN)  # the rule: unseen characters share one token
        if len(vocab) < 2:
            raise DataError(f"{self.file}: the training split uses fewer than 2 distinct characters")
        self.vocab = vocab
        self.ids = vocab.encode(text, unknown=UNKNOWN)
        self.bounds = {"train": (0, b1), "val": (b1, b2), "test": (b2, len(text))}

    @property
    def spec(self) -> DataSpec:
        """``DataSpec((block_size,), "levels", vocab_size, vocab=...)``; reads the file on first use."""
        self._load()
        return DataSpec((self.block_size,), "levels", len(self.vocab), None, self.vocab.symbols)

    # --- Lightning hooks -------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self._load()

    def split_ids(self, split: str) -> torch.Tensor:
        """The ``(N_split,)`` int64 tokens of ``train``, ``val`` or ``test``."""
        self._load()
        a, b = self.bounds[split]
        return self.ids[a:b]

    def eval_batches(self, split: str) -> Batch:
        """``(x, y)`` of :func:`eval_windows` for ``val`` or ``test``, computed once."""
        if split not in self._eval:
            self._load()
            self._eval[split] = eval_windows(self.ids, *self.bounds[split], self.block_size)
        return self._eval[split]

    def split_tensors(self, split: str) -> Batch:
        """``(x, y)`` windows of a whole split (:func:`eval_windows`), ``train``, ``val`` or ``test``, for evaluation.

        Raises:
            KeyError: for an unknown split.
        """
        self._load()
        if split == "train" and split not in self._eval:
            self._eval[split] = eval_windows(self.ids, *self.bounds[split], self.block_size)
        return self.eval_batches(split)

    def train_dataloader(self) -> RandomWindowLoader:
        ids = self.split_ids("train")
        rank, world = rank_and_world(self.trainer)
        num = self.train_batches_per_epoch or max(1, len(ids) // (self.batch_size * self.block_size * world))
        loader = RandomWindowLoader(ids, self.block_size, self.batch_size, num, self.seed, rank, world)
        return follow_trainer(loader, self.trainer)

    def _eval_loader(self, split: str) -> TensorBatchLoader:
        x, y = self.eval_batches(split)
        rank, world = rank_and_world(self.trainer) if len(x) else (0, 1)  # an empty split: nothing on any process
        return TensorBatchLoader(x, y, self.eval_batch_size, lambda t: t, rank=rank, world_size=world)

    def pass_dataloader(self) -> TensorBatchLoader:
        """The training split once, in the consecutive windows of val/test, for a model fitted by passes."""
        return self._eval_loader("train")

    def val_dataloader(self) -> TensorBatchLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> TensorBatchLoader:
        return self._eval_loader("test")
