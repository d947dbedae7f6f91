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
