import math

import pytest
import torch

from genlab.data.spec import DataSpec
from genlab.metrics.likelihood import bits_per_dim, uniform_bits_per_dim


def test_uniform_density_on_dequantized_8bit_is_exactly_8_bits():
    spec = DataSpec((3, 32, 32), "dequantized", 256)
    # a uniform density on [0, 1]^D has log density 0
    assert bits_per_dim(torch.zeros(4), spec).tolist() == [8.0] * 4


def test_uniform_mass_on_levels_and_binary():
    spec = DataSpec((1, 28, 28), "levels", 256)
    nll = torch.tensor([spec.num_dims * math.log(256)])
    assert bits_per_dim(nll, spec).item() == pytest.approx(8.0, abs=1e-6)
    binary = DataSpec((1, 28, 28), "binary", 2)
    assert bits_per_dim(torch.tensor([784 * math.log(2)]), binary).item() == pytest.approx(1.0, abs=1e-6)


def test_hand_computed_cases():
    # 64 dims, 17 levels, a mass of 100 nats: 100 / (64 ln 2) bits/dim
    spec = DataSpec((1, 8, 8), "levels", 17)
    assert bits_per_dim(torch.tensor(100.0), spec).item() == pytest.approx(100 / (64 * math.log(2)), rel=1e-6)
    # dequantized: a density of -50 nats on 64 dims: (-50/64 + ln 17) / ln 2
    deq = DataSpec((1, 8, 8), "dequantized", 17)
    expected = (-50 / 64 + math.log(17)) / math.log(2)
    assert bits_per_dim(torch.tensor(-50.0), deq).item() == pytest.approx(expected, rel=1e-6)
    assert uniform_bits_per_dim(spec) == pytest.approx(math.log2(17))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(shape=(1, 8, 8), kind="nope", levels=2),
        dict(shape=(), kind="levels", levels=4),
        dict(shape=(1, 8, 8), kind="levels", levels=1),
        dict(shape=(1, 8, 8), kind="binary", levels=3),
    ],
)
def test_spec_rejects_impossible_descriptions(kwargs):
    with pytest.raises(ValueError):
        DataSpec(**kwargs)


def test_spec_round_trips_through_plain_dict():
    spec = DataSpec((1, 28, 28), "binary", 2, 10)
    assert DataSpec.coerce(spec.to_dict()) == spec
    assert isinstance(spec.to_dict()["shape"], list)
