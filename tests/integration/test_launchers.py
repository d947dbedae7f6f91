"""genlab's Hydra launchers (conf/hydra/launcher/): parallel local jobs that never oversubscribe the cores, submitit's
local executor, and a SLURM job shaped by the trainer config (composed, and its sbatch script written, not queued)."""

import os
import re
from pathlib import Path

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf.errors import InterpolationResolutionError
from tests.conftest import REPO, ok
from tests.integration.test_failures import FAST, metrics_of

from genlab.utils import launchers

SWEEP = ["-m", *FAST, "logger=[csv,wandb]", "model.latent_dim=2,3"]


def one_sweep(log_dir: Path) -> Path:
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    return sweep


def wandb_run(job: Path) -> Path:
    """The job's one offline wandb run folder (``offline-run-<time>-<id>``)."""
    (run,) = (job / "wandb").glob("offline-run-*")
    return run


def test_a_submitit_local_sweep_runs_each_job_in_its_own_submitit_job(cli):
    proc = ok(cli("train", *SWEEP, "hydra/launcher=slurm_local", "hydra.launcher.cpus_per_task=2"))
    assert "Submitit 'local' sweep output dir" in proc.stdout + proc.stderr
    sweep = one_sweep(proc.log_dir)
    jobs = [metrics_of(sweep / str(j)) for j in (0, 1)]
    assert [m["status"] for m in jobs] == ["ok", "ok"]
    assert [m["config"]["resolved"]["model"]["latent_dim"] for m in jobs] == [2, 3]
    assert [m["versions"]["torch_threads"] for m in jobs] == [2, 2]  # cpus_per_task, not the sweep's OMP_NUM_THREADS=1
    submitted = [p for p in (sweep / ".submitit").iterdir() if list(p.glob("*_result.pkl"))]
    assert len(submitted) == 2  # a submitit job (a process of its own) per sweep job
    runs = [wandb_run(sweep / str(j)) for j in (0, 1)]
    assert len({r.name.rsplit("-", 1)[-1] for r in runs}) == 2  # a fresh offline wandb run per job
    assert all(b"val/loss" in next(r.glob("*.wandb")).read_bytes() for r in runs)  # that logged the fit


def test_the_parallel_launcher_pins_each_job_to_its_share_of_the_cores(cli, monkeypatch):
    share = launchers.threads_per_job(2)
    # the sweep's own OMP_NUM_THREADS differs from the share: joblib keeps it in its workers, the config replaces it
    # (the fixture's environment: conftest is imported twice, as conftest and tests.conftest)
    monkeypatch.setitem(cli.__globals__["CLI_ENV"], "OMP_NUM_THREADS", str(share + 1))
    proc = ok(cli("train", *SWEEP, "hydra/launcher=parallel", "hydra.launcher.n_jobs=2"))
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    sweep = one_sweep(proc.log_dir)
    jobs = [sweep / str(j) for j in (0, 1)]
    assert [metrics_of(j)["status"] for j in jobs] == ["ok", "ok"]
    assert [metrics_of(j)["versions"]["torch_threads"] for j in jobs] == [share, share]
    # in parallel: each job started (wrote its .hydra/config.yaml) before the other ended (wrote metrics.json)
    start = [(j / ".hydra" / "config.yaml").stat().st_mtime for j in jobs]
    end = [(j / "metrics.json").stat().st_mtime for j in jobs]
    assert start[0] < end[1] and start[1] < end[0], (start, end)
    # in two processes, each with its own offline wandb run (wandb's log names the process)
    pids = {re.search(r"stats pid to (\d+)", (j / "wandb" / "debug.log").read_text()).group(1) for j in jobs}
    assert len(pids) == 2
    assert all(wandb_run(j).name.startswith("offline-run-") for j in jobs)


def test_threads_per_job_divides_the_usable_cores_and_never_drops_below_one():
    cpus = launchers.usable_cpus()
    assert launchers.threads_per_job(1) == cpus
    assert launchers.threads_per_job(-1) == 1  # one job per core
    assert launchers.threads_per_job(2 * cpus) == 1  # more jobs than cores: one thread each, never 0
    assert launchers.jobs_at_once(-2) == max(1, cpus - 1)
    for bad in (0, None, "2", 1.5, True):
        with pytest.raises(launchers.LauncherConfigError, match="hydra.launcher.n_jobs"):
            launchers.threads_per_job(bad)


