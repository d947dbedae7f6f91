"""What every autoregressive image model must satisfy: exact units, sampler parity, shapes, refusals."""

import math

import pytest
import torch
from torch import distributions as D

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.metrics.likelihood import bits_per_dim
from genlab.models.image_gpt import ImageGPT
from genlab.models.pixelcnn import PixelCNN
from genlab.models.pixelrnn import PixelRNN

SMALL = {
    PixelCNN: {"hidden_channels": 6, "num_layers": 2, "head_channels": 6},
    PixelRNN: {"hidden_channels": 6, "num_layers": 1, "input_kernel_size": 3, "head_channels": 6},
    ImageGPT: {"n_layer": 1, "n_head": 2, "n_embd": 16},
}
MODELS = list(SMALL)


def small(cls, spec: DataSpec, **kw):
    torch.manual_seed(0)
    return cls(spec.to_dict(), **{**SMALL[cls], **kw})


def output_layer(model) -> torch.nn.Module:
    """The last layer before the logits (the transformer's head is tied to its token embedding)."""
    return model.net.head if isinstance(model, ImageGPT) else model.head.out


def on_grid(spec: DataSpec, n: int) -> torch.Tensor:
    return torch.randint(0, spec.levels, (n, *spec.shape)).float() / (spec.levels - 1)


def sharpen(model, scale: float = 0.4) -> None:
    """Random weights large enough that every conditional distribution is far from uniform."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize(
    "spec, bits",
    [
        (DataSpec((3, 32, 32), "levels", 256), 8.0),
        (DataSpec((1, 28, 28), "binary", 2), 1.0),
        (DataSpec((1, 8, 8), "levels", 17, 10), math.log2(17)),
    ],
)
def test_equal_logits_give_exactly_log2_levels_bits_per_dim_and_shapes(cls, spec, bits):
    model = small(cls, spec)
    x = on_grid(spec, 3)
    logits = model.logits(x)
    assert logits.shape == (3, model.num_outputs, *spec.shape)
    with torch.no_grad():
        for p in output_layer(model).parameters():
            p.zero_()
    nll = -model.log_prob(x)
    assert nll.shape == (3,)
    assert bits_per_dim(nll, spec).tolist() == pytest.approx([bits] * 3, rel=1e-6)
    terms, counts = model.score(x, torch.zeros(3, dtype=torch.long), "val")
    assert counts is None
    assert torch.equal(terms["nll_nats"], nll) and torch.equal(terms["loss"], nll)


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_sample_shapes_and_values_on_the_grid(cls, shape):
    spec = DataSpec(shape, "levels", 256)
    model = small(cls, spec)
    torch.manual_seed(0)
    x = model.sample(2)
    assert x.shape == (2, *shape) and x.dtype == torch.float32
    k = x * 255
    assert torch.equal(k, k.round()) and x.min() >= 0 and x.max() <= 1


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize(
    "spec, conditional, kw",
    [
        (DataSpec((3, 4, 4), "levels", 256), False, {}),
        (DataSpec((1, 5, 6), "levels", 17, 10), True, {"kernel_size": 5}),
        (DataSpec((1, 5, 5), "binary", 2, 10), True, {}),
    ],
)
def test_cached_and_naive_samplers_agree_exactly(cls, spec, conditional, kw):
    if cls is not PixelCNN and "kernel_size" in kw:
        kw = {"input_kernel_size": 5} if cls is PixelRNN else {}
    model = small(cls, spec, conditional=conditional, **kw)
    sharpen(model)
    labels = torch.tensor([0, 3, 3, 9]) if conditional and spec.kind == "levels" else None
    draws = {}
    for method in ("naive", "fast"):
        for seed in (0, 1):
            torch.manual_seed(seed)
            draws[method, seed] = model.sample(4, condition=labels, method=method)
    assert torch.equal(draws["fast", 0], draws["naive", 0])
    assert torch.equal(draws["fast", 1], draws["naive", 1])
    assert not torch.equal(draws["fast", 0], draws["fast", 1])  # the comparison is not vacuous
    assert draws["fast", 0].unique().numel() > 1
    if labels is not None:  # the label changes the images drawn with the same noise
        torch.manual_seed(0)
        other = model.sample(4, condition=torch.tensor([1, 4, 4, 8]))
        assert not torch.equal(other, draws["fast", 0])


def test_log_mass_matches_torch_distributions():
    spec = DataSpec((3, 4, 4), "levels", 256)
    model = small(PixelCNN, spec)
    x = on_grid(spec, 2)
    logits = model.logits(x)
    ref = D.Categorical(logits=logits.movedim(1, -1)).log_prob(torch.round(x * 255).long()).flatten(1).sum(1)
    assert torch.allclose(model.log_prob(x), ref, atol=1e-3)
    binary = DataSpec((1, 4, 4), "binary", 2)
    model = small(PixelRNN, binary)
    x = on_grid(binary, 2)
    ref = D.Bernoulli(logits=model.logits(x)[:, 0]).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(model.log_prob(x), ref, atol=1e-5)


@pytest.mark.parametrize("cls", MODELS)
def test_conditional_log_prob_and_marginal(cls):
    spec = DataSpec((1, 4, 4), "levels", 17, 10)
    model = small(cls, spec, conditional=True)
    sharpen(model)
    x = on_grid(spec, 2)
    per_class = torch.stack([model.log_prob(x, torch.full((2,), y)) for y in range(10)])  # (10, 2)
    assert per_class.std(0).min() > 0.1  # the label matters
    expected = torch.logsumexp(per_class, 0) - math.log(10)
    assert torch.allclose(model.log_prob(x), expected, atol=1e-5)
    terms, _ = model.score(x, torch.tensor([2, 7]), "val")
    assert torch.allclose(-terms["cond_nll_nats"], torch.stack([per_class[2, 0], per_class[7, 1]]))
    assert "nll_nats" not in terms
    assert model.describe() == {"nll_kind": "exact", "conditional": True, "class_prior": "uniform"}


@pytest.mark.parametrize("cls", MODELS)
def test_refusals_are_config_errors(cls):
    with pytest.raises(ConfigError, match="data.representation=continuous"):
        cls(DataSpec((1, 8, 8), "dequantized", 256).to_dict())
    with pytest.raises(ConfigError, match="labelled"):
        cls(DataSpec((1, 8, 8), "levels", 256).to_dict(), conditional=True)
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        cls(DataSpec((64,), "levels", 256).to_dict())
    if cls is not ImageGPT:
        with pytest.raises(ConfigError, match="odd"):
            cls(DataSpec((1, 8, 8), "levels", 256).to_dict(), kernel_size=4)
        with pytest.raises(ConfigError, match="colour"):
            cls(DataSpec((3, 8, 8), "levels", 256).to_dict(), hidden_channels=2)
    spec = DataSpec((1, 3, 3), "levels", 17, 10)
    plain, cond = small(cls, spec), small(cls, spec, conditional=True)
    with pytest.raises(ConfigError, match="unconditional"):
        plain.sample(2, condition=torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="labels in"):
        cond.sample(2, condition=torch.tensor([0, 10]))
    with pytest.raises(ConfigError, match="method"):
        plain.sample(2, method="fastest")
    assert plain.capabilities == frozenset({"log_prob", "sample"}) and plain.nll_kind == "exact"
