"""One failure path: failed and diverged jobs are recorded, sweeps go on, and no non-finite weights are kept."""

import json

import torch
from tests.conftest import QUIET, ok, run_dirs

FAST = [*QUIET, "trainer.max_epochs=1"]
#: multiplies the learning rate by 1e15 after 25 optimiser steps (digits: 20 steps an epoch), so epoch 0 ends well
EXPLODE = "model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:25,gamma:1e15}"


def metrics_of(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_a_sweep_records_its_failed_job_and_finishes_the_others(cli):
    proc = cli("train", "-m", *FAST, "model.latent_dim=2,0,4")
    assert proc.returncode != 0
    assert "genlab: job 1 (" in proc.stderr and "failed: model.latent_dim must be a positive integer" in proc.stderr
    (sweep,) = (proc.log_dir / "train" / "multiruns").iterdir()
    jobs = {int(p.name): metrics_of(p) for p in sweep.iterdir() if p.is_dir()}
    assert {k: m["status"] for k, m in jobs.items()} == {0: "ok", 1: "failed", 2: "ok"}
    assert jobs[1]["reason"].startswith("model.latent_dim must be a positive integer, got 0")
    assert "model.latent_dim=0" in jobs[1]["config"]["overrides"]
    assert "model.latent_dim must be a positive integer" in (sweep / "1" / "train.log").read_text()
    assert all(m["test/nll_nats"] > 0 for k, m in jobs.items() if k != 1)
    assert set(jobs[0]["git"]) == {"commit", "dirty"}


def test_a_sweep_lists_every_failed_job_also_when_hydra_ends_it_with_a_traceback(cli):
    # jobs: (Adam, 2) ok; (Adam, 0) a user error; (NotThere, 2) a traceback; (NotThere, 0) a user error
    proc = cli("train", "-m", *FAST, "model.optimizer._target_=torch.optim.Adam,torch.optim.NotThere",
               "model.latent_dim=2,0")  # fmt: skip
    assert proc.returncode == 1
    listed = [line for line in proc.stderr.splitlines() if line.startswith("genlab: job ") and "(" not in line[:16]]
    assert [line.split()[2] for line in listed] == ["1", "2", "3"], proc.stderr[-3000:]
    assert "genlab: error: 3 job(s) of the sweep" in proc.stderr


def test_a_diverged_run_exits_non_zero_and_keeps_its_last_finite_checkpoint(cli):
    proc = cli("train", *QUIET, "trainer.max_epochs=3", EXPLODE)
    assert proc.returncode == 2
    assert "training diverged at step 27 (epoch 1): train/loss is nan; lower model.lr" in proc.stderr
    (run,) = run_dirs(proc.log_dir)
    m = metrics_of(run)
    assert m["status"] == "diverged" and "step 27" in m["reason"]
    assert not any(k.startswith(("test/", "eval/")) for k in m)  # never tested or evaluated
    last = m["artifacts"]["checkpoint"]
    assert last.endswith("last.ckpt")
    weights = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    assert all(torch.isfinite(w).all() for p in (run / "checkpoints").glob("*.ckpt")
               for w in torch.load(p, weights_only=True)["state_dict"].values() if w.is_floating_point())  # fmt: skip


def test_a_loss_that_explodes_is_caught_and_a_failed_folder_can_be_run_again(cli):
    proc = cli("train", *FAST, "model.lr=1e3")
    assert proc.returncode == 2 and "rose more than 1000-fold above its best" in proc.stderr
    (run,) = run_dirs(proc.log_dir)
    assert metrics_of(run)["status"] == "diverged"
    again = ok(cli("train", *FAST, f"hydra.run.dir={run}"))  # a diverged run's folder may be reused
    assert metrics_of(run)["status"] == "ok" and again.returncode == 0
    refused = cli("train", *FAST, f"hydra.run.dir={run}")  # a finished one may not
    assert refused.returncode == 2 and "already holds a finished run" in refused.stderr
    assert metrics_of(run)["status"] == "ok"


def test_sweep_jobs_get_their_own_wandb_runs_in_one_group_named_after_the_sweep(cli):
    proc = ok(cli("train", "-m", *FAST, "logger=wandb", "model.latent_dim=2,3"))
    (sweep,) = (proc.log_dir / "train" / "multiruns").iterdir()
    runs = [metrics_of(sweep / str(j))["config"]["resolved"]["logger"]["wandb"] for j in (0, 1)]
    assert {r["group"] for r in runs} == {f"train-{sweep.name}"}
    names = [r["name"].split(",") for r in runs]  # the run name lists the job's overrides
    assert "model.latent_dim=2" in names[0] and "model.latent_dim=3" in names[1]
    assert "model.latent_dim=3" in runs[1]["tags"] and "vae_mlp" in runs[1]["tags"]
    ids = {next((sweep / str(j) / "wandb").glob("offline-run-*")).name.rsplit("-", 1)[-1] for j in (0, 1)}
    assert len(ids) == 2  # a fresh wandb run per job


def test_a_run_without_loggers_and_a_fast_dev_run_work(cli):
    ok(cli("train", *FAST, "logger=[]"))
    proc = ok(cli("train", "callbacks.rich_progress_bar=null", "debug=fdr"))
    (run,) = run_dirs(proc.log_dir, "debug")
    assert metrics_of(run)["status"] == "ok" and "DEBUG" in (run / "train.log").read_text()


def test_an_optuna_study_records_a_diverged_trial_as_failed_goes_on_and_resumes(cli, tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # seed 2: the seeded TPE sampler draws lr = 0.001, 0.001, 1e30 (the last trial diverges)
    search = ["-m", "hparams_search=vae_optuna", *FAST, "seed=2", "model.lr=choice(0.001,1e30)",
              f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=t"]  # fmt: skip
    proc = cli("train", *search, "hydra.sweeper.n_trials=3")
    assert proc.returncode == 1 and "1 job(s) of the sweep" in proc.stderr  # the study went on, and says so
    study = optuna.load_study(study_name="t", storage=storage)
    states = [(t.params["model.lr"], t.state.name) for t in study.trials]
    assert states == [(0.001, "COMPLETE"), (0.001, "COMPLETE"), (1e30, "FAIL")], states
    assert all(t.value > 0 for t in study.trials if t.state.name == "COMPLETE")  # val/best_loss, never NaN
    assert "genlab: job 2 diverged: training diverged at step 2" in proc.stderr
    ok(cli("train", *search, "hydra.sweeper.n_trials=1", "model.lr=0.001"))  # the study resumed from its database
    assert len(optuna.load_study(study_name="t", storage=storage).trials) == 4


def test_a_joblib_sweep_runs_its_jobs_in_parallel_processes(cli):
    proc = ok(cli("train", "-m", *FAST, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model.latent_dim=2,3"))
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    (sweep,) = (proc.log_dir / "train" / "multiruns").iterdir()
    assert [metrics_of(sweep / str(j))["status"] for j in (0, 1)] == ["ok", "ok"]
