"""Bad settings and bad data give one clear error (or a documented regularisation), never a silent NaN."""

import math

import pytest
import torch

from genlab.errors import ConfigError, DataError
from genlab.models.classical import PCA, PPCA, FactorAnalysis, GaussianMixture, KMeans, LinearAutoencoder

F64 = torch.float64


DEQ = {"shape": [1, 2, 3], "kind": "dequantized", "levels": 256}
DENSITIES = [
    lambda spec: PPCA(spec, 2),
    lambda spec: FactorAnalysis(spec, 2),
    lambda spec: GaussianMixture(spec, 2),
]
FITTED = [lambda spec: PCA(spec, 2), lambda spec: KMeans(spec, 2), *DENSITIES]


def data(n=40, seed=0):
    return torch.rand(n, 1, 2, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("make", DENSITIES)
@pytest.mark.parametrize("kind, levels", [("levels", 256), ("binary", 2)])
def test_densities_refuse_data_that_are_not_dequantized(make, kind, levels):
    with pytest.raises(ConfigError, match="data.representation=dequantized"):
        make({"shape": [1, 2, 3], "kind": kind, "levels": levels})


@pytest.mark.parametrize("kind, levels", [("levels", 256), ("binary", 2), ("dequantized", 256)])
def test_models_without_likelihood_take_any_representation(kind, levels):
    spec = {"shape": [1, 2, 3], "kind": kind, "levels": levels}
    for model in (PCA(spec, 2), KMeans(spec, 2), LinearAutoencoder(spec, 2)):
        assert model.nll_kind == "none" and not model.can("log_prob")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PCA(DEQ, 7), "model.latent_dim=7 is too large: it must be <= 6"),
        (lambda: LinearAutoencoder(DEQ, 7), "<= 6"),
        (lambda: PPCA(DEQ, 6), "must be < 6"),  # sigma^2 needs a discarded direction
        (lambda: FactorAnalysis(DEQ, 6), "must be < 6"),
        (lambda: PCA(DEQ, 0), "positive integer"),
        (lambda: GaussianMixture(DEQ, 0), "positive integer"),
        (lambda: KMeans(DEQ, -1), "positive integer"),
        (lambda: GaussianMixture(DEQ, 2, "tied"), "covariance_type"),
        (lambda: GaussianMixture(DEQ, 2, reg_covar=-1.0), "reg_covar"),
        (lambda: GaussianMixture(DEQ, 2, tol=-1.0), "tol"),
        (lambda: FactorAnalysis(DEQ, 2, min_variance=0.0), "min_variance"),
        (lambda: PPCA(DEQ, 2, min_variance=-1.0), "min_variance"),
    ],
)
def test_impossible_sizes_and_settings(make, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("^", r"\^")):
        make()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PCA(DEQ, 5), "too large for 4 training examples"),
        (lambda: PPCA(DEQ, 4), "too large for 4 training examples"),
        (lambda: FactorAnalysis(DEQ, 4), "too large for 4 training examples"),
        (lambda: GaussianMixture(DEQ, 5), "cannot seed 5 clusters from 4 examples"),
        (lambda: KMeans(DEQ, 5), "cannot seed 5 clusters from 4 examples"),
    ],
)
def test_more_components_than_examples(make, message):
    with pytest.raises(ConfigError, match=message):
        make().fit_tensor(data(4))


@pytest.mark.parametrize("make", FITTED)
def test_nan_and_empty_and_misshaped_input_are_data_errors(make):
    model = make(DEQ)
    bad = data()
    bad[3, 0, 1, 2] = math.nan
    with pytest.raises(DataError, match="1 NaN or infinite"):
        model.fit_tensor(bad)
    with pytest.raises(DataError, match="empty"):
        model.fit_tensor(data(0))
    with pytest.raises(DataError, match="empty training batch"):
        model.accumulate(data(0))
    with pytest.raises(DataError, match="6 values"):
        model.fit_tensor(torch.rand(10, 5, dtype=F64))
    model.begin_pass()
    with pytest.raises(DataError, match="no training examples"):
        model.end_pass()
    model.fit_tensor(data(), max_iter=3)
    for capability in ("log_prob", "encode", "reconstruct", "assign"):
        if model.can(capability):
            with pytest.raises(DataError, match="NaN"):
                getattr(model, capability)(bad)
            assert len(getattr(model, capability)(data(0))) == 0  # an empty batch is no error here
    inf = data()
    inf[0, 0, 0, 0] = math.inf
    with pytest.raises(DataError, match="infinite"):
        model.score(inf, None, "val")


def test_linear_autoencoder_refuses_nan_and_empty_batches():
    model = LinearAutoencoder(DEQ, 2)
    bad = data().float()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(DataError, match="NaN"):
        model.score(bad, None, "train")
    with pytest.raises(DataError, match="empty batch"):
        model.score(data(0).float(), None, "train")


def constant_pixel_data(n=200):
    """Dequantized-looking data whose first two features are exactly constant (MNIST's border)."""
    x = data(n)
    x[:, 0, 0, :2] = 0.5
    return x


def test_constant_pixels_make_gmm_covariances_singular_without_reg_covar():
    with pytest.raises(ConfigError, match="increase model.reg_covar"):
        GaussianMixture(DEQ, 2, "full", reg_covar=0.0).fit_tensor(constant_pixel_data())
    with pytest.raises(ConfigError, match="increase model.reg_covar"):
        GaussianMixture(DEQ, 2, "diag", reg_covar=0.0).fit_tensor(constant_pixel_data())
    model = GaussianMixture(DEQ, 2, "full", reg_covar=1e-6).fit_tensor(constant_pixel_data(), max_iter=20)
    # the constant features get exactly reg_covar as variance in every component
    torch.testing.assert_close(model.covariances[:, 0, 0], torch.full((2,), 1e-6, dtype=F64), rtol=1e-6, atol=0)
    assert torch.isfinite(model.log_prob(constant_pixel_data())).all()


def test_constant_pixels_hit_the_documented_variance_floors():
    x = constant_pixel_data()
    fa = FactorAnalysis(DEQ, 2, tol=1e-6, min_variance=1e-6).fit_tensor(x, max_iter=200)
    torch.testing.assert_close(fa.noise_variance[:2], torch.full((2,), 1e-6, dtype=F64))
    assert torch.isfinite(fa.log_prob(x)).all()
    # rank-4 data and K = 4: every discarded eigenvalue is 0, so sigma^2 sits on its floor
    ppca = PPCA(DEQ, 4, min_variance=1e-5).fit_tensor(x)
    assert float(ppca.noise_variance) == pytest.approx(1e-5)
    assert torch.isfinite(ppca.log_prob(x)).all()
