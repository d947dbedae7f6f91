"""Learning-rate schedules that models name in config (``model.scheduler``, a Hydra ``_partial_``)."""

from __future__ import annotations

import math

import torch

from genlab.checks import non_negative, positive_int, require


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate factor at optimizer step ``step`` (0-based): linear warm-up, then cosine decay.

    ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps (Goyal et al. 2017), then
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2`` with ``p = (step - warmup_steps) /
    (total_steps - warmup_steps)`` clipped to ``[0, 1]`` (Loshchilov & Hutter 2017, Eq. 5, one cycle),
    so the factor is 1 right after warm-up and ``min_ratio`` from ``total_steps`` on.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps <= warmup_steps:
        return min_ratio
    p = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int = 100, min_lr: float = 1e-4, total_steps: int | None = None
) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`warmup_cosine` from each group's learning rate down to ``min_lr``, stepped every optimizer step.

    Args:
        optimizer: the optimiser; its first group's ``lr`` is the peak.
        warmup_steps: linear warm-up steps (>= 0).
        min_lr: the learning rate from ``total_steps`` on, in ``[0, lr]``.
        total_steps: step at which the cosine reaches ``min_lr`` (the model passes the run's optimiser
            steps when this is ``None``).

    Raises:
        ConfigError: for a negative ``warmup_steps``, a ``min_lr`` outside ``[0, lr]`` or a non-positive
            ``total_steps``.
    """
    lr = optimizer.param_groups[0]["lr"]
    warmup = int(non_negative("model.scheduler.warmup_steps", warmup_steps))
    require(0 <= min_lr <= lr, "model.scheduler.min_lr", f"in [0, lr={lr}]", min_lr)
    total = positive_int("model.scheduler.total_steps", total_steps)
    ratio = min_lr / lr
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup, total, ratio))
