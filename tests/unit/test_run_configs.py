"""conf/debug and conf/hparams_search: the debug modes and the Optuna searches compose into what they promise."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture(scope="module")
def debug_cfgs():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield {name: compose("train", overrides=[f"debug={name}"], return_hydra_config=True)
               for name in ("default", "fdr", "limit", "overfit", "profiler", "fast")}  # fmt: skip
    GlobalHydra.instance().clear()


def test_every_debug_mode_runs_one_cpu_process_without_wandb_or_evaluation(debug_cfgs):
    for name, cfg in debug_cfgs.items():
        assert cfg.logger.get("wandb") is None, name
        if name != "fast":
            assert cfg.trainer.accelerator == "cpu" and cfg.trainer.detect_anomaly is True, name
            assert list(cfg.evaluation.tests) == [] and cfg.task_name == "debug", name
            assert cfg.hydra.job_logging.root.level == "DEBUG", name


def test_each_mode_sets_its_trainer_keys(debug_cfgs):
    assert debug_cfgs["default"].trainer.max_epochs == 1
    assert debug_cfgs["fdr"].trainer.fast_dev_run is True
    assert debug_cfgs["limit"].trainer.limit_train_batches == 5 and debug_cfgs["limit"].trainer.max_epochs == 3
    assert debug_cfgs["overfit"].trainer.overfit_batches == 3 and debug_cfgs["overfit"].callbacks.early_stopping is None
    assert debug_cfgs["profiler"].trainer.profiler == "simple"


@pytest.mark.parametrize(
    ("overrides", "params"),
    [
        (["hparams_search=vae_optuna"], {"model.lr", "model.latent_dim", "model.beta"}),
        (
            ["experiment=gpt_shakespeare_cpu", "hparams_search=gpt_optuna"],
            {"model.lr", "model.n_embd", "model.dropout"},
        ),
    ],
)
def test_the_optuna_searches_minimise_the_validation_loss_and_go_on_after_failures(overrides, params):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert cfg.optimized_metric == "val/best_loss" and set(sweeper.params) == params
    assert sweeper.max_failure_rate == 1.0 and sweeper.sampler.seed == cfg.seed
