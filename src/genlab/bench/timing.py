"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import time

import lightning as L


class StepTimer(L.Callback):
    """Wall time (``end - start``, seconds) from the start of optimizer step ``warmup`` to the end of
    training, so that start-up and the first (slow) steps are left out of a throughput figure."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.end = time.perf_counter()


class PhaseTimer(L.Callback):
    """Where the wall time of a ``Trainer.fit`` goes, in seconds: ``train_batches`` (from each training
    batch's start to its end: forward, backward, clipping, optimizer and scheduler steps, logging),
    ``validation`` (every validation loop, sanity check included), and ``fit`` (from ``on_fit_start``
    to ``on_fit_end``); :meth:`split` adds ``other`` (everything else inside the fit: data loading
    between batches, checkpoints, callbacks such as text samples) and, given the whole run's wall
    time, the set-up and tear-down outside the fit (imports, building the data and the model)."""

    def __init__(self) -> None:
        self.train_batches = self.validation = self.fit = 0.0
        self.steps = self.validations = 0
        self._t = self._v = self._f = 0.0

    def on_fit_start(self, trainer, pl_module):
        self._f = time.perf_counter()

    def on_fit_end(self, trainer, pl_module):
        self.fit = time.perf_counter() - self._f

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.train_batches += time.perf_counter() - self._t
        self.steps += 1

    def on_validation_start(self, trainer, pl_module):
        self._v = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        self.validation += time.perf_counter() - self._v
        self.validations += 1

    def split(self, wall: float | None = None) -> dict:
        """``{"seconds": {...}, "fraction": {...}, "steps": ..., "ms_per_step": ..., ...}``; ``wall``: the
        run's whole wall time (default: the fit's)."""
        wall = self.fit if wall is None else wall
        other = self.fit - self.train_batches - self.validation
        parts = {"optimizer_steps": self.train_batches, "validations": self.validation, "other_in_fit": other,
                 "outside_fit": wall - self.fit}  # fmt: skip
        return {
            "wall_seconds": round(wall, 2),
            "seconds": {k: round(v, 2) for k, v in parts.items()},
            "fraction": {k: round(v / wall, 4) if wall > 0 else 0.0 for k, v in parts.items()},
            "steps": self.steps,
            "ms_per_step": round(1000 * self.train_batches / max(self.steps, 1), 2),
            "validations": self.validations,
            "seconds_per_validation": round(self.validation / max(self.validations, 1), 2),
        }
