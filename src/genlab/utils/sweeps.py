"""A Hydra callback that ends a sweep with a non-zero exit code when any of its jobs failed or diverged."""

from __future__ import annotations

import atexit
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
    """After a multirun (any sweeper: basic, Optuna; any launcher), list the jobs that failed, diverged or were
    interrupted, one line each, and exit with code 1 if there were any, so that scripts see the failure even when
    the sweeper went on (Optuna's ``max_failure_rate``). When Hydra itself ends the sweep by re-raising a job's error
    (the basic sweeper does, naming that job alone), the list is printed as the process exits."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.reported = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir, self.reported = Path(config.hydra.sweep.dir), False
        atexit.register(self.at_exit)

    def report(self) -> int:
        """Print the failed jobs and a summary line to stderr; returns how many there were."""
        self.reported = True
        bad = failed_jobs(self.sweep_dir) if self.sweep_dir is not None else []
        for job, status, reason in bad:
            print(f"genlab: job {job} {status}: {reason}", file=sys.stderr)
        if bad:
            print(f"genlab: error: {len(bad)} job(s) of the sweep {self.sweep_dir} did not finish ok", file=sys.stderr)
        return len(bad)

    def at_exit(self) -> None:
        if not self.reported:
            self.report()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)
        if self.report():
            sys.exit(1)
