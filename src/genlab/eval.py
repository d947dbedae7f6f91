"""Test a trained checkpoint: ``python -m genlab.eval ckpt_path=<run>/checkpoints/<file>.ckpt``.

Rebuilds model and DataModule from the checkpoint (``weights_only``), runs the test split, evaluates
(``evaluation=default|full|none``) and writes ``metrics.json``, figures and sample/reconstruction grids
into a new run folder under ``outputs/eval/``.
"""

from __future__ import annotations

import time
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genlab.evaluation import evaluate as run_tests
from genlab.evaluation import preflight, settings
from genlab.utils.checkpoint import build_datamodule, load_model
from genlab.utils.console import print_summary
from genlab.utils.runs import instantiate_all, output_dir, run_cli, write_metrics


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the test split for ``cfg.ckpt_path``; returns the metrics written to ``metrics.json``."""
    L.seed_everything(cfg.seed, workers=True)
    model = load_model(cfg.ckpt_path, **OmegaConf.to_container(cfg.model_overrides, resolve=True))
    if cfg.get("test_seed") is not None:  # the test stage's random numbers (null: the training run's seed)
        model.genlab_meta["seed"] = int(cfg.test_seed)
    datamodule = build_datamodule(
        cfg.ckpt_path, cfg.get("data_dir"), **OmegaConf.to_container(cfg.data_overrides, resolve=True)
    )
    evaluation = settings(cfg)
    preflight(model, datamodule, evaluation, output_dir())
    callbacks = instantiate_all(cfg.get("callbacks"))
    loggers = instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.test(model, datamodule=datamodule, verbose=False)
    metrics: dict[str, Any] = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
    metrics.update({f"test/{k}": v for k, v in model.describe().items()})
    if trainer.is_global_zero:
        start = time.perf_counter()
        seed = model.genlab_meta.get("seed", cfg.seed)
        found, figures = run_tests(model, datamodule, evaluation, output_dir(), loggers, seed=seed)
        metrics.update(found)
        metrics["time/evaluation_seconds"] = time.perf_counter() - start
        artifacts = {name: str(p) for c in callbacks for name, p in getattr(c, "paths", {}).items()}
        artifacts.update({f"figure/{name}": str(p) for name, p in figures.items()})
        artifacts["checkpoint"] = str(cfg.ckpt_path)
        path = write_metrics(output_dir() / "metrics.json", metrics, cfg, artifacts=artifacts)
        print_summary("eval", metrics, artifacts, path)
    return metrics


@hydra.main(version_base="1.3", config_path="../../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Console entry point (``genlab-eval``); see :func:`evaluate`."""
    run_cli(evaluate, cfg, record=True)


if __name__ == "__main__":
    main()
