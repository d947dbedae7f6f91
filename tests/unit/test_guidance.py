"""Classifier guidance by sampling-importance-resampling: P(x|y) ∝ P(y|x) P(x)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.evaluation.context import to_levels
from genlab.evaluation.guidance import effective_sample_size, guided_samples, importance_weights
from genlab.models.classical.linear_ae import LinearAutoencoder
from genlab.models.vae import VAE

SPEC = DataSpec((1, 8, 8), "levels", 17, 10)


def true_class(x: torch.Tensor) -> torch.Tensor:
    """A deterministic 'class' of images: the sum of their level indices modulo 10."""
    return (to_levels(x, SPEC) * 16).round().long().flatten(1).sum(1) % 10


class PerfectClassifier(nn.Module):
    """P(y|x) = 1 for y = true_class(x), exactly 0 otherwise (logits 0 and -inf)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def logits(self, x):
        self.calls += 1
        y = true_class(x)
        out = torch.full((len(x), 10), float("-inf"))
        out[torch.arange(len(x)), y] = 0.0
        return out


def vae(**kw):
    torch.manual_seed(0)
    return VAE(data_spec=SPEC, latent_dim=2, **kw).eval()


def test_a_perfect_classifier_returns_only_the_asked_class():
    model, clf = vae(), PerfectClassifier()
    x, ess = guided_samples(model, clf, 3, 50, 300, torch.Generator().manual_seed(0), batch_size=128)
    assert x.shape == (50, 1, 8, 8)
    assert (true_class(x) == 3).all()
    # ESS of 0/1 weights is the number of candidates of the class
    seed = int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(0)))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        candidates = torch.cat([model.sample(128), model.sample(128), model.sample(44)])
    assert ess == float((true_class(candidates) == 3).sum())
    assert 0 < ess < 300


def test_guidance_is_seeded_by_the_generator_alone():
    model, clf = vae(), PerfectClassifier()
    a, ess_a = guided_samples(model, clf, 7, 20, 200, torch.Generator().manual_seed(5))
    torch.manual_seed(123)  # the global RNG does not matter
    b, ess_b = guided_samples(model, clf, 7, 20, 200, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and ess_a == ess_b
    c, _ = guided_samples(model, clf, 7, 20, 200, torch.Generator().manual_seed(6))
    assert not torch.equal(a, c)


def test_effective_sample_size_exact():
    assert effective_sample_size(torch.tensor([1.0, 1.0, 0.0, 0.0])) == 2.0
    assert effective_sample_size(torch.tensor([1.0, 2.0, 3.0])) == pytest.approx(36 / 14, rel=1e-15)
    assert effective_sample_size(torch.full((10,), 0.3)) == pytest.approx(10.0, rel=1e-14)
    assert effective_sample_size(torch.zeros(4)) == 0.0


def test_importance_weights_are_class_probabilities():
    class Fixed(nn.Module):
        def logits(self, x):
            return torch.log(torch.tensor([[0.2, 0.8]])).expand(len(x), 2)

    w = importance_weights(Fixed(), torch.rand(5, 1, 8, 8), SPEC, 1)
    assert w.dtype == torch.float64 and torch.allclose(w, torch.full((5,), 0.8, dtype=torch.float64))


def test_all_zero_weights_are_refused():
    class Never(nn.Module):
        def logits(self, x):
            out = torch.zeros(len(x), 10)
            out[:, 0] = float("-inf")
            return out

    with pytest.raises(ConfigError, match="raise num_candidates"):
        guided_samples(vae(), Never(), 0, 5, 20, torch.Generator().manual_seed(0))


def test_models_that_cannot_sample_or_are_conditional_are_refused():
    clf = PerfectClassifier()
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ConfigError, match="does not declare 'sample'"):
        guided_samples(LinearAutoencoder(SPEC, latent_dim=2), clf, 0, 5, 10, g)
    with pytest.raises(ConfigError, match="class-conditional"):
        guided_samples(vae(conditional=True), clf, 0, 5, 10, g)
    with pytest.raises(ConfigError, match=r"in \[0, 10\)"):
        guided_samples(vae(), clf, 10, 5, 10, g)
    with pytest.raises(ConfigError, match="num_candidates"):
        guided_samples(vae(), clf, 1, 5, 0, g)
    assert clf.calls == 0
