"""The fitting loop (``genlab.passes.fit_by_passes``, Lightning Fabric): one pass per epoch gives the fit of
``fit_tensor``; convergence, ``max_epochs`` and early stopping stop it; checkpoints (``weights_only``)
restore every buffer and resume; ``val/loss`` is the documented quantity; every training example is seen."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import Logger

from genlab.data.base import TensorBatchLoader
from genlab.data.digits import DigitsDataModule
from genlab.errors import ConfigError
from genlab.models.base import CAPABILITIES
from genlab.models.classical import PCA, PPCA, FactorAnalysis, GaussianMixture, KMeans, LinearAutoencoder
from genlab.passes import fit_by_passes

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


class Fixed:
    """Fixed tensors in the DataModule interface the loop uses (``setup``, ``pass_dataloader``, ``val_dataloader``)."""

    def __init__(self, digits):
        self.digits = digits

    def setup(self, stage):
        pass

    def pass_dataloader(self):
        return loader(self.digits["train"])

    def val_dataloader(self):
        return loader(self.digits["val"])


class Capture(Logger):
    """Keeps every ``log_metrics`` call as ``(step, metrics)``."""

    def __init__(self):
        super().__init__()
        self.rows, self.finalized = [], False

    @property
    def name(self):
        return "capture"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))

    def finalize(self, status):
        self.finalized = True


def trainer(tmp_path, max_epochs, *callbacks, **kwargs):
    ckpt = ModelCheckpoint(
        dirpath=tmp_path, monitor="val/loss", save_last=True, filename="best{epoch:02d}", auto_insert_metric_name=False
    )
    return L.Trainer(
        max_epochs=max_epochs, accelerator="cpu", devices=1, logger=Capture(), callbacks=[ckpt, *callbacks],
        enable_progress_bar=False, enable_model_summary=False, **kwargs,
    )  # fmt: skip


SPEC = DigitsDataModule(representation="dequantized").spec.to_dict()
CASES = {
    "pca": (lambda: PCA(SPEC, 6), ("mean", "components", "explained_variance")),
    "ppca": (lambda: PPCA(SPEC, 6), ("mean", "loadings", "noise_variance")),
    "factor_analysis": (
        lambda: FactorAnalysis(SPEC, 6, tol=0.0),
        ("mean", "loadings", "noise_variance", "train_log_lik"),
    ),
    "gmm": (lambda: GaussianMixture(SPEC, 3, "full", tol=0.0), ("weights", "means", "covariances_cholesky")),
    "kmeans": (lambda: KMeans(SPEC, 5, tol=0.0), ("centers", "cluster_sizes", "inertia")),
}


def test_the_fitted_models_declare_fit_and_have_nothing_to_optimise():
    for make, _ in CASES.values():
        model = make()
        assert model.can("fit") and model.capabilities <= set(CAPABILITIES)
        assert list(model.parameters()) == []  # no dummy parameter, no optimiser
    assert not LinearAutoencoder(SPEC, 4).can("fit")  # trained by gradient steps through the Trainer


@pytest.mark.parametrize("name", list(CASES))
def test_the_loop_equals_fit_tensor_and_its_checkpoints_restore_every_buffer(name, digits, tmp_path):
    make, buffers = CASES[name]
    epochs = 4
    model, tr = make(), trainer(tmp_path, epochs)
    best = fit_by_passes(model, Fixed(digits), tr)
    passes = 1 if name in ("pca", "ppca") else epochs  # closed form: converged after one pass
    assert int(model.n_iter) == passes

    reference = make().fit_tensor(digits["train"][0], max_iter=passes, batch_size=BATCH)
    for b in buffers:
        torch.testing.assert_close(getattr(model, b), getattr(reference, b), rtol=1e-9, atol=1e-12)

    # one row per pass, step = the pass index; val/loss: the NLL in nats per example for densities,
    # the squared reconstruction error otherwise, averaged over the whole split
    rows = tr.logger.rows
    assert [step for step, _ in rows] == list(range(passes)) and tr.logger.finalized
    x_val = digits["val"][0]
    expected = -model.log_prob(x_val) if model.can("log_prob") else model.score(x_val, None, "val")[0]["loss"]
    assert rows[-1][1]["val/loss"] == pytest.approx(float(expected.double().mean()), rel=1e-6)
    if model.density:
        assert rows[-1][1]["train/nll_nats"] == pytest.approx(-float(model.train_log_lik), rel=1e-12)
        assert "val/bits_per_dim" in rows[-1][1]

    # last.ckpt restores the fitted state with weights_only loading (plain-type hparams)
    loaded = type(model).load_from_checkpoint(tmp_path / "last.ckpt", weights_only=True)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for b, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[b], value, rtol=0, atol=0)
    torch.testing.assert_close(loaded.reconstruct(x_val), model.reconstruct(x_val))

    # the best checkpoint is the pass with the lowest val/loss, and the Trainer tests it
    losses = [m["val/loss"] for _, m in rows]
    epoch = losses.index(min(losses))
    assert best == str(tmp_path / f"best{epoch:02d}.ckpt") == tr.checkpoint_callback.best_model_path
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"best{epoch:02d}.ckpt", "last.ckpt"])
    assert float(tr.checkpoint_callback.best_model_score) == min(losses)
    (test,) = tr.test(type(model)(**loaded.hparams), loader(digits["val"]), ckpt_path=best, weights_only=True)
    assert test["test/loss"] == pytest.approx(min(losses), rel=1e-6)


def test_convergence_stops_the_loop_after_as_many_passes_as_fit_tensor(digits, tmp_path):
    model, tr = GaussianMixture(SPEC, 3, "diag", tol=1e-3), trainer(tmp_path, 500)
    fit_by_passes(model, Fixed(digits), tr)
    assert bool(model.converged) and len(tr.logger.rows) == int(model.n_iter) < 500
    reference = GaussianMixture(SPEC, 3, "diag", tol=1e-3).fit_tensor(digits["train"][0], batch_size=BATCH)
    assert int(reference.n_iter) == int(model.n_iter)
    assert model.describe() == {
        "nll_kind": "exact", "fit_passes": int(model.n_iter), "converged": True,
        "num_parameters": 3 * 64 * 2 + 2, "covariance_type": "diag",
    }  # fmt: skip


def test_early_stopping_patience_ends_the_passes(digits, tmp_path):
    # a min_delta no pass can beat: the first pass improves on +inf, the next `patience` do not
    stop = EarlyStopping(monitor="val/loss", mode="min", patience=2, min_delta=1e9)
    model = FactorAnalysis(SPEC, 4, tol=0.0)
    fit_by_passes(model, Fixed(digits), trainer(tmp_path, 10, stop))
    assert int(model.n_iter) == 3 and stop.wait_count == 2


def test_resuming_from_last_ckpt_continues_the_passes(digits, tmp_path):
    straight = FactorAnalysis(SPEC, 4, tol=0.0)
    fit_by_passes(straight, Fixed(digits), trainer(tmp_path / "a", 5))
    first = FactorAnalysis(SPEC, 4, tol=0.0)
    fit_by_passes(first, Fixed(digits), trainer(tmp_path / "b", 2))
    resumed, tr = FactorAnalysis(SPEC, 4, tol=0.0), trainer(tmp_path / "c", 5)
    fit_by_passes(resumed, Fixed(digits), tr, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert [step for step, _ in tr.logger.rows] == [2, 3, 4] and int(resumed.n_iter) == 5
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=0)


def test_a_checkpoint_of_the_trainer_path_still_loads(tmp_path):
    # before the Fabric loop, checkpoints held an unused DDP parameter and the buffer `score`
    model = FactorAnalysis(SPEC, 4).fit_tensor(torch.rand(50, 1, 8, 8, dtype=F64), max_iter=3)
    state = {("score" if k == "train_log_lik" else k): v for k, v in model.state_dict().items()}
    state["ddp_anchor"] = torch.zeros(1)
    old = {"state_dict": state, "hyper_parameters": dict(model.hparams), "pytorch-lightning_version": L.__version__}
    torch.save(old, tmp_path / "old.ckpt")
    loaded = FactorAnalysis.load_from_checkpoint(tmp_path / "old.ckpt", weights_only=True)
    assert float(loaded.train_log_lik) == float(model.train_log_lik)


def test_the_loop_refuses_what_it_cannot_fit(digits, tmp_path):
    with pytest.raises(ConfigError, match="keeps its statistics in float64"):
        fit_by_passes(PCA(SPEC, 4), Fixed(digits), trainer(tmp_path, 1, precision="bf16-true"))
    spawn = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False)
    with pytest.raises(ConfigError, match="use trainer=ddp or trainer=ddp_sim"):
        fit_by_passes(PCA(SPEC, 4), Fixed(digits), spawn)


def test_the_datamodule_serves_a_pass_every_training_example(tmp_path):
    # 1,294 training digits in batches of 100: gradient training drops the last 94, a pass must not
    dm = DigitsDataModule(batch_size=BATCH)
    dm.setup("fit")
    assert sum(len(x) for x, _ in dm.train_dataloader()) == 1200
    assert sum(len(x) for x, _ in dm.pass_dataloader()) == 1294
    model = PCA(dm.spec.to_dict(), 4)
    fit_by_passes(model, dm, trainer(tmp_path, 1))
    x = dm.represent(dm.splits["train"][0]).flatten(1).to(F64)
    assert torch.allclose(model.mean, x.mean(0), atol=1e-12)


def test_unequal_shards_of_a_pass_cover_every_example_once():
    x, y = torch.arange(7.0)[:, None], torch.arange(7)
    shards = [TensorBatchLoader(x, y, 2, lambda t: t, shuffle=True, rank=r, world_size=2) for r in (0, 1)]
    seen = torch.cat([b[1] for s in shards for b in s])
    assert sorted(seen.tolist()) == list(range(7))
    cut = [TensorBatchLoader(x, y, 2, lambda t: t, shuffle=True, drop_last=True, rank=r, world_size=2) for r in (0, 1)]
    assert [len(s) for s in cut] == [1, 1]  # gradient training: equal shards of 3, one whole batch each
