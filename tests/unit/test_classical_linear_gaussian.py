"""PPCA and factor analysis: exact densities and posteriors against dense formulas, fits against scikit-learn."""

import math

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SkPCA
from sklearn.decomposition import FactorAnalysis as SkFactorAnalysis
from tests.unit.dequantized_data import dequantized, digits

from genlab.data.vision import MNISTDataModule
from genlab.models.classical import PPCA, FactorAnalysis

F64 = torch.float64


def random_params(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    p, k = model.num_features, model.latent_dim
    model.mean.copy_(torch.rand(p, generator=g, dtype=F64))
    model.loadings.copy_(torch.randn(p, k, generator=g, dtype=F64) * 0.3)
    if model.noise_variance.dim() == 0:
        model.noise_variance.fill_(0.05)
    else:
        model.noise_variance.copy_(0.01 + torch.rand(p, generator=g, dtype=F64) * 0.1)
    return g


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysis])
def test_log_prob_and_posterior_equal_the_dense_gaussian(cls):
    spec = {"shape": [1, 4, 5], "kind": "dequantized", "levels": 256}
    model = cls(spec, latent_dim=3)
    g = random_params(model)
    x = torch.rand(7, 1, 4, 5, generator=g, dtype=F64)
    w, mu, cov = model.loadings, model.mean, model.covariance()
    dense = torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)
    torch.testing.assert_close(model.log_prob(x), dense.log_prob(x.flatten(1)), rtol=1e-12, atol=1e-10)
    # p(z|x) = N(W^T C^{-1} (x - mu), I - W^T C^{-1} W)
    c_inv = torch.linalg.inv(cov)
    mean, post_cov = model.posterior(x)
    torch.testing.assert_close(mean, (x.flatten(1) - mu) @ c_inv @ w)
    torch.testing.assert_close(post_cov, torch.eye(3, dtype=F64) - w.T @ c_inv @ w)
    torch.testing.assert_close(model.encode(x), mean)
    torch.testing.assert_close(model.reconstruct(x).flatten(1), mean @ w.T + mu)
    # decode: the mean of p(x | z); the component vectors are the rows of W^T
    z = torch.randn(4, 3, generator=g, dtype=F64)
    assert model.decode(z).shape == (4, 1, 4, 5)
    torch.testing.assert_close(model.decode(z).flatten(1), z @ w.T + mu)
    torch.testing.assert_close(model.component_vectors(), w.T, rtol=0, atol=0)
    assert model.can("decode") and model.can("components") and model.can("fit")
    assert model.log_prob(x.float()).dtype == torch.float32
    terms, counts = model.score(x, None, "val")
    torch.testing.assert_close(terms["loss"], -model.log_prob(x))
    torch.testing.assert_close(terms["nll_nats"], terms["loss"])  # so the test stage does not score it again
    assert counts is None


@pytest.mark.parametrize("cls", [PPCA, FactorAnalysis])
def test_samples_have_the_model_covariance(cls):
    spec = {"shape": [6], "kind": "dequantized", "levels": 256}
    model = cls(spec, latent_dim=2)
    random_params(model, seed=1)
    torch.manual_seed(0)
    s = model.sample(200_000).double()
    assert s.shape == (200_000, 6)
    torch.testing.assert_close(s.mean(0), model.mean, rtol=0, atol=5e-3)
    torch.testing.assert_close(torch.cov(s.T), model.covariance(), rtol=0, atol=5e-3)


def test_ppca_training_log_likelihood_is_the_closed_form():
    # Tipping & Bishop (1999), Eq. 4 at the ML solution: tr(C^{-1} S) = P
    x, spec = digits()
    model = PPCA(spec, latent_dim=10).fit_tensor(x)
    flat = x.flatten(1).double().numpy()
    lam = np.linalg.eigvalsh(np.cov(flat.T, bias=True))[::-1]
    p, k = flat.shape[1], 10
    sigma2 = lam[k:].mean()
    assert float(model.noise_variance) == pytest.approx(sigma2, rel=1e-10)
    expected = -0.5 * (p * math.log(2 * math.pi) + np.log(lam[:k]).sum() + (p - k) * math.log(sigma2) + p)
    assert float(model.log_prob(x.double()).mean()) == pytest.approx(expected, rel=1e-10)
    assert float(model.train_log_lik) == pytest.approx(expected, rel=1e-10)
    # W = U_K (Lambda_K - sigma^2)^{1/2}: W^T W is diagonal with lambda_j - sigma^2
    torch.testing.assert_close(model.loadings.T @ model.loadings, torch.diag(torch.tensor(lam[:k].copy()) - sigma2))


def ppca_vs_sklearn(x, spec, k):
    model = PPCA(spec, latent_dim=k).fit_tensor(x)
    flat = x.flatten(1).double()
    ref = SkPCA(k, svd_solver="covariance_eigh").fit(flat.numpy())  # exact, like "full", and faster
    ours = float(model.log_prob(flat).mean())
    assert ours == pytest.approx(ref.score(flat.numpy()), abs=1e-3)
    return ours


def test_ppca_matches_sklearn_pca_score_on_digits():
    x, spec = digits()
    ppca_vs_sklearn(x, spec, 10)


