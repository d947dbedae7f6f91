"""The Lightning path: one pass per epoch gives the same fit as ``fit_tensor``; convergence stops the
Trainer; checkpoints (``weights_only``) restore every fitted buffer; ``val/loss`` is the documented quantity."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from genlab.data.base import TensorBatchLoader
from genlab.data.digits import DigitsDataModule
from genlab.models.classical import PCA, PPCA, FactorAnalysis, GaussianMixture, KMeans

F64 = torch.float64
BATCH = 100


@pytest.fixture(scope="module")
def digits():
    dm = DigitsDataModule(representation="dequantized")
    dm.setup("fit")
    g = torch.Generator().manual_seed(0)
    return {split: (dm.represent(dm.splits[split][0], generator=g), dm.splits[split][1]) for split in ("train", "val")}


def loader(split):
    x, y = split
    return TensorBatchLoader(x, y, BATCH, lambda t: t)  # every example once per pass, in order


def trainer(tmp_path, max_epochs):
    ckpt = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", save_last=True, filename="best")
    return L.Trainer(
        max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, callbacks=[ckpt],
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip


SPEC = DigitsDataModule(representation="dequantized").spec.to_dict()
CASES = {
    "pca": (lambda: PCA(SPEC, 6), ("mean", "components", "explained_variance")),
    "ppca": (lambda: PPCA(SPEC, 6), ("mean", "loadings", "noise_variance")),
    "factor_analysis": (lambda: FactorAnalysis(SPEC, 6, tol=0.0), ("mean", "loadings", "noise_variance", "score")),
    "gmm": (lambda: GaussianMixture(SPEC, 3, "full", tol=0.0), ("weights", "means", "covariances_cholesky", "score")),
    "kmeans": (lambda: KMeans(SPEC, 5, tol=0.0), ("centers", "cluster_sizes", "inertia")),
}


@pytest.mark.parametrize("name", list(CASES))
def test_trainer_fit_equals_fit_tensor_and_checkpoints_restore_it(name, digits, tmp_path):
    make, buffers = CASES[name]
    epochs = 4
    model = make()
    tr = trainer(tmp_path, epochs)
    tr.fit(model, loader(digits["train"]), loader(digits["val"]))
    closed_form = name in ("pca", "ppca")
    passes = 1 if closed_form else epochs
    assert int(model.n_iter) == passes and tr.current_epoch == passes  # closed form: should_stop after 1 pass
    batches = -(-len(digits["train"][0]) // BATCH)
    assert tr.global_step == passes * batches  # one no-op optimizer step per batch: checkpoints key on it

    reference = make().fit_tensor(digits["train"][0], max_iter=passes, batch_size=BATCH)
    for b in buffers:
        torch.testing.assert_close(getattr(model, b), getattr(reference, b), rtol=1e-9, atol=1e-12)

    # val/loss: the NLL in nats per example for densities, the squared reconstruction error otherwise
    x_val = digits["val"][0]
    expected = -model.log_prob(x_val) if model.can("log_prob") else model.loss_terms(x_val, None, "val")["loss"]
    assert float(tr.callback_metrics["val/loss"]) == pytest.approx(float(expected.mean()), rel=1e-5)

    # the last checkpoint restores the fitted state with weights_only loading (plain-type hparams)
    loaded = type(model).load_from_checkpoint(tmp_path / "last.ckpt", weights_only=True)
    for b, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[b], value, rtol=0, atol=0)
    if model.can("log_prob"):
        torch.testing.assert_close(loaded.log_prob(x_val), model.log_prob(x_val))
    torch.testing.assert_close(loaded.reconstruct(x_val), model.reconstruct(x_val))
    assert (tmp_path / "best.ckpt").is_file()


def test_convergence_stops_the_trainer_early(digits, tmp_path):
    model = GaussianMixture(SPEC, 3, "diag", tol=1e-3)
    tr = trainer(tmp_path, 500)
    tr.fit(model, loader(digits["train"]), loader(digits["val"]))
    assert bool(model.converged) and tr.current_epoch == int(model.n_iter) < 500
    assert "train/nll_nats" in tr.callback_metrics
    assert float(tr.callback_metrics["train/nll_nats"]) == pytest.approx(-float(model.score), rel=1e-6)
    # the same number of EM iterations as without a Trainer
    reference = GaussianMixture(SPEC, 3, "diag", tol=1e-3).fit_tensor(digits["train"][0], batch_size=BATCH)
    assert int(reference.n_iter) == int(model.n_iter)
    assert model.describe() == {
        "nll_kind": "exact", "fit_passes": int(model.n_iter), "converged": True,
        "num_parameters": 3 * 64 * 2 + 2, "covariance_type": "diag",
    }  # fmt: skip


def test_the_datamodule_serves_fitted_models_every_training_example(tmp_path):
    # 1,294 training digits in batches of 100: a gradient model's loader drops the last 94, a fit must not
    dm = DigitsDataModule(batch_size=BATCH)
    model = PCA(dm.spec.to_dict(), 4)
    tr = trainer(tmp_path, 1)
    tr.fit(model, datamodule=dm)
    x = dm.represent(dm.splits["train"][0]).flatten(1).to(F64)
    assert len(x) % BATCH != 0
    assert torch.allclose(model.mean, x.mean(0), atol=1e-12)
