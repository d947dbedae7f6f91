"""Rules a report applies to its rows: the elbow of a loss curve, and each experiment's verdict lines.

An experiment's ``report.verdict`` names a function ``f(rows, spec) -> Verdict`` (a dotted path); it states what was
measured, in numbers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from genlab.errors import ConfigError
from genlab.report.table import Row


@dataclass
class Verdict:
    """What a report concludes: ``lines`` (Markdown sentences) and ``marks`` (``{hue value: x}`` drawn on plots)."""

    lines: list[str] = field(default_factory=list)
    marks: dict[str, float] = field(default_factory=dict)


def elbow(sizes: list[float], losses: list[float], percent: float) -> float:
    """The size at which adding dimensions stops paying: the first size whose next size lowers the loss by no more
    than ``percent`` % of its own loss (the largest size when every step pays).

    Args:
        sizes: increasing sizes, e.g. latent dimensions.
        losses: the loss at each size (positive, lower is better).
        percent: the threshold x of the rule, in percent.

    Raises:
        ConfigError: for empty or mismatched inputs.
    """
    if not sizes or len(sizes) != len(losses):
        raise ConfigError(f"elbow needs one loss per size, got {len(sizes)} sizes and {len(losses)} losses")
    pairs = sorted(zip(sizes, losses))
    for (size, loss), (_, nxt) in zip(pairs, pairs[1:]):
        if (loss - nxt) <= percent / 100 * abs(loss):
            return size
    return pairs[-1][0]


def run_verdict(rows: list[Row], spec: dict[str, Any]) -> Verdict:
    """Call the function ``spec["verdict"]`` names (none: an empty verdict).

    Raises:
        ConfigError: when the name does not import.
    """
    name = spec.get("verdict")
    if not name:
        return Verdict()
    module, _, attr = str(name).rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"report.verdict={name} does not name a function ({e})") from e
    return fn(rows, spec)
