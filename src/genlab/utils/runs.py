"""What every entry point does the same way: resolve config, build from it, report, and fail clearly."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, MissingMandatoryValue, OmegaConf

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


def fail(message: str) -> NoReturn:
    """Report a user error on stderr and in the job's log file (Hydra's ``<task>.log``), then exit 2."""
    record = logging.LogRecord("genlab", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:  # the log file only: stderr gets the one line below
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    print(f"genlab: error: {message}", file=sys.stderr)
    sys.exit(2)


def run_cli(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run ``task(cfg)``; a :class:`GenlabError` or a missing required value (``???``) becomes one line
    on stderr (and in the job log) and exit code 2.

    The wandb run is always finished, whether the task succeeds or fails, and before the error line,
    so that the error is the last thing printed.
    """
    try:
        result = task(cfg)
    except MissingMandatoryValue as e:
        finish_wandb(failed=True)
        fail(f"{e.full_key} is required: pass {e.full_key}=<value> on the command line")
    except (GenlabError, InstantiationException) as e:
        finish_wandb(failed=True)
        cause: BaseException | None = e
        while cause is not None and not isinstance(cause, GenlabError):
            cause = cause.__cause__
        if cause is None:
            raise
        fail(str(cause))
    except BaseException:
        finish_wandb(failed=True)
        raise
    finish_wandb(failed=False)
    return result
