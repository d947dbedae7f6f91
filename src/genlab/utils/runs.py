"""What every entry point does the same way: resolve config, build from it, report, and fail clearly."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, MissingMandatoryValue, OmegaConf

import genlab
from genlab.errors import ConfigError, Diverged, GenlabError, Interrupted, JobFailed

OmegaConf.register_new_resolver(
    "genlab.wandb_offline", lambda: os.environ.get("WANDB_MODE", "offline") != "online", replace=True
)


def run_group(task_name: str) -> str:
    """The wandb group of this job: the sweep folder's name in a multirun (all its jobs share it), else the task."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return task_name
    from hydra.types import RunMode

    return f"{task_name}-{Path(hc.sweep.dir).name}" if hc.mode == RunMode.MULTIRUN else task_name


def measured_overrides() -> list[str]:
    """The job's overrides that change what is measured: logger, callback, path and Hydra settings left out."""
    return [o for o in overrides() if not o.lstrip("+~").startswith(("logger", "callbacks", "paths", "hydra"))]


def run_name(default: str) -> str:
    """The wandb run name: the job's :func:`measured_overrides` (``model.latent_dim=8,model=vae_cnn``), or
    ``default`` without any."""
    return ",".join(measured_overrides()) or default


def run_tags(base: list[str]) -> list[str]:
    """The wandb tags: ``base`` plus one per :func:`measured_overrides` item (cut to wandb's 64 characters)."""
    return list(dict.fromkeys([*base, *(o[:64] for o in measured_overrides())]))


def resume_dir(runs_root: str, ckpt_path: Any, fresh: str) -> str:
    """The run folder of a job: for ``ckpt_path=last`` or ``best``, the newest run under ``runs_root`` that is not
    finished (its ``metrics.json`` is absent or not ``ok``) and holds ``checkpoints/last.ckpt``, so the run resumes
    in its own folder; else (or when there is none: ``train.py`` then refuses) ``fresh``."""
    if str(ckpt_path) not in ("last", "best"):
        return fresh
    root = Path(runs_root)
    candidates = [p for p in root.iterdir() if (p / "checkpoints" / "last.ckpt").is_file()] if root.is_dir() else []
    candidates = [p for p in candidates if not finished(p / "metrics.json")]
    return str(max(candidates, key=lambda p: p.name)) if candidates else fresh


def run_stamp(now: str) -> str:
    """The name of a fresh run folder: the time ``now``, or, when an external launcher started the ranks of one run,
    a name every rank computes alike: ``torchrun-<rdzv id>`` under ``torchrun`` (its ``TORCHELASTIC_RUN_ID``; pass
    ``--standalone`` or ``--rdzv-id``), ``slurm-<job>-<step>`` for the tasks of one ``srun`` (also after a requeue).
    """
    elastic = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if elastic != "none":
        return f"torchrun-{elastic}"
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return f"slurm-{os.environ['SLURM_JOB_ID']}-{os.environ.get('SLURM_STEP_ID', '0')}"
    return now


def launched_rank() -> int:
    """This process's global rank when an external launcher started the ranks (``RANK`` under ``torchrun``,
    ``SLURM_PROCID`` under ``srun``), else 0."""
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def resume_subdir(run_dir: str) -> str | None:
    """Where Hydra writes the job's config: ``.hydra``, or ``.hydra/resume-<n>`` when ``run_dir`` has one already
    (a resumed run keeps its original ``.hydra/`` and records each resume's config beside it); ``None`` (none at all)
    for ranks > 0 of a run that ``torchrun`` or ``srun`` started, which share rank 0's folder."""
    if launched_rank() > 0:
        return None
    base = Path(run_dir) / ".hydra"
    if not (base / "config.yaml").is_file():
        return ".hydra"
    n = 1
    while (base / f"resume-{n}").exists():
        n += 1
    return f".hydra/resume-{n}"


def log_version() -> str:
    """The CSV logger's version folder: ``""`` for a fresh run, ``resume-<n>`` for its n-th resume, so a resumed run
    writes beside the first metrics.csv instead of replacing it."""
    try:
        subdir = HydraConfig.get().output_subdir or ""
    except ValueError:
        return ""
    return Path(subdir).name if Path(subdir).name.startswith("resume-") else ""


