"""Terminal output with rich."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from genlab.utils.runs import to_number


def print_summary(stage: str, metrics: dict[str, Any], artifacts: dict[str, str], path: Path) -> None:
    """Print the ``stage/*`` metrics as a table, then the files written (grids, checkpoint, metrics)."""
    table = Table(title=f"genlab {stage} results")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(metrics):
        v = to_number(metrics[key])
        table.add_row(key, f"{v:.6g}" if isinstance(v, float) else str(v))
    console = Console()
    console.print(table)
    for name, p in artifacts.items():
        console.print(f"{name}: {p}", soft_wrap=True)
    console.print(f"metrics: {path}", soft_wrap=True)