def slurm_config(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)


def shape(cfg) -> tuple:
    launcher = cfg.hydra.launcher
    return launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node, cfg.hydra.job.env_set.OMP_NUM_THREADS


def test_the_slurm_launcher_takes_its_shape_from_the_trainer_config():
    cfg = slurm_config("trainer=ddp", "trainer.devices=4", "+trainer.num_nodes=2")
    assert cfg.hydra.runtime.choices["hydra/launcher"] == "slurm"
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert shape(cfg) == (2, 4, 4, "4")  # 2 nodes x 4 ranks, a GPU per rank, cpus_per_task threads each
    assert cfg.hydra.launcher.partition is None and cfg.hydra.launcher.timeout_min == 60
    assert cfg.hydra.launcher.signal_delay_s == 120
    assert shape(slurm_config("trainer=ddp", "trainer.devices=[0,1]")) == (1, 2, 2, "4")  # one node by default
    assert shape(slurm_config("trainer=ddp", "trainer.devices='0,1,2'")) == (1, 3, 3, "4")
    # CPU ranks (gloo) reserve no GPU; cpus_per_task sets each rank's threads
    assert shape(slurm_config("trainer=ddp_sim", "hydra.launcher.cpus_per_task=8")) == (1, 2, None, "8")


@pytest.mark.parametrize("devices", ["-1", "auto"])
def test_the_slurm_launcher_refuses_devices_that_do_not_say_how_many(devices):
    cfg = slurm_config("trainer=ddp", f"trainer.devices={devices}")
    with pytest.raises(InterpolationResolutionError, match=r"needs trainer\.devices to be the number of devices") as e:
        _ = cfg.hydra.launcher.tasks_per_node
    assert isinstance(e.value, launchers.LauncherConfigError)  # Hydra prints it without a traceback
    # the documented way out: the launcher's own task count, and Lightning takes the GPUs SLURM gives the node
    assert shape(slurm_config("trainer=ddp", f"trainer.devices={devices}", "hydra.launcher.tasks_per_node=2")) == (
        1, 2, 2, "4",
    )  # fmt: skip


def test_a_slurm_sweep_with_devices_minus_one_stops_with_one_line_before_any_job(cli):
    proc = cli("train", "-m", "hydra/launcher=slurm", "trainer=ddp", "model.latent_dim=2,3")
    assert proc.returncode == 1
    assert "hydra/launcher=slurm needs trainer.devices to be the number of devices (ranks) per node, got -1" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert not (proc.log_dir / "train").exists()  # nothing was launched


def test_the_slurm_launcher_writes_an_array_job_whose_srun_starts_one_task_per_rank(tmp_path, monkeypatch):
    # submitit's SLURM executor needs an srun on PATH to start; nothing is queued (map_array is replaced)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    seen = {}

    def map_array(executor, fn, *args):
        seen["jobs"] = len(args[0])
        seen["sbatch"] = executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "u")
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    cfg = slurm_config("trainer=ddp", "trainer.devices=4", "+trainer.num_nodes=2", f"hydra.sweep.dir={tmp_path}/s")
    launcher = instantiate(cfg.hydra.launcher)  # the plugin's launcher, as Hydra builds it
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    launcher.launch([["model.latent_dim=2"], ["model.latent_dim=3"]], initial_job_idx=0)
    assert seen["jobs"] == 2  # one SLURM job per sweep job
    flags = set(re.findall(r"^#SBATCH --(\S+)$", seen["sbatch"], re.M))
    assert {"nodes=2", "ntasks-per-node=4", "gpus-per-node=4", "cpus-per-task=4", "time=60"} <= flags, flags
    assert any(f.startswith("signal=") and f.endswith("@120") for f in flags)
    assert re.search(r"^srun .*python -u -m submitit\.core\._submit", seen["sbatch"], re.M)  # srun starts the ranks
