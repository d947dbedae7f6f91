"""The real CLI (``python -m genlab.train/eval/sample``) on real data, in a temporary outputs folder."""

import csv
import json
import math
import shutil

import pytest
import torch
from PIL import Image
from tests.conftest import QUIET, ok, run_dirs


def wandb_logged_items(data: bytes, key: str) -> list:
    """Values logged under ``key`` in a wandb run file, JSON-decoded: history and summary items are protobuf fields
    ``key`` (tag 0x12) then ``value_json`` (tag 0x82 0x01), each a length-prefixed string."""
    head = bytes([0x12, len(key)]) + key.encode() + b"\x82\x01"
    values, i = [], data.find(head)
    while i >= 0:
        start = i + len(head) + 1
        values.append(json.loads(data[start : start + data[i + len(head)]]))
        i = data.find(head, start)
    return values


def wandb_logged_values(data: bytes, key: str) -> list[float]:
    """The numbers logged under ``key`` (history), without summary items such as ``{"min": ...}``."""
    return [float(v) for v in wandb_logged_items(data, key) if isinstance(v, (int, float))]


def metrics_of(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_digits_vae_learns_then_eval_and_sample_from_its_checkpoint(cli):
    proc = ok(cli("train", *QUIET, "trainer.max_epochs=15", "model.iwae_k=20"))
    (run,) = run_dirs(proc.log_dir)
    m = metrics_of(run)
    assert m["test/nll_kind"] == "bound" and m["test/iwae_k"] == 20
    # clearly below the uniform model over 17 grey levels (log2 17 = 4.09 bits/dim)
    assert m["test/bits_per_dim"] < 0.75 * math.log2(17)
    assert m["test/bits_per_dim"] == pytest.approx(m["test/nll_nats"] / (64 * math.log(2)), rel=1e-5)
    # the IWAE bound is at least as tight as the ELBO
    assert m["test/nll_nats"] <= -m["test/elbo_nats"] + 1e-3
    assert m["config"]["overrides"] == [
        *QUIET,
        "trainer.max_epochs=15",
        "model.iwae_k=20",
        "evaluation=none",  # added by the cli fixture
    ]
    assert set(m["versions"]) == {"genlab", "torch", "lightning", "torch_threads"}
    assert m["versions"]["torch_threads"] == 1  # OMP_NUM_THREADS=1 pins torch
    for name in ("samples", "reconstructions"):
        assert (run / f"{name}.png").is_file() and str(run / f"{name}.png") in proc.stdout
        assert Image.open(run / f"{name}.png").size[0] > 8 * 8
    assert "test/nll_nats" in proc.stdout and "test/bits_per_dim" in proc.stdout
    assert (run / "csv" / "metrics.csv").is_file() and (run / ".hydra" / "config.yaml").is_file()
    ckpt = m["artifacts"]["checkpoint"]

    # the test stage seeds its own random numbers: eval on the best checkpoint gives the run's sampled bound exactly
    proc = ok(cli("eval", f"ckpt_path={ckpt}", "callbacks.rich_progress_bar=null"))
    (ev,) = run_dirs(proc.log_dir, "eval")
    again = metrics_of(ev)
    assert {k: v for k, v in again.items() if k.startswith("test/")} == {
        k: v for k, v in m.items() if k.startswith("test/")}  # fmt: skip
    shutil.rmtree(ev)

    proc = ok(cli("eval", f"ckpt_path={ckpt}", "callbacks.rich_progress_bar=null", "+model_overrides.iwae_k=5"))
    (ev,) = run_dirs(proc.log_dir, "eval")
    e = metrics_of(ev)
    assert e["test/iwae_k"] == 5 and e["test/recon_mse"] == pytest.approx(m["test/recon_mse"], rel=1e-5)

    # resume from the last checkpoint into a new run folder; the first run stays as it was
    before = (run / "metrics.json").read_text()
    last = run / "checkpoints" / "last.ckpt"
    proc = ok(cli("train", *QUIET, f"ckpt_path={last}", "trainer.max_epochs=17", "model.iwae_k=2"))
    first, resumed = run_dirs(proc.log_dir)
    assert first == run and (run / "metrics.json").read_text() == before
    with open(resumed / "csv" / "metrics.csv") as f:
        epochs = {int(row["epoch"]) for row in csv.DictReader(f) if row["val/loss"]}
    assert epochs == {15, 16}  # continued after the 15 epochs of the first run

    proc = ok(cli("sample", f"ckpt_path={ckpt}", "num_samples=10", "seed=3"))
    (s,) = run_dirs(proc.log_dir, "sample")
    x = torch.load(s / "samples.pt", weights_only=True)
    assert x.shape == (10, 1, 8, 8) and torch.equal(x * 16, (x * 16).round())  # on the 17-level grid
    assert (s / "samples.png").is_file()


@pytest.mark.parametrize(
    "overrides, bound",
    [(["model=vae_cnn"], 8.0),
     (["model=vae_mlp", "data.representation=binarized", "data.binarize=dynamic"], 1.0)],
)  # fmt: skip
def test_real_mnist_subset(cli, mnist_root, overrides, bound):
    proc = ok(cli(
        "train", "data=mnist", f"data.data_dir={mnist_root}", "data.download=false", *overrides, *QUIET,
        "trainer.max_epochs=1", "trainer.limit_train_batches=25", "model.iwae_k=4",
    ))  # fmt: skip
    (run,) = run_dirs(proc.log_dir)
    m = metrics_of(run)
    assert m["test/bits_per_dim"] < bound  # below the uniform model (8 bits/dim 8-bit, 1 bit/dim binary)
    assert m["config"]["resolved"]["data"]["data_dir"] == str(mnist_root)
    assert (run / "samples.png").is_file()


def test_autoencoder_reports_reconstruction_but_no_likelihood(cli):
    proc = ok(cli("train", "model=ae_cnn", *QUIET, "trainer.max_epochs=3"))
    (run,) = run_dirs(proc.log_dir)
    m = metrics_of(run)
    assert m["test/nll_kind"] == "none" and "test/nll_nats" not in m
    assert 0 < m["test/recon_mse"] < 0.1


def test_max_steps_inside_the_first_epoch_still_tests_and_reports(cli):
    # early stopping waits for a validation result instead of failing when max_steps ends the run early
    proc = ok(cli("train", *QUIET, "trainer.max_steps=3", "model.iwae_k=2"))
    (run,) = run_dirs(proc.log_dir)
    m = metrics_of(run)
    assert m["test/nll_nats"] > 0 and m["artifacts"]["checkpoint"].endswith("last.ckpt")


def test_multirun_writes_one_folder_per_job(cli):
    proc = ok(cli("train", "-m", "model.latent_dim=2,4", *QUIET, "trainer.max_epochs=2", "model.iwae_k=2"))
    (sweep,) = (proc.log_dir / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1"]
    dims = [metrics_of(j)["config"]["resolved"]["model"]["latent_dim"] for j in jobs]
    assert dims == [2, 4]
    assert not (proc.log_dir / "train" / "runs").exists()


@pytest.mark.heavy
def test_ddp_sim_runs_two_processes_into_one_run_folder(cli):
    proc = ok(cli("train", "trainer=ddp_sim", *QUIET, "trainer.max_epochs=2", "model.iwae_k=2"))
    (run,) = run_dirs(proc.log_dir)
    assert "world_size: 2" in proc.stdout + proc.stderr or "GLOBAL_RANK: 1" in proc.stdout + proc.stderr
    m = metrics_of(run)
    assert m["test/bits_per_dim"] < math.log2(17)
    assert m["config"]["resolved"]["trainer"]["devices"] == 2


@pytest.mark.heavy
def test_wandb_offline_run_holds_metrics_and_images(cli):
    # two multirun jobs in one process: each must get its own, finished wandb run
    proc = ok(cli(
        "train", "-m", "logger=wandb", "callbacks.rich_progress_bar=null", "trainer.max_epochs=2",
        "callbacks.image_grids.every_n_epochs=1", "model.iwae_k=2", "model.latent_dim=2,3",
    ))  # fmt: skip
    (sweep,) = (proc.log_dir / "train" / "multiruns").iterdir()
    ids = {p.name.rsplit("-", 1)[-1] for p in sweep.glob("*/wandb/offline-run-*")}
    assert len(ids) == 2
    run = sweep / "1"
    (wandb_run,) = (run / "wandb").glob("offline-run-*")
    (run_file,) = wandb_run.glob("run-*.wandb")  # the file `wandb sync` uploads
    logged = wandb_logged_values(run_file.read_bytes(), "test/bits_per_dim")
    assert logged and logged[-1] == pytest.approx(metrics_of(run)["test/bits_per_dim"], rel=1e-6)
    val = wandb_logged_values(run_file.read_bytes(), "val/loss")
    assert len(set(val)) == 2  # one per epoch
    summaries = [v for v in wandb_logged_items(run_file.read_bytes(), "val/loss") if isinstance(v, dict)]
    assert summaries and summaries[-1]["min"] == pytest.approx(min(val))  # the run's summary: the best, not the last
    images = list((wandb_run / "files" / "media" / "images").rglob("*.png"))
    assert any("samples" in p.name for p in images) and any("reconstructions" in p.name for p in images)
