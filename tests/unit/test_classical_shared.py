"""The parts the classical models share: seeding from data (``FittedModel.seeded``), the linear latent
models' encode/decode/reconstruct (``LinearLatentModel``) and the linear-Gaussian parameter count."""

import pytest
import torch

from genlab.models.classical import PCA, PPCA, FactorAnalysis, GaussianMixture, KMeans

F64 = torch.float64
DEQ = {"shape": [1, 2, 3], "kind": "dequantized", "levels": 256}


def data(n=40, seed=0):
    return torch.rand(n, 1, 2, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize(
    "make", [lambda: KMeans(DEQ, 2, init_max_samples=7), lambda: GaussianMixture(DEQ, 2, init_max_samples=7)]
)
def test_seeded_models_want_examples_until_initialised(make):
    model = make()
    assert model.seeded and "initialized" in model.state_dict()
    assert model.init_examples() == 7
    model.fit_tensor(data(), max_iter=1)
    assert int(model.initialized) == 1 and model.init_examples() == 0


@pytest.mark.parametrize("make", [lambda: PCA(DEQ, 2), lambda: PPCA(DEQ, 2), lambda: FactorAnalysis(DEQ, 2)])
def test_unseeded_models_want_no_examples_and_have_no_initialized_buffer(make):
    model = make()
    assert not model.seeded and model.init_examples() == 0
    assert "initialized" not in model.state_dict()


@pytest.mark.parametrize("make", [lambda: PCA(DEQ, 2), lambda: PPCA(DEQ, 2), lambda: FactorAnalysis(DEQ, 2)])
def test_linear_latent_models_reconstruct_by_decoding_their_codes(make):
    model = make().fit_tensor(data(), max_iter=5)
    x = data(9, seed=1)
    codes = model.encode(x)
    assert codes.shape == (9, 2) and codes.dtype == F64
    torch.testing.assert_close(codes, model.codes(x.flatten(1) - model.mean), rtol=0, atol=0)
    torch.testing.assert_close(model.reconstruct(x), model.decode(codes).view_as(x), rtol=1e-12, atol=1e-12)
    assert model.encode(x.float()).dtype == torch.float32 and model.reconstruct(x.float()).dtype == torch.float32


def test_linear_gaussian_parameter_counts():
    p, k = 6, 2
    assert PPCA(DEQ, k).num_parameters() == p * k + 1 - k * (k - 1) // 2 + p  # W up to rotation, sigma^2, mu
    assert FactorAnalysis(DEQ, k).num_parameters() == p * k - k * (k - 1) // 2 + 2 * p  # W, Psi, mu
