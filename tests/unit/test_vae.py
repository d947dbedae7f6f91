import math
import re

import pytest
import torch
from omegaconf import OmegaConf
from torch import distributions as D

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.autoencoder import Autoencoder
from genlab.models.vae import VAE, gaussian_kl
from genlab.nn.conv import ConvDecoder, ConvEncoder
from genlab.nn.mlp import MLPDecoder, MLPEncoder
from genlab.utils.config import config_of

GEOMETRIES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def nets(arch, widths):
    """``encoder``/``decoder`` configs: an MLP with hidden ``widths`` or a CNN with ``widths`` channels."""
    enc, dec, key = (MLPEncoder, MLPDecoder, "hidden_dims") if arch == "mlp" else (ConvEncoder, ConvDecoder, "channels")
    return {"encoder": config_of(enc, **{key: widths}), "decoder": config_of(dec, **{key: widths[::-1]})}


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
    model = VAE(spec, **nets(arch, [16] if arch == "mlp" else [4, 8]), latent_dim=3, iwae_k=3)
    x = torch.rand(2, *shape)
    x = x.round() if kind == "binary" else (x * 255).round() / 255 if kind == "levels" else x
    assert model.encode(x).shape == (2, 3)
    assert model.reconstruct(x).shape == x.shape
    assert model.log_prob(x).shape == (2,)
    s = model.sample(4)
    assert s.shape == (4, *shape) and s.min() >= 0 and s.max() <= 1
    terms, _ = model.score(x, None, "val")
    assert all(v.shape == (2,) for v in terms.values())


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("shape", GEOMETRIES)
def test_autoencoder_shapes_on_every_geometry(arch, shape):
    model = Autoencoder(DataSpec(shape, "levels", 256), **nets(arch, [8] if arch == "mlp" else [4]), latent_dim=2)
    x = torch.rand(3, *shape)
    assert model.encode(x).shape == (3, 2) and model.reconstruct(x).shape == x.shape
    assert model.sample(5).shape == (5, *shape)
    assert not model.can("log_prob") and model.nll_kind == "none"


@pytest.mark.parametrize("size", [7, 8, 13, 28, 32])
def test_conv_decoder_restores_odd_and_even_sizes(size):
    enc = ConvEncoder(shape=(2, size, size + 1), out_features=5, channels=[4, 6, 8])
    dec = ConvDecoder(latent_dim=5, shape=(2, size, size + 1), num_params=3, channels=[8, 6, 4])
    assert dec(enc(torch.rand(1, 2, size, size + 1))).shape == (1, 3, 2, size, size + 1)


def small_vae(seed=0):
    torch.manual_seed(seed)
    return VAE(DataSpec((1, 8, 8), "levels", 17), **nets("mlp", [32]), latent_dim=4, iwae_k=1).eval()


def test_iwae_with_one_sample_is_the_single_sample_elbo():
    model, x = small_vae(), torch.randint(0, 17, (6, 1, 8, 8)) / 16
    torch.manual_seed(1)
    iwae1 = model.iwae_bound(x, 1)
    # the same draw of eps, scored as log p(x|z) + log p(z) - log q(z|x)
    torch.manual_seed(1)
    mu, logvar = model.posterior(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(1, *mu.shape)[0]
    log_px = model.likelihood.log_prob(model.decoder_params(z), x)
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
     ({"likelihood": "bernoulli"}, "representation=binarized")],
)  # fmt: skip
def test_impossible_settings_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        VAE(DataSpec((1, 8, 8), "levels", 17), **kwargs)


@pytest.mark.parametrize(
    "nets_, message",
    [({"encoder": {"hidden_dims": [8]}}, "model.encoder must be a config with a _target_"),
     ({"decoder": "mlp"}, "model.decoder must be a config with a _target_"),
     ({"encoder": {"_target_": "genlab.nn.rnn.RNN"}}, "model.encoder._target_='genlab.nn.rnn.RNN' cannot be imported"),
     ({"decoder": config_of(MLPDecoder, channels=[4])}, "model.decoder (genlab.nn.mlp.MLPDecoder): TypeError: "),
     ({"encoder": config_of(MLPEncoder, hidden_dims=[8, 0])}, "model.encoder: hidden_dims must be a list of positive"),
     ({"decoder": config_of(ConvDecoder, channels=[])}, "model.decoder: channels must be a non-empty list")],
)  # fmt: skip
@pytest.mark.parametrize("cls", [VAE, Autoencoder])
def test_invalid_network_configs_name_the_key(cls, nets_, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        cls(DataSpec((1, 8, 8), "levels", 17), **nets_)


@pytest.mark.parametrize("cls", [VAE, Autoencoder])
@pytest.mark.parametrize("key, net", [("encoder", ConvEncoder), ("decoder", ConvDecoder)])
def test_cnn_on_flat_data_is_refused_naming_the_key(cls, key, net):
    message = f"model.{key}: {net.__name__} needs (C, H, W) images, got data of shape (64,)"
    with pytest.raises(ConfigError, match=re.escape(message)):
        cls(DataSpec((64,), "levels", 17), **{key: config_of(net)})


def test_networks_are_stored_as_plain_config_and_rebuilt_from_it(tmp_path):
    spec = DataSpec((1, 8, 8), "levels", 17)
    encoder = OmegaConf.create(config_of(ConvEncoder, channels=[4]))  # what a composed config holds
    model = VAE(spec, encoder=encoder, decoder=config_of(ConvDecoder, channels=[4]), latent_dim=2)
    assert model.hparams["encoder"] == {"_target_": "genlab.nn.conv.ConvEncoder", "channels": [4]}
    assert type(model.hparams["encoder"]) is dict and type(model.hparams["encoder"]["channels"]) is list
    assert isinstance(model.encoder, ConvEncoder) and isinstance(model.decoder, ConvDecoder)
    default = VAE(spec, latent_dim=2)  # MLP 512-256 / 256-512 when no networks are given
    assert default.hparams["encoder"] == config_of(MLPEncoder, hidden_dims=[512, 256])
    assert default.hparams["decoder"] == config_of(MLPDecoder, hidden_dims=[256, 512])
    torch.save(dict(model.hparams), tmp_path / "hparams.pt")
    rebuilt = VAE(**torch.load(tmp_path / "hparams.pt", weights_only=True))  # plain types only
    rebuilt.load_state_dict(model.state_dict())


def test_uniform_decoder_gives_log2_levels_bits_per_dim():
    # a Bernoulli decoder with zero logits is uniform over {0, 1}: exactly 1 bit/dim whatever z is
    model = VAE(DataSpec((1, 8, 8), "binary", 2), **nets("mlp", [4]), latent_dim=2)
    for p in model.decoder.parameters():
        torch.nn.init.zeros_(p)
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.5))
    log_px = model.likelihood.log_prob(model.decoder_params(torch.randn(3, 2)), x)
    assert torch.allclose(-log_px / (64 * math.log(2)), torch.ones(3))
