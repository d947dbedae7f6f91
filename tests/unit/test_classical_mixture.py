"""Gaussian mixtures and K-means against scikit-learn (the reference) on real digits and MNIST."""

import math

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans as SkKMeans
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from tests.unit.dequantized_data import dequantized, digits

from genlab.data.vision import MNISTDataModule
from genlab.errors import ConfigError
from genlab.models.classical import GaussianMixture, KMeans
from genlab.models.classical.kmeans import kmeans_plusplus

F64 = torch.float64
TYPES = ("full", "diag", "spherical")


def sklearn_from(model, **kw):
    """A scikit-learn mixture started exactly where ``model`` is (weights, means, precisions)."""
    return SkGaussianMixture(
        model.num_mixtures, covariance_type=model.covariance_type, reg_covar=model.reg_covar, tol=model.tol,
        weights_init=model.weights.numpy(), means_init=model.means.numpy(),
        precisions_init=model.precisions.numpy(), **kw,
    )  # fmt: skip


def em_vs_sklearn(x, spec, k, covariance_type, tol=1e-3):
    model = GaussianMixture(spec, k, covariance_type, tol=tol)
    model.initialize(model.features(x))
    ref = sklearn_from(model, max_iter=500).fit(x.flatten(1).double().numpy())
    model.fit_tensor(x, max_iter=500)
    flat = x.flatten(1).double()
    assert bool(model.converged) and ref.converged_
    assert int(model.n_iter) == ref.n_iter_  # the same EM path, step for step
    assert float(model.log_prob(flat).mean()) == pytest.approx(ref.score(flat.numpy()), abs=1e-3)
    return model, ref


@pytest.mark.parametrize("covariance_type", TYPES)
def test_em_matches_sklearn_on_digits(covariance_type):
    x, spec = digits()
    model, ref = em_vs_sklearn(x, spec, 5, covariance_type)
    np.testing.assert_allclose(model.means.numpy(), ref.means_, atol=1e-6)
    np.testing.assert_allclose(model.covariances.numpy(), ref.covariances_, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_em_matches_sklearn_on_mnist(mnist_root, covariance_type):
    x, spec = dequantized(MNISTDataModule(str(mnist_root), download=False, representation="dequantized"), "test")
    em_vs_sklearn(x, spec, 8, covariance_type)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("covariance_type", TYPES)
def test_density_bic_and_responsibilities_equal_sklearn_for_the_same_parameters(covariance_type):
    x, spec = digits()
    flat = x.flatten(1).double().numpy()
    ref = SkGaussianMixture(4, covariance_type=covariance_type, random_state=0, max_iter=20).fit(flat)
    model = GaussianMixture(spec, 4, covariance_type)
    model.set_parameters(torch.tensor(ref.weights_), torch.tensor(ref.means_), torch.tensor(ref.covariances_))
    np.testing.assert_allclose(model.log_prob(x.double()).numpy(), ref.score_samples(flat), rtol=1e-10)
    np.testing.assert_allclose(model.responsibilities(x).numpy(), ref.predict_proba(flat), atol=1e-9)
    np.testing.assert_array_equal(model.assign(x).numpy(), ref.predict(flat))
    assert model.bic(x) == pytest.approx(ref.bic(flat), rel=1e-10)
    assert model.num_parameters() == ref._n_parameters()
    np.testing.assert_allclose(model.encode(x).sum(1).numpy(), 1.0, rtol=1e-6)
    torch.testing.assert_close(model.reconstruct(x).flatten(1), model.means[model.assign(x)].float())


def test_log_sum_exp_keeps_far_points_finite():
    spec = {"shape": [2], "kind": "dequantized", "levels": 256}
    model = GaussianMixture(spec, 2, "full")
    cov = 1e-4 * torch.eye(2, dtype=F64).repeat(2, 1, 1)
    model.set_parameters(torch.tensor([0.5, 0.5], dtype=F64), torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=F64), cov)
    x = torch.tensor([[100.0, 100.0], [0.0, 0.0]], dtype=F64)
    lp = model.log_prob(x)
    # the far point: the nearer component's log density plus log 0.5; no underflow to -inf
    d2 = 2 * 99.0**2 / 1e-4
    expected = -0.5 * (2 * math.log(2 * math.pi) + d2) - math.log(1e-4) + math.log(0.5)
    assert float(lp[0]) == pytest.approx(expected, rel=1e-12)
    resp = model.responsibilities(x)
    torch.testing.assert_close(resp, torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64))


@pytest.mark.parametrize("covariance_type", TYPES)
def test_samples_follow_the_mixture(covariance_type):
    spec = {"shape": [3], "kind": "dequantized", "levels": 256}
    model = GaussianMixture(spec, 2, covariance_type)
    cov = {"full": torch.tensor([[[0.04, 0.01, 0.0], [0.01, 0.02, 0.0], [0.0, 0.0, 0.01]]]).repeat(2, 1, 1),
           "diag": torch.tensor([[0.04, 0.02, 0.01], [0.01, 0.01, 0.01]]),
           "spherical": torch.tensor([0.04, 0.01])}[covariance_type]  # fmt: skip
    model.set_parameters(torch.tensor([0.3, 0.7]), torch.tensor([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0]]), cov)
    torch.manual_seed(0)
    s = model.sample(100_000).double()
    first = s[:, 0] < 2.5
    assert float(first.double().mean()) == pytest.approx(0.3, abs=0.01)
    torch.testing.assert_close(torch.cov(s[first].T), model.covariances[0] if covariance_type == "full" else torch.diag(
        model.covariances[0].expand(3)), rtol=0, atol=2e-3)  # fmt: skip


def test_kmeans_matches_sklearn_lloyd_from_the_same_seeds():
    x, spec = digits()
    model = KMeans(spec, 10, tol=1e-4)
    model.initialize(model.features(x))
    flat = x.flatten(1).double().numpy()
    ref = SkKMeans(10, init=model.centers.numpy(), n_init=1, tol=1e-4, algorithm="lloyd").fit(flat)
    model.fit_tensor(x, max_iter=300)
    np.testing.assert_allclose(model.centers.numpy(), ref.cluster_centers_, atol=1e-10)
    assert int(model.n_iter) == ref.n_iter_
    inertia = float(model.score(x.double(), None, "val")[0]["loss"].sum())
    assert inertia == pytest.approx(ref.inertia_, rel=1e-10)
    np.testing.assert_array_equal(model.assign(x).numpy(), ref.labels_)
    torch.testing.assert_close(model.encode(x).argmax(1), model.assign(x))
    assert model.sample(5).shape == (5, 1, 8, 8)


def test_kmeans_plusplus_seeds_are_distinct_rows_and_reproducible():
    x, _ = digits()
    flat = x.flatten(1).double()
    a, b = kmeans_plusplus(flat, 10, seed=3), kmeans_plusplus(flat, 10, seed=3)
    torch.testing.assert_close(a, b)
    assert (a[:, None, :] == flat[None]).all(-1).any(1).all()  # every seed is a data point
    assert len(torch.unique(a, dim=0)) == 10
    with pytest.raises(ConfigError, match="distinct"):
        kmeans_plusplus(torch.ones(20, 3, dtype=F64), 2)
    with pytest.raises(ConfigError, match="from 5 examples"):
        kmeans_plusplus(flat[:5], 6)
