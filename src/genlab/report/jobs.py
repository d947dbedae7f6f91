"""Find the jobs under run and sweep folders, and read what each one left: ``metrics.json``, or why there is none.

A job folder is one that holds ``metrics.json`` or a ``.hydra/overrides.yaml`` (a Hydra single run, or one job of a
multirun). Only files are read: nothing here imports torch, Lightning or wandb.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genlab.errors import DataError

SKIP = {"checkpoints", "csv", "wandb", "tensorboard", "evaluation", ".hydra"}  # folders a job writes inside itself


@dataclass
class Job:
    """One run as its files describe it.

    Attributes:
        folder: the job's folder.
        status: ``ok``, ``failed``, ``diverged`` or ``interrupted`` (from ``metrics.json``), or ``incomplete``.
        reason: why it is not ``ok`` (``metrics.json``, else the last error line of its log), or ``""``.
        overrides: ``{key: value}`` of the command-line overrides that made it (``model=vae_mlp`` gives
            ``{"model": "vae_mlp"}``).
        metrics: the flat ``stage/name`` entries of ``metrics.json`` (numbers, strings, lists).
        config: the resolved config stored in ``metrics.json`` (``{}`` without one).
    """

    folder: Path
    status: str
    reason: str = ""
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def split_override(override: str) -> tuple[str, str]:
    """``"+model.beta=2"`` -> ``("model.beta", "2")``; ``"~x"`` -> ``("x", "")``."""
    key, _, value = override.lstrip("+~").partition("=")
    return key, value


def last_error(log: Path) -> str:
    """The last line of a job log that reads as an error (``genlab: error: ...``, an exception line), or ``""``."""
    if not log.is_file():
        return ""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    for line in reversed(lines):
        if "error" in line.lower() or line.split(":")[0].endswith(("Error", "Exception")):
            return line[-300:]
    return ""


def read_job(folder: Path) -> Job:
    """The :class:`Job` of one folder; a ``metrics.json`` that cannot be parsed makes an ``incomplete`` job."""
    path = folder / "metrics.json"
    overrides_file = folder / ".hydra" / "overrides.yaml"
    overrides: list[str] = []
    if overrides_file.is_file():
        overrides = [str(o) for o in yaml.safe_load(overrides_file.read_text()) or []]
    if path.is_file():
        try:
            record = json.loads(path.read_text())
        except ValueError as e:
            why = f"metrics.json is not valid JSON ({e})"
            return Job(folder, "incomplete", why, dict(map(split_override, overrides)))
        config = record.get("config") or {}
        overrides = list(config.get("overrides") or overrides)
        metrics = {k: v for k, v in record.items() if "/" in k}
        status = str(record.get("status", "ok"))
        return Job(folder, status, str(record.get("reason", "")), dict(map(split_override, overrides)), metrics,
                   config.get("resolved") or {})  # fmt: skip
    logs = sorted(folder.glob("*.log"))
    reason = next((r for r in (last_error(p) for p in logs) if r), "") or "no metrics.json (still running, or killed)"
    return Job(folder, "incomplete", reason, dict(map(split_override, overrides)))


def is_job(folder: Path) -> bool:
    """Whether ``folder`` is a job's own folder (see the module docstring)."""
    return (folder / "metrics.json").is_file() or (folder / ".hydra" / "overrides.yaml").is_file()


def job_folders(root: Path) -> list[Path]:
    """``root`` itself if it is a job, else every job folder below it (not inside another job), sorted; multirun
    jobs numbered ``0, 1, ..., 10`` sort by number."""
    if is_job(root):
        return [root]
    found: list[Path] = []
    for child in root.iterdir():
        if child.is_dir() and child.name not in SKIP and not child.name.startswith("."):
            found += job_folders(child)
    return sorted(found, key=lambda p: [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in p.parts])


def collect(paths: list[str]) -> list[Job]:
    """The jobs under ``paths`` (folders or glob patterns), each once, in order.

    Raises:
        DataError: for a path that matches nothing, or when no job is found at all.
    """
    folders: list[Path] = []
    for arg in paths:
        matches = sorted(glob.glob(arg)) if glob.has_magic(arg) else [arg]
        if not matches or not all(Path(m).is_dir() for m in matches):
            raise DataError(f"report: {arg} is not a run or sweep folder (pass e.g. outputs/train/multiruns/<time>)")
        for m in matches:
            folders += [f for f in job_folders(Path(m)) if f not in folders]
    if not folders:
        raise DataError(f"report: no runs under {' '.join(paths)} (a run folder holds metrics.json or .hydra/)")
    return [read_job(f) for f in folders]
