"""Code priors: the hull stays inside the training codes, the mixture follows them, and draws repeat when seeded."""

import pytest
import torch

from genlab.errors import ConfigError
from genlab.models.code_priors import CodePrior


def training_codes():
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.randn(300, 3, generator=g) * 0.1 + 4, torch.randn(300, 3, generator=g) * 0.1 - 4])


def test_hull_draws_are_convex_combinations_of_two_training_codes():
    codes = training_codes()
    prior = CodePrior("hull", 3).fit(codes)
    torch.manual_seed(1)
    z = prior.sample(2000, "cpu")
    assert z.shape == (2000, 3) and z.dtype == torch.float32
    assert (z >= codes.min(0).values - 1e-6).all() and (z <= codes.max(0).values + 1e-6).all()
    assert ((z[:, 0] > -3) & (z[:, 0] < 3)).any()  # between the clusters: mixes of one code from each


def test_the_mixture_puts_its_draws_where_the_codes_are_and_repeats_when_seeded():
    prior = CodePrior("gmm", 3, num_mixtures=2).fit(training_codes())
    torch.manual_seed(2)
    z = prior.sample(4000, "cpu")
    assert ((z.norm(dim=1) - 4 * 3**0.5).abs() < 1).float().mean() > 0.99  # at one of the two clusters
    assert abs((z[:, 0] > 0).float().mean() - 0.5) < 0.05  # in the codes' proportions
    torch.manual_seed(2)
    assert torch.equal(prior.sample(4000, "cpu"), z)


def test_unfitted_or_unknown_priors_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match="fitted to the training codes"):
        CodePrior("gmm", 3).sample(4, "cpu")
    with pytest.raises(ConfigError, match="model.code_prior"):
        CodePrior("uniform", 3)
    with pytest.raises(ConfigError, match="code_mixtures=10 exceeds the 5"):
        CodePrior("gmm", 3).fit(torch.zeros(5, 3))
    assert CodePrior("normal", 3).sample(4, "cpu").shape == (4, 3)