OmegaConf.register_new_resolver("genlab.log_version", log_version, replace=True)
OmegaConf.register_new_resolver("genlab.resume_dir", resume_dir, replace=True, use_cache=True)
OmegaConf.register_new_resolver("genlab.resume_subdir", resume_subdir, replace=True, use_cache=True)  # once a job
OmegaConf.register_new_resolver("genlab.run_group", run_group, replace=True)
OmegaConf.register_new_resolver("genlab.run_stamp", run_stamp, replace=True, use_cache=True)
OmegaConf.register_new_resolver("genlab.rank_suffix", lambda: f"_rank{launched_rank()}" if launched_rank() else "")
OmegaConf.register_new_resolver("genlab.run_name", run_name, replace=True)
OmegaConf.register_new_resolver("genlab.run_tags", lambda base: run_tags(list(base)), replace=True)


def output_dir() -> Path:
    """This job's run folder (Hydra's ``runtime.output_dir``)."""
    return Path(HydraConfig.get().runtime.output_dir)


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that has a ``_target_`` (``null`` entries are skipped)."""
    if not group:
        return []
    return [instantiate(c) for c in group.values() if isinstance(c, DictConfig) and "_target_" in c]


def versions() -> dict[str, Any]:
    """Versions of genlab and the libraries that decide its numbers, and torch's intra-op thread count."""
    import torch

    return {"genlab": genlab.__version__, "torch": torch.__version__, "lightning": L.__version__,
            "torch_threads": torch.get_num_threads()}  # fmt: skip


def override_key(override: str) -> str:
    """``"+model.beta=2"`` -> ``"model.beta"``."""
    return override.lstrip("+~").split("=", 1)[0]


def merged_overrides(original: list[str], current: list[str]) -> list[str]:
    """A resumed run's overrides: ``original`` (but its ``ckpt_path``) then ``current``, a key given again taking its
    new value."""
    now = {override_key(o) for o in current}
    return [o for o in original if override_key(o) not in now | {"ckpt_path"}] + list(current)


def original_overrides() -> list[str] | None:
    """The overrides of the first session of a run resumed in its own folder (``ckpt_path=last|best|auto`` and a
    ``.hydra/resume-<n>`` config: its ``.hydra/overrides.yaml``), or ``None`` when this job is not such a resume."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    resuming = any(o in (f"ckpt_path={k}" for k in ("last", "best", "auto")) for o in hc.overrides.task)
    if not resuming or not log_version():  # a run again in a failed run's folder, or a fresh one, starts as given
        return None
    first = Path(hc.runtime.output_dir) / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(first)] if first.is_file() else None


def overrides() -> list[str]:
    """The command-line overrides that made this job; for a run resumed in its folder, the first session's
    overrides with this session's on top (:func:`merged_overrides`)."""
    try:
        current = list(HydraConfig.get().overrides.task)
    except ValueError:
        return []
    original = original_overrides()
    return current if original is None else merged_overrides(original, current)


