"""In-memory tensor DataModules: decode a dataset once, then serve batches by slicing.

Every image source decodes its files once into a ``uint8`` tensor of integer levels
``(N, C, H, W)`` with values in ``[0, L)`` plus ``int64`` labels ``(N,)``. A batch is an index slice of
that tensor, turned into floats by one vectorised ``represent`` call: no per-item PIL or
``ToTensor`` work in the training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch

from genlab.data.spec import REPRESENTATION_OF, DataSpec
from genlab.errors import ConfigError

REPRESENTATIONS = ("continuous", "dequantized", "binarized")
BINARIZATIONS = ("static", "dynamic")

Batch = tuple[torch.Tensor, torch.Tensor]


def rank_and_world(trainer: L.Trainer | None) -> tuple[int, int]:
    """``(rank, world size)`` of this process: the Trainer's; without one, ``torch.distributed``'s when it is
    initialised (a Lightning Fabric run); else ``(0, 1)``."""
    if trainer is not None:
        return trainer.global_rank, trainer.world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def follow_trainer(loader: TensorBatchLoader | Any, trainer: L.Trainer | None) -> Any:
    """Make ``loader`` take its epoch from ``trainer.current_epoch`` at every pass (``loader.epoch_of``) and its
    position in the epoch from the batches the trainer has trained on (``loader.position_of``), so a resumed run,
    also from a checkpoint written mid-epoch, continues the sequence of batches exactly where it stopped. Without a
    Trainer (a Fabric fit) the loader counts its own passes. Returns ``loader``."""
    if trainer is not None:
        loader.epoch_of = lambda: int(trainer.current_epoch)
        # Lightning prefetches one batch, so the loader's own count runs ahead of training: ask the loop instead
        loader.position_of = lambda: int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
    return loader


class ResumableLoader:
    """The ``state_dict`` / ``load_state_dict`` pair that makes a loader resumable mid-epoch (Lightning saves and
    restores the state of any training loader that has both, Lightning's ``_Stateful``).

    A loader sets ``epoch`` (of its next pass) and counts ``yielded`` batches; :meth:`start` returns the batch a
    pass begins at: ``0``, or the saved position when the pass is the epoch a checkpoint was written in.
    """

    epoch: int = 0
    yielded: int = 0
    epoch_of: Callable[[], int] | None = None  # see follow_trainer
    position_of: Callable[[], int] | None = None
    _resume: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        """``{"epoch": e, "batch": k}``: ``k`` batches of epoch ``e`` have been trained on."""
        position = self.position_of() if self.position_of is not None else self.yielded
        return {"epoch": max(self.epoch - 1, 0), "batch": int(position)}  # ``epoch`` already counts the pass

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at batch ``state["batch"]`` when the next pass is epoch ``state["epoch"]``."""
        self._resume = (int(state["epoch"]), int(state["batch"]))

    def start(self) -> int:
        """The first batch of the pass that begins now (call after ``epoch`` is set); clears a loaded position."""
        resume, self._resume = self._resume, None
        return resume[1] if resume is not None and resume[0] == self.epoch else 0


class TensorBatchLoader(ResumableLoader):
    """Iterate over ``(x, y)`` batches sliced from tensors held in memory.

    Shuffles with a permutation seeded by ``seed + epoch`` (the epoch counts calls to ``__iter__``),
    so every process of a distributed run draws the same permutation and takes its own shard
    ``perm[rank::world_size]``. Shards of a loader that drops the last partial batch (gradient
    training) are cut to equal length (as ``DistributedSampler`` with ``drop_last``); other shards are
    not cut or padded, so each example counts exactly once. With ``seeded_noise`` the transform gets a
    generator seeded by ``(seed, epoch, rank, batch)``, so a batch's noise never depends on the global RNG
    or on how far ahead a loop prefetches. Resumable mid-epoch (:class:`ResumableLoader`).

    Args:
        levels: ``(N, ...)`` integer-level tensor (any dtype).
        labels: ``(N,)`` int64 labels.
        batch_size: examples per batch (> 0).
        transform: maps a ``(B, ...)`` slice of ``levels`` to the float batch (``transform(slice, generator=g)``
            with ``seeded_noise``).
        shuffle: reshuffle every epoch.
        drop_last: drop a final partial batch.
        seed: base seed of the permutation.
        rank, world_size: this process's shard of a distributed run.
        seeded_noise: pass the transform a per-batch generator (the noise of dequantized and dynamically
            binarized training batches).
    """

    def __init__(
        self,
        levels: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        transform: Callable[[torch.Tensor], torch.Tensor],
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        seeded_noise: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        self.levels, self.labels = levels, labels
        self.batch_size, self.transform = batch_size, transform
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size, self.seeded_noise = rank, world_size, seeded_noise

    def _num_local(self) -> int:
        n = len(self.levels)
        if self.shuffle and self.drop_last:  # equal shards, as DistributedSampler(drop_last=True)
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        n = self._num_local()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.levels)
        if self.epoch_of is not None:
            self.epoch = self.epoch_of()
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            index = torch.randperm(n, generator=g)[self.rank :: self.world_size][: self._num_local()]
        else:
            index = torch.arange(n)[self.rank :: self.world_size]
        first, epoch = self.start(), self.epoch
        self.epoch += 1
        for b in range(first, len(self)):
            self.yielded = b + 1
            idx = index[b * self.batch_size : (b + 1) * self.batch_size]
            if not self.shuffle and self.world_size == 1:
                sl = slice(int(idx[0]), int(idx[-1]) + 1)  # contiguous: a view, no gather
                levels, labels = self.levels[sl], self.labels[sl]
            else:
                levels, labels = self.levels[idx], self.labels[idx]
            if self.seeded_noise:
                g = torch.Generator().manual_seed(((self.seed * 100_003 + epoch) * 1_009 + self.rank) * 1_000_003 + b)
                yield self.transform(levels, generator=g), labels
            else:
                yield self.transform(levels), labels


def split_off(levels: torch.Tensor, labels: torch.Tensor, fraction: float, seed: int) -> tuple[Batch, Batch]:
    """Split ``(levels, labels)`` into ``(rest, held_out)`` with a seeded permutation.

    ``held_out`` has ``round(fraction * N)`` examples (at least 1 when ``fraction > 0``).

    Raises:
        ConfigError: if ``fraction`` is outside ``[0, 1)``.
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"a split fraction must be in [0, 1), got {fraction}")
    n = len(levels)
    k = max(1, round(fraction * n)) if fraction > 0 else 0
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    rest, held = perm[k:].sort().values, perm[:k].sort().values
    return (levels[rest], labels[rest]), (levels[held], labels[held])


class TensorDataModule(L.LightningDataModule):
    """Base DataModule for image sources decoded once into memory.

    Subclasses set ``shape``, ``levels``, ``num_classes`` (class attributes or in ``__init__``) and
    implement ``load_splits() -> {"train": (levels, labels), "val": ..., "test": ...}`` where
    ``levels`` is ``(N, C, H, W)`` with integer values in ``[0, self.levels)``.

    Args:
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        representation: ``continuous`` (``k / (L - 1)``), ``dequantized`` (``(k + u) / L``, fresh noise
            every training batch, fixed seeded noise for val/test), or ``binarized``.
        binarize: ``static`` (threshold at ``threshold``) or ``dynamic`` (a fresh Bernoulli draw with
            probability ``k / (L - 1)`` every training batch, one seeded draw for val/test;
            Salakhutdinov & Murray 2008).
        threshold: static binarization threshold on ``k / (L - 1)``.
        seed: seed of splits, shuffling and evaluation noise.

    Raises:
        ConfigError: for an unknown representation or binarization, or binarizing a source that
            does not allow it.
    """

    shape: tuple[int, ...] = ()
    levels: int = 256
    num_classes: int | None = None
    allow_binarized: bool = True

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        representation: str = "continuous",
        binarize: str = "static",
        threshold: float = 0.5,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise ConfigError(f"unknown data.representation={representation!r}; choose one of {REPRESENTATIONS}")
        if binarize not in BINARIZATIONS:
            raise ConfigError(f"unknown data.binarize={binarize!r}; choose one of {BINARIZATIONS}")
        if representation == "binarized" and not self.allow_binarized:
            raise ConfigError(
                f"{type(self).__name__} cannot be binarized (binarization is for the MNIST family); "
                "use data.representation=continuous or dequantized"
            )
        if batch_size <= 0 or (eval_batch_size is not None and eval_batch_size <= 0):
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}/{eval_batch_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.representation, self.binarize, self.threshold = representation, binarize, threshold
        self.seed = seed
        self.splits: dict[str, Batch] = {}
        self._eval_x: dict[str, torch.Tensor] = {}

    # --- what subclasses provide -------------------------------------------------------------
    def load_splits(self) -> dict[str, Batch]:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- the data description ------------------------------------------------------------------
    @property
    def spec(self) -> DataSpec:
        """The :class:`DataSpec` models are built from; known before any file is read."""
        kind = {rep.split("=")[1]: k for k, rep in REPRESENTATION_OF.items()}
        levels = 2 if self.representation == "binarized" else self.levels
        return DataSpec(self.shape, kind[self.representation], levels, self.num_classes)

    # --- levels -> float batches ---------------------------------------------------------------
    def represent(self, levels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Map integer levels ``(B, ...)`` in ``[0, L)`` to floats in ``[0, 1]`` per ``representation``.

        Returns ``(B, ...)`` float32: ``k/(L-1)``; ``(k+u)/L`` in ``[0, 1)``; or ``{0., 1.}``.
        """
        k = levels.float()
        if self.representation == "dequantized":
            u = torch.rand(k.shape, generator=generator)
            return (k + u) / self.levels
        x = k / (self.levels - 1)
        if self.representation == "binarized":
            if self.binarize == "dynamic":
                return torch.bernoulli(x, generator=generator)
            return (x > self.threshold).float()
        return x

    # --- Lightning hooks -----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.load_splits()
            for name, (lv, _) in self.splits.items():
                if lv.ndim != len(self.shape) + 1 or tuple(lv.shape[1:]) != tuple(self.shape):
                    raise ValueError(f"{name} split has shape {tuple(lv.shape)}, expected (N, *{self.shape})")

    def _eval_tensor(self, split: str) -> torch.Tensor:
        """Floats of a split computed once, with seeded noise, so every evaluation sees the same data."""
        if split not in self._eval_x:
            g = torch.Generator().manual_seed(self.seed + 7919)
            self._eval_x[split] = self.represent(self.splits[split][0], generator=g)
        return self._eval_x[split]

    def split_tensors(self, split: str) -> Batch:
        """``(x, y)`` of a whole split, ``train``, ``val`` or ``test``, for evaluation: ``x`` ``(N, C, H, W)`` floats
        as the model sees them (seeded noise, the same on every call), ``y`` ``(N,)`` int64 labels.

        Raises:
            KeyError: for a split this source does not have.
        """
        self.setup()
        return self._eval_tensor(split), self.splits[split][1]

    def _train_loader(self, drop_last: bool) -> TensorBatchLoader:
        lv, y = self.splits["train"]
        rank, world = rank_and_world(self.trainer)
        loader = TensorBatchLoader(
            lv, y, self.batch_size, self.represent, shuffle=True,
            drop_last=drop_last, seed=self.seed, rank=rank, world_size=world, seeded_noise=True,
        )  # fmt: skip
        return follow_trainer(loader, self.trainer)

    def train_dataloader(self) -> TensorBatchLoader:
        """Shuffled training batches with fresh noise each epoch; a final partial batch is dropped (gradient steps)."""
        return self._train_loader(drop_last=True)

    def pass_dataloader(self) -> TensorBatchLoader:
        """The training split for a model fitted by passes (``genlab.passes``): every example exactly once per
        iteration, the last batch partial, shuffled with fresh noise each pass as :meth:`train_dataloader`."""
        return self._train_loader(drop_last=False)

    def _eval_loader(self, split: str) -> TensorBatchLoader:
        rank, world = rank_and_world(self.trainer)
        x, y = self._eval_tensor(split), self.splits[split][1]
        return TensorBatchLoader(x, y, self.eval_batch_size, lambda t: t, rank=rank, world_size=world)

    def val_dataloader(self) -> TensorBatchLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> TensorBatchLoader:
        return self._eval_loader("test")
