"""The conditional VAE (Sohn et al. 2015): the label reaches encoder and decoder; the marginal mixes the bounds."""

import math

import pytest
import torch

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.vae import VAE
from genlab.nn.conv import ConvDecoder, ConvEncoder
from genlab.utils.config import config_of

SPEC = DataSpec((1, 8, 8), "levels", 17, num_classes=3)


def cvae(**kw):
    torch.manual_seed(0)
    return VAE(SPEC, latent_dim=2, iwae_k=4, conditional=True, **kw).eval()


def test_marginal_is_the_uniform_mixture_of_the_class_bounds():
    model, x = cvae(), torch.rand(5, 1, 8, 8)
    torch.manual_seed(1)
    marginal = model.log_prob(x)
    torch.manual_seed(1)  # the marginal draws its importance samples class after class, in this order
    per_class = torch.stack([model.log_prob(x, condition=torch.full((5,), c)) for c in range(3)])
    assert torch.allclose(marginal, torch.logsumexp(per_class, 0) - math.log(3), atol=1e-6)
    assert model.can("conditional") and model.describe()["class_prior"] == "uniform"


def test_the_label_changes_encoder_and_decoder():
    model, x, z = cvae(), torch.rand(4, 1, 8, 8), torch.randn(4, 2)
    a, b = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(model.encode(x, condition=a), model.encode(x, condition=b))
    assert not torch.allclose(model.decode(z, condition=a), model.decode(z, condition=b))
    assert torch.equal(model.encode(x), model.encode(x, condition=model.infer_labels(x)))


@pytest.mark.parametrize("nets", [{}, {"encoder": config_of(ConvEncoder, channels=[4, 8]),
                                       "decoder": config_of(ConvDecoder, channels=[8, 4])}])  # fmt: skip
def test_shapes_and_training_step_with_labels(nets):
    model = cvae(**nets)
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    sums, counts = model.score(x, y, "val")
    assert set(sums) == {"loss", "cond_elbo_nats", "kl_nats"} and counts is None
    assert model.sample(6, condition=y).shape == (6, 1, 8, 8)
    assert model.reconstruct(x).shape == x.shape
    model.train()
    model.score(x, y, "train")[0]["loss"].sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_refusals():
    with pytest.raises(ConfigError, match="needs labelled data"):
        VAE(DataSpec((1, 8, 8), "levels", 17), conditional=True)
    with pytest.raises(ConfigError, match=r"labels in \[0, 3\)"):
        cvae().sample(2, condition=torch.tensor([0, 5]))
    with pytest.raises(ConfigError, match="unconditional"):
        VAE(SPEC, latent_dim=2).sample(2, condition=torch.tensor([0, 1]))
