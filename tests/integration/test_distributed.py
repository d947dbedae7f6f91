"""Scaling out on 2 CPU processes (gloo): DDP inside a multirun, and ranks started by torchrun."""

import json
import subprocess
import sys

import torch
from tests.conftest import QUIET, REPO, ok


def test_a_ddp_sweep_leaves_one_sweep_folder_and_each_job_trains_on_two_processes(cli):
    # a gradient-trained model (Trainer) and a fitted one (Fabric): both launchers start the job's ranks
    proc = ok(cli("train", "-m", "trainer=ddp_sim", *QUIET, "trainer.max_epochs=1", "model=vae_mlp,pca"))
    assert proc.stdout.count("MEMBER: 2/2") + proc.stderr.count("MEMBER: 2/2") == 2  # rank 1 once per job
    train = proc.log_dir / "train"
    assert sorted(p.name for p in train.iterdir()) == ["multiruns"]  # no single-run folders from the children
    (sweep,) = (train / "multiruns").iterdir()  # no second sweep started by a child
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "1", "multirun.yaml"]
    for job, model, cls in (("0", "vae_mlp", ".VAE"), ("1", "pca", ".PCA")):
        record = json.loads((sweep / job / "metrics.json").read_text())
        assert record["status"] == "ok" and f"model={model}" in record["config"]["overrides"]
        assert (sweep / job / "train_ddp_process_1.log").is_file()  # rank 1 ran in the job's own folder
        assert not (sweep / job / ".hydra" / "resume-1").exists()  # and wrote no config of its own
        ckpt = torch.load(record["artifacts"]["checkpoint"], weights_only=True)
        assert ckpt["genlab"]["model_target"].endswith(cls)  # each job trained its own model


def test_torchrun_ranks_share_one_run_folder_and_only_rank_0_writes_the_results(cli):
    """The multi-node path on one machine: torchrun starts the ranks (Lightning starts none). Rank 0 evaluates alone
    after the others have finished (FID and KID never wait for them)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "genlab.train", "trainer=ddp_sim", *QUIET, "trainer.max_epochs=1", "evaluation=default"]  # fmt: skip
    proc = ok(subprocess.run(cmd, cwd=REPO, env=cli.env, capture_output=True, text=True, timeout=600))
    assert "MEMBER: 2/2" in proc.stdout + proc.stderr
    (run,) = (cli.log_dir / "train" / "runs").iterdir()  # one folder, named after torchrun's rendezvous id
    assert run.name.startswith("torchrun-")
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert sorted(p.name for p in (run / "csv").iterdir()) == ["hparams.yaml", "metrics.csv"]  # rank 0's alone
    record = json.loads((run / "metrics.json").read_text())
    assert (run / "train_rank1.log").is_file() and record["status"] == "ok", record.get("reason")
    assert record["eval/fid"] > 0 and record["eval/probe_accuracy"] > 0.5
