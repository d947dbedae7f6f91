"""Train any genlab model on any DataModule: ``python -m genlab.train model=vae_cnn data=mnist``.

Composes ``conf/train.yaml``, fits (resuming from ``ckpt_path`` when given), tests the best
checkpoint, evaluates it (``evaluation=default|full|none``, :mod:`genlab.evaluation`), writes
``metrics.json``, figures and sample/reconstruction grids into the run folder, and returns
``cfg.optimized_metric`` for Hydra sweepers.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.callbacks.preemption import CheckpointOnInterrupt
from genlab.errors import ConfigError, Diverged, Interrupted
from genlab.evaluation import evaluate, preflight, settings
from genlab.passes import fit_by_passes
from genlab.utils.checkpoint import read_meta
from genlab.utils.console import print_summary
from genlab.utils.distributed import job_ranks
from genlab.utils.files import AtomicCheckpointIO
from genlab.utils.runs import (
    finish_wandb,
    finished,
    in_multirun,
    instantiate_all,
    merged_overrides,
    original_overrides,
    output_dir,
    run_cli,
    write_metrics,
)


def seconds_per_sample(model: L.LightningModule, n: int = 16) -> float | None:
    """Wall time of ``model.sample(n)`` divided by ``n`` (``None`` for models that cannot sample).

    On a GPU the clock stops after ``torch.cuda.synchronize``, so it times the kernels, not their launch.
    """
    if not model.can("sample") or n <= 0:
        return None
    model.eval()
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    model.sample(n)
    sync()
    return (time.perf_counter() - start) / n


def interrupted(trainer: L.Trainer, callbacks: list[Any]) -> Interrupted | None:
    """The :class:`Interrupted` error for a fit that :class:`CheckpointOnInterrupt` saved (``None`` if it did not)."""
    cb = next((c for c in callbacks if isinstance(c, CheckpointOnInterrupt) and c.saved), None)
    if cb is None:
        return None
    err = Interrupted(f"stopped by {cb.signal} at step {trainer.global_step} (epoch {trainer.current_epoch}); "
                      f"{cb.saved} holds the run: resume it with ckpt_path=last (or auto in its folder)")  # fmt: skip
    err.checkpoint, err.exit_code = str(cb.saved), 130 if cb.signal == "SIGINT" else 143
    return err


def resume_wandb_run(cfg: DictConfig, ckpt_path: str) -> None:
    """Make ``logger.wandb`` continue the wandb run that wrote ``ckpt_path`` (its id is stored in the checkpoint;
    wandb's ``resume="allow"``), so a resumed run's history stays one run on the dashboard."""
    run_id = read_meta(ckpt_path).get("wandb_id")
    wandb = (cfg.get("logger") or {}).get("wandb")
    if run_id and isinstance(wandb, DictConfig) and "WandbLogger" in str(wandb.get("_target_", "")):
        with open_dict(wandb):
            wandb.id, wandb.resume = run_id, "allow"


def resolve_checkpoint(ckpt_path: str | None, out: Path) -> str | None:
    """The checkpoint to resume from: ``None``, a path, or ``last`` / ``best`` of the run folder ``out`` (which
    ``conf/hydra/default.yaml`` points at the newest unfinished run of the task, or ``hydra.run.dir`` names).
    ``auto``: ``out``'s ``last.ckpt`` when there is one, else a fresh start (for jobs a scheduler may requeue in their
    own folder).

    Raises:
        ConfigError: for ``last`` / ``best`` when the folder holds no such checkpoint (never a silent fresh start).
        DataError: for a missing, truncated or corrupt checkpoint file, or one genlab did not write.
    """
    if ckpt_path is None:
        return None
    folder = out / "checkpoints"
    if str(ckpt_path) == "auto":
        ckpt_path = "last" if (folder / "last.ckpt").is_file() else None
        if ckpt_path is None:
            return None
    if str(ckpt_path) in ("last", "best"):
        path = folder / "last.ckpt"
        if path.is_file() and ckpt_path == "best":
            states = read_meta(path, full=True).get("callbacks", {})
            best = [v.get("best_model_path") for k, v in states.items() if k.startswith("ModelCheckpoint")]
            best = [b for b in best if b]  # the time-based checkpoint keeps no best
            path = Path(best[0]) if best else folder / "missing-best.ckpt"
        if not path.is_file():
            raise ConfigError(f"ckpt_path={ckpt_path}: nothing to resume, {path} does not exist (no unfinished run of "
                              f"this task holds checkpoints/last.ckpt); pass ckpt_path=<file> or "
                              f"hydra.run.dir=<run folder>")  # fmt: skip
    else:
        path = Path(str(ckpt_path))
    read_meta(path)  # one line for a missing, truncated or foreign file
    return str(path)


def train(cfg: DictConfig) -> float | None:
    """Fit, test and report one run; returns the value of ``cfg.optimized_metric`` (or ``None``). In a multirun,
    the ranks of a DDP job run that job alone (:func:`genlab.utils.distributed.job_ranks`)."""
    with job_ranks(in_multirun(), module="genlab.train"):
        return fit_test_report(resumed_config(cfg))


def resumed_config(cfg: DictConfig) -> DictConfig:
    """``cfg``, or for a run resumed in its own folder, the config composed again from the first session's
    overrides with this session's on top (``ckpt_path=last`` alone continues the run as it was started).
    Hydra's compose API; the first session's ``.hydra/overrides.yaml`` is the record."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig

    original = original_overrides()
    if original is None:
        return cfg
    current = list(HydraConfig.get().overrides.task)
    merged = merged_overrides(original, current)
    if merged == current:
        return cfg
    print(f"resuming with the run's overrides: {' '.join(merged)}")
    return compose(config_name=HydraConfig.get().job.config_name, overrides=merged)


