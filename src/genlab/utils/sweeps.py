"""A Hydra callback that ends a sweep with a non-zero exit code when any of its jobs failed or diverged."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def failed_jobs(sweep_dir: Path) -> list[tuple[str, str, str]]:
    """``(job folder name, status, reason)`` of every job under ``sweep_dir`` whose ``metrics.json`` is not ``ok``."""
    out = []
    for path in sorted(sweep_dir.glob("*/metrics.json"), key=lambda p: p.parent.name):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            out.append((path.parent.name, "failed", "unreadable metrics.json"))
            continue
        if record.get("status", "ok") != "ok":
            out.append((path.parent.name, record["status"], record.get("reason", "")))
    return out


class SweepSummary(Callback):
    """After a multirun (any sweeper: basic, Optuna), list the jobs that failed or diverged, one line each, and exit
    with code 1 if there were any, so that scripts see the failure even when the sweeper went on (Optuna's
    ``max_failure_rate``)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        bad = failed_jobs(Path(config.hydra.sweep.dir))
        if not bad:
            return
        for job, status, reason in bad:
            print(f"genlab: job {job} {status}: {reason}", file=sys.stderr)
        print(f"genlab: error: {len(bad)} job(s) of the sweep {config.hydra.sweep.dir} failed or diverged",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)
