"""The generative classifier: with the true densities of a two-Gaussian mixture it is the Bayes classifier."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal, norm
from tests.unit.eval_fixtures import Stub, Tensors, evaluation_cfg

from genlab.data.spec import DataSpec
from genlab.evaluation import classifier, evaluate
from genlab.evaluation.context import Context

SPEC = DataSpec((2,), "dequantized", 256, num_classes=2)
MEANS = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
PRIOR = (0.7, 0.3)


class TrueGaussians(Stub):
    """``log p(x | y) = log N(x; mu_y, I)`` in nats, the densities the data are drawn from."""

    capabilities = frozenset({"log_prob", "conditional"})

    def log_prob(self, x, condition=None):
        if condition is None:  # the marginal under the true prior
            both = torch.stack([self.log_prob(x, torch.full((len(x),), c)) for c in range(2)], 1)
            return torch.logsumexp(both + torch.tensor(PRIOR, dtype=torch.float64).log(), 1)
        d = x.double() - MEANS.to(x.device)[condition.long()]
        return -0.5 * d.pow(2).sum(1) - math.log(2 * math.pi)


class Unconditional(Stub):
    capabilities = frozenset({"log_prob"})

    def log_prob(self, x):
        return torch.zeros(len(x))


def mixture(counts: tuple[int, int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``counts[c]`` draws of ``N(mu_c, I)`` each, labelled ``c``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return MEANS[y].float() + torch.randn(len(y), 2, generator=g), y


def test_true_densities_give_the_bayes_classifier(tmp_path):
    n = 4000
    x, y = mixture((int(PRIOR[0] * n), int(PRIOR[1] * n)), seed=1)
    dm = Tensors(train=mixture((700, 300), seed=0), test=(x, y))  # training frequencies = the true prior
    ctx = Context(TrueGaussians(SPEC), dm, evaluation_cfg(tmp_path), tmp_path)
    assert classifier.not_applicable(ctx) is None
    out = classifier.run(ctx)
    accuracy = out.metrics["generative_classifier_accuracy"]
    # the same argmax on the true densities, computed independently (scipy), is the Bayes rule
    joint = np.stack([multivariate_normal(MEANS[c].numpy(), np.eye(2)).logpdf(x.double().numpy()) + math.log(PRIOR[c])
                      for c in range(2)], 1)  # fmt: skip
    assert accuracy == float(np.mean(joint.argmax(1) == y.numpy()))
    # and the closed form: the boundary x_1 = log(pi_0 / pi_1) / 2, so accuracy = pi_0 Phi(t + 1) + pi_1 Phi(1 - t)
    t = 0.5 * math.log(PRIOR[0] / PRIOR[1])
    bayes = PRIOR[0] * norm.cdf(t + 1) + PRIOR[1] * norm.cdf(1 - t)
    assert abs(accuracy - bayes) < 4 * math.sqrt(bayes * (1 - bayes) / n)
    columns, rows = out.tables["generative_classifier_per_class"]
    assert columns == ["class", "accuracy", "count", "prior"]
    assert [r[0] for r in rows] == [0, 1] and [r[2] for r in rows] == [2800, 1200]
    assert [r[3] for r in rows] == pytest.approx(list(PRIOR))
    assert [r[1] for r in rows] == pytest.approx([norm.cdf(t + 1), norm.cdf(1 - t)], abs=0.03)  # per-class recall


def test_the_prior_comes_from_the_training_labels():
    prior = classifier.log_prior(torch.tensor([0, 0, 0, 2]), 3)
    assert prior.tolist() == [math.log(0.75), -math.inf, math.log(0.25)]


def test_not_class_conditional_is_not_applicable(tmp_path):
    dm = Tensors(train=mixture((3, 3), 0), test=mixture((3, 3), 1))
    cfg = evaluation_cfg(tmp_path, tests=["classifier"])
    metrics, _ = evaluate(Unconditional(SPEC), dm, cfg, tmp_path)
    assert metrics == {"eval/classifier": "n/a: the model is not class-conditional (train with model.conditional=true)"}
    metrics, _ = evaluate(TrueGaussians(SPEC), dm, cfg, tmp_path)
    assert metrics["eval/classifier"] == "ok" and 0 <= metrics["eval/generative_classifier_accuracy"] <= 1
    assert (tmp_path / "evaluation" / "generative_classifier_per_class.csv").is_file()
