"""The classical models through the real CLI (``python -m genlab.train model=<name>``) on real data."""

import csv
import json
import math

import pytest
import torch
from tests.conftest import QUIET, ok, run_dirs

from genlab.models.classical import PCA
from genlab.utils.checkpoint import build_datamodule, load_model

MODELS = ("pca", "ppca", "factor_analysis", "gmm", "kmeans", "linear_ae")
DENSITIES = ("ppca", "factor_analysis", "gmm")
# digits' training split has 1,294 = 2 x 647 examples: batches of 647 use every example on 1 or 2 processes
WHOLE_BATCHES = "data.batch_size=647"


def metrics_of(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@torch.no_grad()
def test_nll_from_checkpoint(ckpt):
    """``-mean log p(x)`` over the test split, recomputed from the checkpoint alone (``weights_only``)."""
    model = load_model(ckpt)
    dm = build_datamodule(ckpt)
    dm.setup("test")
    x = torch.cat([b[0] for b in dm.test_dataloader()])
    return float(-model.log_prob(x).double().mean()), model


test_nll_from_checkpoint.__test__ = False  # a helper, not a test


def test_every_classical_model_trains_tests_and_reports_through_the_cli(cli):
    proc = ok(cli(
        "train", "-m", f"model={','.join(MODELS)}", "data.representation=dequantized", WHOLE_BATCHES,
        "trainer.max_epochs=4", *QUIET,
    ))  # fmt: skip
    (sweep,) = (proc.log_dir / "train" / "multiruns").iterdir()
    jobs = sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    assert len(jobs) == len(MODELS)
    for name, job in zip(MODELS, jobs):
        m = metrics_of(job)
        assert m["config"]["resolved"]["model"]["_target_"].startswith("genlab.models.classical.")
        assert (job / "reconstructions.png").is_file()
        assert (job / "samples.png").is_file() == (name not in ("pca", "linear_ae"))
        ckpt = m["artifacts"]["checkpoint"]
        assert ckpt.startswith(str(job / "checkpoints" / "epoch"))  # the best by val/loss
        if name in DENSITIES:
            assert m["test/nll_kind"] == "exact"
            # a density on [0, 1]^64 of 17-level data: bits/dim = (nll / 64 + ln 17) / ln 2
            expected = (m["test/nll_nats"] / 64 + math.log(17)) / math.log(2)
            assert m["test/bits_per_dim"] == pytest.approx(expected, rel=1e-6)
            assert m["test/bits_per_dim"] < math.log2(17)  # better than uniform
            nll, model = test_nll_from_checkpoint(ckpt)
            assert nll == pytest.approx(m["test/nll_nats"], rel=1e-5, abs=1e-4)
            assert m["test/num_parameters"] == model.num_parameters()
        else:
            assert m["test/nll_kind"] == "none" and "test/nll_nats" not in m and "test/bits_per_dim" not in m
        assert 0 < m["test/recon_mse"] < 0.1
        if name in ("pca", "ppca"):  # closed form: one pass, then converged
            assert m["test/fit_passes"] == 1 and m["test/converged"] is True
            assert "epoch000" in ckpt
        elif name != "linear_ae":
            assert 1 <= m["test/fit_passes"] <= 4
        if name != "linear_ae":  # the fitting loop logs one row per pass (step = pass index) and the best val/loss
            with open(job / "csv" / "metrics.csv") as f:
                rows = [r for r in csv.DictReader(f) if r["val/loss"]]
            assert [int(r["step"]) for r in rows] == [int(r["epoch"]) for r in rows] == list(range(len(rows)))
            assert m["val/best_loss"] == pytest.approx(min(float(r["val/loss"]) for r in rows), rel=1e-6)
            assert (name in DENSITIES) == bool(rows[-1].get("train/nll_nats"))  # what the last pass reported
            assert (job / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.heavy
def test_ddp_on_two_processes_gives_the_pca_of_one(cli):
    """Each process sums its shard's moments; after the all-reduce both fits are the same PCA."""
    args = ("model=pca", "model.latent_dim=12", WHOLE_BATCHES, "callbacks.image_grids=null", *QUIET)
    ok(cli("train", "trainer=cpu", *args))
    proc = ok(cli("train", "trainer=ddp_sim", *args))
    one, two = run_dirs(proc.log_dir)
    assert metrics_of(two)["config"]["resolved"]["trainer"]["devices"] == 2
    fits = []
    for run in (one, two):
        state = torch.load(metrics_of(run)["artifacts"]["checkpoint"], map_location="cpu", weights_only=True)
        fits.append({k: state["state_dict"][k] for k in ("mean", "components", "explained_variance")})
    for key in fits[0]:
        torch.testing.assert_close(fits[1][key], fits[0][key], rtol=1e-10, atol=1e-12)
    # and both are the PCA of the whole training split
    dm = build_datamodule(metrics_of(one)["artifacts"]["checkpoint"])
    dm.setup("fit")
    whole = PCA(dm.spec.to_dict(), 12).fit_tensor(dm.represent(dm.splits["train"][0]))
    torch.testing.assert_close(fits[0]["components"], whole.components, rtol=1e-9, atol=1e-11)


@pytest.mark.heavy
def test_ppca_on_the_real_mnist_subset(cli, mnist_root):
    proc = ok(cli(
        "train", "model=ppca", "model.latent_dim=32", "data=mnist", f"data.data_dir={mnist_root}",
        "data.download=false", "data.representation=dequantized", "callbacks.image_grids.num_samples=16", *QUIET,
    ))  # fmt: skip
    (run,) = run_dirs(proc.log_dir)
    m = metrics_of(run)
    assert m["test/fit_passes"] == 1 and m["test/converged"] is True
    assert m["test/bits_per_dim"] == pytest.approx((m["test/nll_nats"] / 784 + math.log(256)) / math.log(2), rel=1e-6)
    assert m["test/bits_per_dim"] < 8  # well below the uniform density
    nll, _ = test_nll_from_checkpoint(m["artifacts"]["checkpoint"])
    assert nll == pytest.approx(m["test/nll_nats"], rel=1e-5)
