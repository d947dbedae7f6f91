"""What every entry point does the same way: resolve config, build from it, report, and fail clearly."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import genlab
from genlab.errors import ConfigError, GenlabError

OmegaConf.register_new_resolver(
    "genlab.wandb_offline", lambda: os.environ.get("WANDB_MODE", "offline") != "online", replace=True
)


def output_dir() -> Path:
    """This job's run folder (Hydra's ``runtime.output_dir``)."""
    return Path(HydraConfig.get().runtime.output_dir)


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that has a ``_target_`` (``null`` entries are skipped)."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def versions() -> dict[str, str]:
    """Versions of genlab and the libraries that decide its numbers."""
    import torch

    return {"genlab": genlab.__version__, "torch": torch.__version__, "lightning": L.__version__}


def overrides() -> list[str]:
    """The command-line overrides that made this job."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def to_number(v: Any) -> Any:
    """Tensors and numbers to plain floats (NaN/inf to ``None``, JSON has neither); others unchanged."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_metrics(path: Path, metrics: dict[str, Any], cfg: DictConfig, **extra: Any) -> Path:
    """Write ``metrics.json``: flat ``stage/name`` numbers, plus ``config`` and ``versions``.

    Raises:
        ConfigError: if ``path`` exists already (a finished run is never overwritten).
    """
    if path.exists():
        raise ConfigError(f"{path} exists: refusing to overwrite a finished run; choose a new hydra.run.dir")
    record = {k: to_number(v) for k, v in sorted(metrics.items())}
    record.update(extra)
    record["config"] = {"overrides": overrides(), "resolved": OmegaConf.to_container(cfg, resolve=True)}
    record["versions"] = versions()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def finish_wandb(failed: bool) -> None:
    """End the active wandb run (if any) so the next job of a multirun starts a fresh one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def run_cli(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``task(cfg)``; a :class:`GenlabError` becomes one line on stderr and exit code 2.

    The wandb run is always finished, whether the task succeeds or fails.
    """
    failed = True
    try:
        result = task(cfg)
        failed = False
        return result
    except (GenlabError, InstantiationException) as e:
        cause: BaseException | None = e
        while cause is not None and not isinstance(cause, GenlabError):
            cause = cause.__cause__
        if cause is None:
            raise
        print(f"genlab: error: {cause}", file=sys.stderr)
        sys.exit(2)
    finally:
        finish_wandb(failed)
