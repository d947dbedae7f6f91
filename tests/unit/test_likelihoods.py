import pytest
import torch
from torch import distributions as D

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.nn.likelihoods import Bernoulli, DiscretizedLogistic, Gaussian, make_likelihood


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretized_logistic_masses_sum_to_one(levels):
    torch.manual_seed(0)
    spec = DataSpec((1,), "levels", levels)
    lik = DiscretizedLogistic(spec)
    # one random (loc, log_scale) per row, scored at every level of the grid
    params = torch.stack([torch.rand(5) * 1.4 - 0.2, torch.rand(5) * 6 - 5], 1)  # (5, 2)
    grid = torch.arange(levels) / (levels - 1)
    lp = torch.stack([lik.log_prob(params[:, :, None], g.expand(5, 1)) for g in grid], 1)  # (5, L)
    assert torch.logsumexp(lp.double(), 1).exp().tolist() == pytest.approx([1.0] * 5, abs=1e-4)


def test_discretized_logistic_gradients_stay_finite_at_extremes():
    spec = DataSpec((4,), "levels", 256)
    lik = DiscretizedLogistic(spec)
    params = torch.tensor([[[5.0, -5.0, 0.5, 0.0], [-20.0, -20.0, 10.0, -7.0]]], requires_grad=True)
    x = torch.tensor([[0.0, 1.0, 0.5, 128 / 255]])
    lp = lik.log_prob(params, x)
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(params.grad).all()


def test_bernoulli_matches_torch_distributions():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 1, 4, 4)
    x = torch.bernoulli(torch.full((3, 1, 4, 4), 0.5))
    ref = D.Bernoulli(logits=logits[:, 0]).log_prob(x).flatten(1).sum(1)
    got = Bernoulli(DataSpec((1, 4, 4), "binary", 2)).log_prob(logits, x)
    assert torch.allclose(got, ref, atol=1e-5)


def test_gaussian_matches_torch_distributions():
    torch.manual_seed(0)
    spec = DataSpec((1, 4, 4), "dequantized", 256)
    params = torch.randn(3, 2, 1, 4, 4) * 0.5
    x = torch.rand(3, 1, 4, 4)
    lik = Gaussian(spec, learn_variance=True)
    mu, logvar = lik._mean_logvar(params)
    ref = D.Normal(mu, torch.exp(0.5 * logvar)).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(lik.log_prob(params, x), ref, atol=1e-4)
    fixed = Gaussian(spec, learn_variance=False, std=0.2)
    ref = D.Normal(params[:, 0], 0.2).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(fixed.log_prob(params[:, :1], x), ref, atol=1e-4)


def test_auto_picks_the_likelihood_of_the_data_kind_and_refuses_mismatches():
    assert isinstance(make_likelihood("auto", DataSpec((1, 8, 8), "binary", 2)), Bernoulli)
    assert isinstance(make_likelihood("auto", DataSpec((1, 8, 8), "levels", 17)), DiscretizedLogistic)
    assert isinstance(make_likelihood("auto", DataSpec((1, 8, 8), "dequantized", 17)), Gaussian)
    with pytest.raises(ConfigError, match="data.representation=binarized"):
        make_likelihood("bernoulli", DataSpec((1, 8, 8), "levels", 256))
    with pytest.raises(ConfigError, match="unknown model.likelihood"):
        make_likelihood("poisson", DataSpec((1, 8, 8), "levels", 256))


def test_discretized_logistic_samples_lie_on_the_grid():
    spec = DataSpec((1, 4, 4), "levels", 17)
    s = DiscretizedLogistic(spec).sample(torch.zeros(8, 2, 1, 4, 4))
    k = s * 16
    assert torch.equal(k, k.round()) and s.min() >= 0 and s.max() <= 1


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretized_logistic_mean_is_the_mean_of_its_masses_and_location_is_the_clamped_loc(levels):
    lik = DiscretizedLogistic(DataSpec((1, 1, 1), "levels", levels))
    torch.manual_seed(0)
    params = torch.randn(5, 2, 1, 1, 1, dtype=torch.float64)
    params[:, 0] = params[:, 0] * 0.6 + 0.5
    grid = torch.arange(levels, dtype=torch.float64) / (levels - 1)
    masses = torch.stack([lik.log_prob(params, torch.full((5, 1, 1, 1), float(v), dtype=torch.float64)).exp()
                          for v in grid])  # fmt: skip
    expected = (masses * grid[:, None]).sum(0)
    torch.testing.assert_close(lik.mean(params).flatten(), expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(lik.location(params), params[:, 0].clamp(0, 1))
    assert not torch.allclose(lik.mean(params), lik.location(params))  # they differ: the mean is not the location
