import math

import pytest
import torch
from torch import distributions as D

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.autoencoder import Autoencoder
from genlab.models.vae import VAE, gaussian_kl
from genlab.nn.conv import ConvDecoder, ConvEncoder

GEOMETRIES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    q = D.Normal(mu, torch.exp(0.5 * logvar))
    p = D.Normal(torch.zeros(7), torch.ones(7))
    assert torch.allclose(gaussian_kl(mu, logvar), D.kl_divergence(q, p).sum(-1), atol=1e-5)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("shape", GEOMETRIES)
@pytest.mark.parametrize("kind", ["levels", "binary", "dequantized"])
def test_vae_shapes_on_every_geometry(arch, shape, kind):
    spec = DataSpec(shape, kind, 2 if kind == "binary" else 256)
    model = VAE(spec, arch=arch, latent_dim=3, hidden_dims=[16], channels=[4, 8], iwae_k=3)
    x = torch.rand(2, *shape)
    x = x.round() if kind == "binary" else (x * 255).round() / 255 if kind == "levels" else x
    assert model.encode(x).shape == (2, 3)
    assert model.reconstruct(x).shape == x.shape
    assert model.log_prob(x).shape == (2,)
    s = model.sample(4)
    assert s.shape == (4, *shape) and s.min() >= 0 and s.max() <= 1
    terms = model.loss_terms(x, None, "val")
    assert all(v.shape == (2,) for v in terms.values())


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("shape", GEOMETRIES)
def test_autoencoder_shapes_on_every_geometry(arch, shape):
    model = Autoencoder(DataSpec(shape, "levels", 256), arch=arch, latent_dim=2, hidden_dims=[8], channels=[4])
    x = torch.rand(3, *shape)
    assert model.encode(x).shape == (3, 2) and model.reconstruct(x).shape == x.shape
    assert model.sample(5).shape == (5, *shape)
    assert not model.can("log_prob") and model.nll_kind == "none"


@pytest.mark.parametrize("size", [7, 8, 13, 28, 32])
def test_conv_decoder_restores_odd_and_even_sizes(size):
    enc = ConvEncoder((2, size, size + 1), [4, 4, 4], 5)
    dec = ConvDecoder(5, [4, 4, 4], (2, size, size + 1), num_params=3)
    assert dec(enc(torch.rand(1, 2, size, size + 1))).shape == (1, 3, 2, size, size + 1)


def small_vae(seed=0):
    torch.manual_seed(seed)
    return VAE(DataSpec((1, 8, 8), "levels", 17), latent_dim=4, hidden_dims=[32], iwae_k=1).eval()


def test_iwae_with_one_sample_is_the_single_sample_elbo():
    model, x = small_vae(), torch.randint(0, 17, (6, 1, 8, 8)) / 16
    torch.manual_seed(1)
    iwae1 = model.iwae_bound(x, 1)
    # the same draw of eps, scored as log p(x|z) + log p(z) - log q(z|x)
    torch.manual_seed(1)
    mu, logvar = model.posterior(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(1, *mu.shape)[0]
    log_px = model.likelihood.log_prob(model.decode(z), x)
    log_pz = D.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = D.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z).sum(-1)
    assert torch.allclose(iwae1, log_px + log_pz - log_qz, atol=1e-4)


def test_iwae_k1_averages_to_the_analytic_elbo_and_grows_with_k():
    model, x = small_vae(), torch.randint(0, 17, (8, 1, 8, 8)) / 16
    torch.manual_seed(2)
    with torch.no_grad():
        mc = model.log_weights(x, 4000).mean(0)  # E_q[log w] = ELBO
        rec = model.elbo_terms(x.repeat(4000, 1, 1, 1))[0].view(4000, 8).mean(0)
        mu, logvar = model.posterior(x)
        elbo = rec - gaussian_kl(mu, logvar)
        assert torch.allclose(mc, elbo, atol=0.05 * elbo.abs().max().item())
        bounds = [model.iwae_bound(x.repeat(50, 1, 1, 1), k).mean().item() for k in (1, 10, 100)]
    assert bounds[0] < bounds[1] < bounds[2]


def test_iwae_chunking_does_not_change_the_bound():
    model, x = small_vae(), torch.randint(0, 17, (5, 1, 8, 8)) / 16
    torch.manual_seed(3)
    whole = model.log_weights(x, 12)
    model.iwae_batch = 10  # 2 samples per chunk for 5 examples
    torch.manual_seed(3)
    chunked = model.log_weights(x, 12)
    assert whole.shape == chunked.shape == (12, 5)
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_beta_warmup_is_linear():
    model = VAE(DataSpec((1, 8, 8), "levels", 17), latent_dim=2, beta=0.5, beta_warmup_steps=4)
    assert model.current_beta() == pytest.approx(0.5 / 4)  # global_step 0 -> first of 4 steps


@pytest.mark.parametrize(
    "kwargs, match",
    [({"latent_dim": 0}, "latent_dim"), ({"iwae_k": 0}, "iwae_k"), ({"beta": -1.0}, "beta"),
     ({"arch": "rnn"}, "model.arch"), ({"likelihood": "bernoulli"}, "representation=binarized")],
)  # fmt: skip
def test_impossible_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        VAE(DataSpec((1, 8, 8), "levels", 17), **kwargs)


def test_uniform_decoder_gives_log2_levels_bits_per_dim():
    # a Bernoulli decoder with zero logits is uniform over {0, 1}: exactly 1 bit/dim whatever z is
    model = VAE(DataSpec((1, 8, 8), "binary", 2), latent_dim=2, hidden_dims=[4])
    for p in model.decoder.parameters():
        torch.nn.init.zeros_(p)
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.5))
    log_px = model.likelihood.log_prob(model.decode(torch.randn(3, 2)), x)
    assert torch.allclose(-log_px / (64 * math.log(2)), torch.ones(3))
