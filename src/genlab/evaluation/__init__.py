"""The three tests of a generative model (density, sampling, representation), one evaluator for all.

:func:`evaluate` runs the tests named in ``conf/evaluation/<name>.yaml`` on any model through the
protocol and its declared capabilities; a test that does not apply is reported as ``"n/a: <reason>"``.
Every key it writes is listed in :mod:`genlab.schema`.
"""

from __future__ import annotations

import csv
import importlib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from genlab.errors import ConfigError
from genlab.evaluation.context import Context, Outcome

#: every test, in the order it runs; each is a module of this package (see :mod:`genlab.evaluation.context`)
TESTS = ("density", "samples", "representation", "prototypes", "classifier", "ood")


def check_tests(names: Iterable[str]) -> list[str]:
    """The test names of ``evaluation.tests``, in :data:`TESTS` order.

    Raises:
        ConfigError: for an unknown name.
    """
    names = list(names or [])
    unknown = [n for n in names if n not in TESTS]
    if unknown:
        raise ConfigError(f"unknown evaluation test(s) {unknown} in evaluation.tests; choose from {list(TESTS)}")
    return [t for t in TESTS if t in names]


def settings(cfg: Any) -> dict[str, Any]:
    """The ``evaluation`` group of a run's config as a plain dict, with the run's ``data_dir`` (for outlier data)."""
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(cfg.evaluation, resolve=True) if cfg.get("evaluation") is not None else {}
    paths = cfg.get("paths") or {}
    out.setdefault("data_dir", paths.get("data_dir"))
    return out


def preflight(model: Any, datamodule: Any, cfg: dict[str, Any], out_dir: Path) -> None:
    """Refuse impossible evaluation settings before training starts (the same checks :func:`evaluate` makes).

    Raises:
        ConfigError: naming the setting and the fix.
    """
    from lightning.pytorch.utilities import rank_zero_only

    tests = check_tests(cfg.get("tests"))
    if tests and cfg.get("device", "auto") not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"evaluation.device must be cpu, cuda or auto, got {cfg.get('device')!r}")
    modules = [importlib.import_module(f"genlab.evaluation.{name}") for name in tests]
    checks = [m.check for m in modules if hasattr(m, "check")]
    if checks and rank_zero_only.rank == 0:  # only rank 0 evaluates
        datamodule.prepare_data()
        datamodule.setup("fit")
        ctx = Context(model, datamodule, cfg, out_dir, device="cpu", prepare=False)  # the model stays as it is
        for check in checks:
            check(ctx)


def evaluate(
    model: Any,
    datamodule: Any,
    cfg: dict[str, Any],
    out_dir: Path,
    loggers: Iterable[Any] = (),
    seed: int = 0,
    step: int | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Run the configured tests on ``model``; returns ``({"eval/<key>": value}, {figure name: PNG path})``.

    Each test's status is ``eval/<test>``: ``"ok"``, or ``"n/a: <reason>"``. Numbers go to every logger
    (``log_metrics``), figures as images (wandb ``log_image``, TensorBoard ``add_image``), per-class
    tables as ``wandb.Table`` (wandb) and as CSV files beside the figures (all loggers).
    The model's random state is left as it was: every test seeds its own generators.

    Args:
        model: any :class:`~genlab.models.base.GenerativeModel`; moved to ``cfg["device"]`` and set to eval mode.
        datamodule: its DataModule (``split_tensors``).
        cfg: the ``evaluation`` config as a plain dict (``tests`` and one section per test).
        out_dir: the run folder; figures and tables go to ``<out_dir>/evaluation/``.
        loggers: Lightning loggers to publish to.
        seed: base seed of every random choice.
        step: the step the values are logged at.

    Raises:
        ConfigError: for an unknown test or an impossible setting (each test checks its own first).
    """
    tests = check_tests(cfg.get("tests"))
    if not tests:
        return {}, {}
    ctx = Context(model, datamodule, cfg, out_dir, seed=seed, device=cfg.get("device", "auto"))
    modules = {name: importlib.import_module(f"genlab.evaluation.{name}") for name in tests}
    for module in modules.values():  # settings refused before any test spends time
        if hasattr(module, "check"):
            module.check(ctx)
    metrics: dict[str, Any] = {}
    figures: dict[str, Path] = {}
    tables: dict[str, Any] = {}
    with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
        for name, module in modules.items():
            reason = module.not_applicable(ctx)
            if reason:
                metrics[f"eval/{name}"] = f"n/a: {reason}"
                continue
            outcome: Outcome = module.run(ctx)
            metrics[f"eval/{name}"] = "ok"
            metrics.update({f"eval/{k}": v for k, v in outcome.metrics.items()})
            figures.update(outcome.figures)
            tables.update(outcome.tables)
    for name, (columns, rows) in tables.items():
        path = ctx.out_dir / "evaluation" / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            csv.writer(f).writerows([columns, *rows])
    publish(list(loggers), metrics, figures, tables, step)
    return metrics, figures


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite scalar numbers of ``metrics`` (what a logger's ``log_metrics`` takes)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            out[k] = float(v)
    return out


def publish(loggers: list[Any], metrics: dict[str, Any], figures: dict[str, Path], tables: dict, step: int | None):
    """Send numbers, figures and tables to every logger that takes them (see :func:`evaluate`)."""
    if not loggers:
        return
    from lightning.pytorch.loggers import TensorBoardLogger
    from torchvision.io import ImageReadMode, read_image

    values = numeric(metrics)
    for logger in loggers:
        if values:
            logger.log_metrics(values, step=step)
        for name, path in figures.items():
            key = f"eval/{name}"
            if hasattr(logger, "log_image"):  # wandb (and loggers with its API)
                logger.log_image(key=key, images=[str(path)], step=step)
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(key, read_image(str(path), ImageReadMode.RGB), global_step=step or 0)
        if hasattr(logger, "log_table"):
            for name, (columns, rows) in tables.items():
                logger.log_table(key=f"eval/{name}", columns=columns, data=rows, step=step)
        if hasattr(logger, "save"):
            logger.save()