def fit_test_report(cfg: DictConfig) -> float | None:
    """The body of :func:`train`.

    Raises:
        Interrupted: when SIGTERM, Ctrl+C or a launcher's exit stopped fitting (``checkpoints/last.ckpt`` saved).
        Diverged: for a non-finite or exploding loss, or a non-finite ``optimized_metric``.
    """
    out = output_dir()
    if finished(out / "metrics.json"):  # a failed or diverged run may be run again in its folder
        raise ConfigError(f"{out} already holds a finished run; choose a new hydra.run.dir")
    ckpt_path = resolve_checkpoint(cfg.get("ckpt_path"), out)
    if ckpt_path:
        print(f"resuming from {ckpt_path} in {out}")
        resume_wandb_run(cfg, ckpt_path)
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.get("matmul_precision", "high"))

    datamodule = instantiate(cfg.data)
    # not recursive: nested configs (networks, optimizer, scheduler) reach the model as plain dicts,
    # which it instantiates itself and stores in its hparams
    model = instantiate(cfg.model, data_spec=datamodule.spec.to_dict(), _recursive_=False, _convert_="all")
    model.genlab_meta = {
        "model_target": cfg.model._target_,
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "seed": int(cfg.seed),  # the test stage seeds its random numbers from it (see GenerativeModel)
    }
    evaluation = settings(cfg)
    preflight(model, datamodule, evaluation, out)  # a setting the evaluation refuses fails now, not after training
    callbacks = instantiate_all(cfg.get("callbacks"))
    loggers = instantiate_all(cfg.get("logger"))
    if not loggers:  # LearningRateMonitor needs a logger to write to (logger=[] runs without one)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # checkpoints are written to a temporary file and renamed: a killed write never leaves a truncated file
    plugins = [AtomicCheckpointIO()] if not cfg.trainer.get("plugins") else None
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     **({"plugins": plugins} if plugins else {}))  # fmt: skip
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        if isinstance(logger, WandbLogger):  # the run's summary holds the best validation loss, not the last
            logger.experiment.define_metric("val/loss", summary="min")

    model.genlab_meta["wandb_id"] = next((lg.version for lg in loggers if isinstance(lg, WandbLogger)), None)

    start = time.perf_counter()
    if model.can("fit"):  # fitted by passes over the data (closed form / EM), on Lightning Fabric
        best = fit_by_passes(model, datamodule, trainer, ckpt_path=ckpt_path)
    else:
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        except Diverged as e:  # never tested, sampled or returned: the record names the last finite checkpoint
            cb = trainer.checkpoint_callback
            e.checkpoint = (cb.last_model_path or cb.best_model_path) if cb else ""
            raise
        except (SystemExit, KeyboardInterrupt) as e:  # SIGTERM is Lightning's SIGTERMException, a SystemExit
            raise interrupted(trainer, callbacks) or e from None
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    fit_seconds = time.perf_counter() - start
    trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False)

    metrics: dict[str, Any] = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    metrics.update({f"test/{k}": v for k, v in model.describe().items()})
    if trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_score is not None:
        metrics["val/best_loss"] = trainer.checkpoint_callback.best_model_score
    if not trainer.is_global_zero:
        return None
    metrics["sample/seconds_per_sample"] = per_sample = seconds_per_sample(model, int(cfg.get("timing_samples", 16)))
    if per_sample:  # sub-pixels (images) or tokens (text) drawn per second
        metrics["sample/dims_per_second"], metrics["sample/num_dims"] = (
            model.spec.num_dims / per_sample,
            model.spec.num_dims,
        )
    start = time.perf_counter()
    found, figures = evaluate(model, datamodule, evaluation, out, loggers, seed=cfg.seed, step=trainer.global_step)
    metrics.update(found)
    metrics["time/fit_seconds"], metrics["time/evaluation_seconds"] = fit_seconds, time.perf_counter() - start
    artifacts = {name: str(p) for c in callbacks for name, p in getattr(c, "paths", {}).items()}
    artifacts.update({f"figure/{name}": str(p) for name, p in figures.items()})
    last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
    if best or last:  # no validation yet (max_steps inside the first epoch): the last checkpoint
        artifacts["checkpoint"] = best or last
    name = cfg.get("optimized_metric")
    value = None if not name or metrics.get(name) is None else float(metrics[name])
    if value is not None and not math.isfinite(value):  # a sweeper never gets NaN as a result
        raise Diverged(f"{name} is {value}: the run's numbers are not finite; lower model.lr")
    path = write_metrics(out / "metrics.json", metrics, cfg, artifacts=artifacts)
    finish_wandb(failed=False)  # wandb prints its own summary on finish: ours comes last
    print_summary("test", metrics, artifacts, path)
    return value


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point (``genlab-train``); see :func:`train`."""
    return run_cli(train, cfg, record=True)


if __name__ == "__main__":
    main()
