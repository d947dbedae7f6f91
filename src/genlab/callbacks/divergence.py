"""Stop a run that diverges, before a checkpoint with non-finite weights can be written."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

from genlab.errors import Diverged


class DivergenceGuard(L.Callback):
    """Raise :class:`~genlab.errors.Diverged` when the training loss is not finite or grows by orders of magnitude.

    After every training batch it reads ``monitor`` (the loss the model logged, e.g. ``train/loss`` in nats per
    example); after every validation it reads ``val_monitor``. The run stops when a value is NaN or infinite, or
    when the training loss exceeds ``best + growth * max(|best|, 1)``, ``best`` being the lowest value seen so far
    (``growth = 1000``: three orders of magnitude). It runs before Lightning's ``ModelCheckpoint`` (which
    Lightning always calls last), so ``last.ckpt`` and the best checkpoint keep the last finite weights.
    Lightning's ``EarlyStopping(check_finite=True)`` stops such a run too, but quietly, and after the fact; this
    callback names the step and the metric.

    Args:
        monitor: the training metric to watch.
        val_monitor: the validation metric to watch (``None``: none).
        growth: how many times ``max(|best|, 1)`` the loss may rise above its best before the run is stopped.

    Raises:
        Diverged: naming the metric, its value and the optimiser step, and the fix to try.
    """

    def __init__(self, monitor: str = "train/loss", val_monitor: str | None = "val/loss", growth: float = 1000.0):
        self.monitor, self.val_monitor, self.growth = monitor, val_monitor, float(growth)
        self.best = math.inf

    def _value(self, trainer: L.Trainer, key: str | None) -> float | None:
        value = trainer.callback_metrics.get(key) if key else None
        return None if value is None else float(value.detach().cpu() if isinstance(value, torch.Tensor) else value)

    def _stop(self, what: str, trainer: L.Trainer) -> None:
        raise Diverged(f"training diverged at step {trainer.global_step} (epoch {trainer.current_epoch}): {what}; "
                       "lower model.lr (or clip gradients with trainer.gradient_clip_val)")  # fmt: skip

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        value = self._value(trainer, self.monitor)
        if value is None:
            return
        if not math.isfinite(value):
            self._stop(f"{self.monitor} is {value}", trainer)
        if value > self.best + self.growth * max(abs(self.best), 1.0) and math.isfinite(self.best):
            self._stop(f"{self.monitor} = {value:.4g} rose more than {self.growth:g}-fold above its best "
                       f"{self.best:.4g}", trainer)  # fmt: skip
        self.best = min(self.best, value)

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        value = self._value(trainer, self.val_monitor)
        if value is not None and not math.isfinite(value):
            self._stop(f"{self.val_monitor} is {value}", trainer)

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.best = float(state_dict.get("best", math.inf))
