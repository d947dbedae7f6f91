"""DDP inside a multirun: one sweep folder, one folder per job, and each job's ranks run that job alone."""

import json

import torch
from tests.conftest import QUIET, ok


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