def to_number(v: Any) -> Any:
    """Tensors and numbers to plain floats (NaN/inf to ``None``, JSON has neither); others unchanged."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def git_state() -> dict[str, Any]:
    """``{"commit": <sha>, "dirty": bool}`` of the genlab checkout that runs (both ``None`` outside a git checkout,
    e.g. an installed wheel); ``dirty``: tracked files differ from the commit."""
    repo = Path(genlab.__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return {"commit": None, "dirty": None}
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True, text=True, timeout=10)  # noqa: E731
        commit = run("rev-parse", "HEAD").stdout.strip() or None
        dirty = bool(run("status", "--porcelain", "--untracked-files=no").stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def finished(path: Path) -> bool:
    """Whether ``path`` (a ``metrics.json``) records a finished run: ``status`` ``ok`` (or a file from before
    ``status`` existed). Failed, diverged and interrupted runs may be run again in their folder."""
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("status", "ok") == "ok"
    except (OSError, ValueError):
        return False


def config_record(cfg: DictConfig) -> dict[str, Any]:
    """``{"overrides": [...], "resolved": {...}}``; a config that cannot be resolved is stored as written."""
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # the error being recorded may be in the config itself
        resolved = OmegaConf.to_container(cfg, resolve=False)
    return {"overrides": overrides(), "resolved": resolved}


def write_metrics(
    path: Path, metrics: dict[str, Any], cfg: DictConfig, status: str = "ok", reason: str | None = None, **extra: Any
) -> Path:
    """Write ``metrics.json``: flat ``stage/name`` numbers, ``status`` (``ok``, ``failed``, ``diverged`` or
    ``interrupted``, with ``reason``), plus ``config`` (the overrides and the resolved config), ``versions``
    and ``git``.

    Raises:
        ConfigError: if ``path`` holds a finished ``ok`` run (it is never overwritten).
    """
    if finished(path):
        raise ConfigError(f"{path} exists: refusing to overwrite a finished run; choose a new hydra.run.dir")
    record: dict[str, Any] = {"status": status}
    if reason is not None:
        record["reason"] = reason
    record.update({k: to_number(v) for k, v in sorted(metrics.items())})
    record.update(extra)
    record["config"] = config_record(cfg)
    record["versions"] = versions()
    record["git"] = git_state()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, path)  # a reader never sees half a file
    return path


def finish_wandb(failed: bool) -> None:
    """End the active wandb run (if any) so the next job of a multirun starts a fresh one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def log_error(message: str, exc: BaseException | None = None) -> None:
    """Write ``message`` (and ``exc``'s traceback) to the job's log file (Hydra's ``<task>.log``) only."""
    record = logging.LogRecord("genlab", logging.ERROR, __file__, 0, message, None, None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    for handler in logging.getLogger().handlers:  # the log file only: stderr gets its own line
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def in_multirun() -> bool:
    """Whether this job is one of a Hydra multirun (``-m``)."""
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def record_failure(cfg: DictConfig, status: str, reason: str, checkpoint: str = "") -> None:
    """Write ``metrics.json`` with ``status`` and ``reason`` in the job's folder (unless it holds a finished run)."""
    try:
        path = output_dir() / "metrics.json"
        if not finished(path):
            write_metrics(
                path, {}, cfg, status=status, reason=reason, artifacts={"checkpoint": checkpoint} if checkpoint else {}
            )
    except Exception as e:  # recording must never hide the error being recorded
        log_error(f"could not record the failure in metrics.json: {e}")


def pin_threads() -> int:
    """Give torch ``$OMP_NUM_THREADS`` intra-op threads when it is set (``hydra.job.env_set`` sets it per job, also in
    a launcher's worker process whose torch started earlier with another count). Returns ``torch.get_num_threads()``.
    """
    import torch

    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def _genlab_cause(e: BaseException) -> GenlabError | None:
    cause: BaseException | None = e
    while cause is not None and not isinstance(cause, GenlabError):
        cause = cause.__cause__
    return cause


def run_cli(task: Callable[[DictConfig], Any], cfg: DictConfig, record: bool = False) -> Any:
    """Run ``task(cfg)`` through genlab's one failure path.

    A :class:`GenlabError` (also wrapped by Hydra's instantiate) or a missing required value (``???``) becomes one
    line on stderr and in the job log. Any other exception keeps its traceback (in the log too). With ``record``,
    the job's ``metrics.json`` then says ``status: failed`` (``diverged`` for :class:`Diverged`, ``interrupted`` for
    :class:`Interrupted`) and why. A single run exits with code 2 (143 when interrupted by SIGTERM, 1 for a
    traceback); a multirun job raises, so that Hydra records it as failed and the
    sweep goes on with the next job and ends with a non-zero exit code.

    The wandb run is always finished, whether the task succeeds or fails, and before the error line,
    so that the error is the last thing printed.
    """
    pin_threads()
    try:
        result = task(cfg)
    except MissingMandatoryValue as e:
        exc, cause, reason = e, None, f"{e.full_key} is required: pass {e.full_key}=<value> on the command line"
    except Exception as e:
        exc, cause = e, _genlab_cause(e)
        first_line = "".join(str(e).strip().splitlines()[:1])
        reason = str(cause) if cause is not None else f"{type(e).__name__}: {first_line}"
    except BaseException:
        finish_wandb(failed=True)
        raise
    else:
        finish_wandb(failed=False)
        return result
    finish_wandb(failed=True)
    status = "failed"
    if isinstance(cause, (Diverged, Interrupted)):
        status = "diverged" if isinstance(cause, Diverged) else "interrupted"
    if record:
        record_failure(cfg, status, reason, getattr(cause, "checkpoint", ""))
    traceback = cause is None and not isinstance(exc, MissingMandatoryValue)
    log_error(reason, exc if traceback else None)
    if traceback:
        raise exc
    print(f"genlab: error: {reason}", file=sys.stderr)
    if in_multirun():
        job = HydraConfig.get().job
        raise JobFailed(
            f"genlab: job {job.num} ({' '.join(overrides()) or 'no overrides'}) {status}: {reason}"
        ) from None
    sys.exit(getattr(cause, "exit_code", 2))