def test_ppca_matches_sklearn_pca_score_on_mnist(mnist_root):
    x, spec = dequantized(MNISTDataModule(str(mnist_root), download=False, representation="dequantized"))
    ours = ppca_vs_sklearn(x, spec, 20)
    assert ours > 0  # a density on [0, 1]^784 concentrated on digit-like images


def fa_vs_sklearn(x, spec, k, tol, **sk):
    """Both fitted to the same tolerance (ours in nats per example, sklearn's on the total)."""
    model = FactorAnalysis(spec, latent_dim=k, tol=tol).fit_tensor(x, max_iter=2000)
    assert bool(model.converged)
    flat = x.flatten(1).double()
    ref = SkFactorAnalysis(k, tol=tol * len(flat), max_iter=2000, random_state=0, **sk).fit(flat.numpy())
    ours = float(model.log_prob(flat).mean())
    assert ours == pytest.approx(ref.score(flat.numpy()), abs=1e-3)
    assert ours == pytest.approx(float(model.train_log_lik), abs=tol * 10)  # the last E-step's score
    return model


def test_factor_analysis_matches_sklearn_on_digits():
    x, spec = digits()
    fa_vs_sklearn(x, spec, 10, tol=1e-5, svd_method="lapack")


def test_factor_analysis_matches_sklearn_on_mnist(mnist_root):
    x, spec = dequantized(MNISTDataModule(str(mnist_root), download=False, representation="dequantized"), "test")
    fa_vs_sklearn(x, spec, 10, tol=1e-5, iterated_power=10)


def test_factor_analysis_em_never_lowers_the_likelihood():
    x, spec = digits()
    model = FactorAnalysis(spec, latent_dim=6, tol=0.0)
    model.fit_tensor(x, max_iter=1)  # the moment pass: PPCA start
    scores = []
    for _ in range(15):
        model.fit_tensor(x, max_iter=1)
        scores.append(float(model.train_log_lik))
    assert all(b >= a - 1e-9 for a, b in zip(scores, scores[1:]))
    assert scores[-1] > scores[0] + 0.1  # EM moved away from the PPCA start
    assert int(model.n_iter) == 16


def test_streamed_em_equals_one_batch_em():
    x, spec = digits()
    whole = FactorAnalysis(spec, latent_dim=5, tol=0.0).fit_tensor(x, max_iter=6)
    streamed = FactorAnalysis(spec, latent_dim=5, tol=0.0).fit_tensor(x, max_iter=6, batch_size=100)
    for name in ("mean", "loadings", "noise_variance", "train_log_lik"):
        torch.testing.assert_close(getattr(streamed, name), getattr(whole, name), rtol=1e-9, atol=1e-12)


def data_pass_em_step(model, x):
    """One EM iteration of factor analysis from the data themselves (the E-step per example, summed):
    the reference for the model's iteration on the kept covariance. Returns ``(W, Psi, average log-lik)``."""
    f, d = model.factors(), x - model.mean
    ez = f.posterior_mean(d)  # (N, K)
    n = len(x)
    a, b = d.T @ ez / n, f.posterior_cov() + ez.T @ ez / n
    w = torch.linalg.solve(b, a.T).T
    psi = ((d * d).sum(0) / n - (w * a).sum(1)).clamp(min=model.min_variance)
    return w, psi, f.log_prob(d).mean()


def test_factor_analysis_em_on_the_covariance_equals_em_on_the_data():
    x, spec = digits()
    flat = x.flatten(1).double()
    model = FactorAnalysis(spec, latent_dim=6, tol=0.0).fit_tensor(x, max_iter=1)  # the moment pass
    torch.testing.assert_close(model.sample_covariance, torch.cov(flat.T, correction=0), rtol=1e-10, atol=1e-12)
    for _ in range(5):
        w, psi, score = data_pass_em_step(model, flat)
        model.fit_tensor(x, max_iter=1)
        torch.testing.assert_close(model.loadings, w, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(model.noise_variance, psi, rtol=1e-8, atol=1e-12)
        assert float(model.train_log_lik) == pytest.approx(float(score), rel=1e-11)


def test_a_factor_analysis_checkpoint_without_the_covariance_recomputes_it(tmp_path):
    x, spec = digits()
    straight = FactorAnalysis(spec, latent_dim=4, tol=0.0).fit_tensor(x, max_iter=4)
    model = FactorAnalysis(spec, latent_dim=4, tol=0.0).fit_tensor(x, max_iter=3)
    state = {k: v for k, v in model.state_dict().items() if k != "sample_covariance"}  # written before S was kept
    ckpt = {"state_dict": state, "hyper_parameters": dict(model.hparams), "pytorch-lightning_version": L.__version__}
    torch.save(ckpt, tmp_path / "old.ckpt")
    loaded = FactorAnalysis.load_from_checkpoint(tmp_path / "old.ckpt", weights_only=True)
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x), rtol=0, atol=0)
    assert loaded.sample_covariance.isnan().all()
    loaded.fit_tensor(x, max_iter=1)  # the moments again, then the same EM iteration
    for name in ("mean", "loadings", "noise_variance", "train_log_lik", "sample_covariance"):
        torch.testing.assert_close(getattr(loaded, name), getattr(straight, name), rtol=1e-9, atol=1e-12)
    assert int(loaded.n_iter) == 4
