"""The out-of-distribution test: AUROC of log_prob against transforms and another data set, and its refusals."""

import pytest
import torch
from tests.unit.eval_fixtures import Stub, Tensors, evaluation_cfg
from tests.unit.test_data import write_mnist_like

from genlab.data.digits import DigitsDataModule
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.evaluation import evaluate, ood
from genlab.evaluation.context import Context

MNIST_SPEC = DataSpec((1, 28, 28), "levels", 256, num_classes=10)


class Darkness(Stub):
    """``log p(x) = -10 * sum(k^2)`` nats over the pixel levels ``k = 255 x``: dark images are likely; scores of
    millions of nats, exact integers (so images with the same pixel values in any order tie exactly)."""

    capabilities = frozenset({"log_prob"})

    def log_prob(self, x):
        return -10 * (x.double() * 255).round().flatten(1).pow(2).sum(1)


class Coder(Stub):
    capabilities = frozenset({"encode"})

    def encode(self, x):
        return x.flatten(1)


def dark(n: int, spec: DataSpec, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images on the level grid with values at most 0.25, and labels."""
    g = torch.Generator().manual_seed(seed)
    top = spec.levels - 1
    x = torch.randint(0, top // 4 + 1, (n, *spec.shape), generator=g).float() / top
    return x, torch.randint(0, spec.num_classes, (n,), generator=g)


def test_auroc_is_one_when_separated_and_half_for_a_copy():
    inside = torch.tensor([-5000.0, -5001.0, -5002.0])  # a sigmoid would tie all of these at 0
    outside = torch.tensor([-6000.0, -7000.0])
    assert ood.auroc(inside, outside) == 1.0
    assert ood.auroc(outside, inside) == 0.0  # reported as it comes out
    assert ood.auroc(inside, inside.clone()) == 0.5
    assert ood.auroc(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        ood.auroc(inside, inside[:0])


def test_transforms_stay_in_the_value_space_and_repeat():
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    levels = DataSpec((1, 4, 4), "levels", 17)
    x = torch.randint(0, 17, (6, 1, 4, 4)).float() / 16
    inv = ood.transform("inverted", x, levels, g())
    assert torch.equal(inv * 16, 16 - x * 16) and torch.equal(ood.transform("inverted", inv, levels, g()), x)
    noise = ood.transform("uniform_noise", x, levels, g())
    assert torch.equal(noise * 16, (noise * 16).round()) and noise.min() >= 0 and noise.max() <= 1
    assert torch.equal(ood.transform("vflip", x, levels, g()), x.flip(2))
    shuffled = ood.transform("pixel_shuffle", x, levels, g())
    assert torch.equal(shuffled.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert not torch.equal(shuffled, x) and torch.equal(shuffled, ood.transform("pixel_shuffle", x, levels, g()))

    deq = DataSpec((1, 4, 4), "dequantized", 17)
    xd = (x * 16 + torch.rand(x.shape)) / 17
    invd = ood.transform("inverted", xd, deq, g())
    assert invd.min() >= 0 and invd.max() < 1
    assert torch.equal(torch.floor(invd * 17), 16 - torch.floor(xd * 17))  # the level inverted, the noise kept
    noise = ood.transform("uniform_noise", xd, deq, g())
    assert noise.min() >= 0 and noise.max() < 1

    binary = DataSpec((1, 4, 4), "binary", 2)
    xb = (x > 0.5).float()
    assert torch.equal(ood.transform("inverted", xb, binary, g()), 1 - xb)
    assert set(ood.transform("uniform_noise", xb, binary, g()).unique().tolist()) <= {0.0, 1.0}


def test_every_transform_of_dark_images_is_an_outlier(tmp_path):
    dm = Tensors(test=dark(50, MNIST_SPEC))
    ctx = Context(Darkness(MNIST_SPEC), dm, evaluation_cfg(tmp_path), tmp_path)  # full: all four transforms
    ood.check(ctx)
    assert ood.not_applicable(ctx) is None
    out = ood.run(ctx)
    m = out.metrics
    assert m["ood_auroc_inverted"] == m["ood_auroc_uniform_noise"] == 1.0
    assert m["ood_auroc_vflip"] == m["ood_auroc_pixel_shuffle"] == 0.5  # same pixel values, same density
    columns, rows = out.tables["ood_log_prob"]
    assert columns == ["set", "count", "mean_log_prob_nats", "auroc"]
    assert [r[0] for r in rows] == ["test", "inverted", "vflip", "pixel_shuffle", "uniform_noise"]


def test_another_data_set_in_the_real_format(tmp_path):
    write_mnist_like(tmp_path, "FashionMNIST", n_train=20, n_test=30)  # uniform random levels: bright noise
    dm = Tensors(test=dark(40, MNIST_SPEC))
    cfg = evaluation_cfg(tmp_path, data_dir=str(tmp_path), **{"ood.transforms": [], "ood.data": "fashion_mnist"})
    ctx = Context(Darkness(MNIST_SPEC), dm, cfg, tmp_path)
    ood.check(ctx)
    out = ood.run(ctx)
    assert out.metrics == {"ood_split": "test", "ood_num_examples": 40, "ood_auroc_fashion_mnist": 1.0,
                           "ood_num_fashion_mnist": 30}  # fmt: skip
    assert out.tables["ood_log_prob"][1][1][:2] == ["fashion_mnist", 30]
    # ood.data_dir wins over the run's data folder
    cfg = evaluation_cfg(tmp_path, data_dir="/nowhere", **{"ood.data": "fashion_mnist", "ood.data_dir": str(tmp_path)})
    assert ood.outlier_datamodule(Context(Darkness(MNIST_SPEC), dm, cfg, tmp_path), "fashion_mnist").data_dir == str(
        tmp_path
    )


def test_the_same_data_as_outliers_give_one_half(tmp_path):
    dm = DigitsDataModule()
    cfg = evaluation_cfg(tmp_path, tests=["ood"], **{"ood.transforms": ["inverted"], "ood.data": "digits"})
    metrics, _ = evaluate(Darkness(dm.spec), dm, cfg, tmp_path)
    assert metrics["eval/ood"] == "ok" and metrics["eval/ood_auroc_digits"] == 0.5
    assert metrics["eval/ood_auroc_inverted"] > 0.9  # digits are mostly dark


def test_refusals_name_the_choices(tmp_path):
    dm = Tensors(test=dark(4, MNIST_SPEC))

    def ctx(**overrides):
        cfg = evaluation_cfg(tmp_path, data_dir=str(tmp_path), **overrides)
        return Context(Darkness(MNIST_SPEC), dm, cfg, tmp_path)

    with pytest.raises(ConfigError, match=r"unknown evaluation.ood.transforms \['blur'\]; choose from \['inverted'"):
        ood.check(ctx(**{"ood.transforms": ["inverted", "blur"]}))
    with pytest.raises(ConfigError, match=r"unknown evaluation.ood.data='nope'; choose one of \[.*'fashion_mnist'"):
        ood.check(ctx(**{"ood.data": "nope"}))
    message = (
        "evaluation.ood.data=cifar10 has shape (3, 32, 32); the model's data have (1, 28, 28): "
        "choose a data set of the same shape"
    )
    with pytest.raises(ConfigError) as e:
        ood.check(ctx(**{"ood.data": "cifar10"}))
    assert str(e.value) == message
    with pytest.raises(ConfigError, match="ood.data=cifar10 has shape"):  # before any test runs
        evaluate(Darkness(MNIST_SPEC), dm, evaluation_cfg(tmp_path, tests=["ood"], **{"ood.data": "cifar10"}), tmp_path)
    with pytest.raises(ConfigError, match=r"ood.data=shakespeare does not describe its shape .* \(1, 28, 28\)"):
        ood.check(ctx(**{"ood.data": "shakespeare"}))  # text: no file here, and no download tried
    with pytest.raises(ConfigError, match="needs a data folder"):
        ood.check(Context(Darkness(MNIST_SPEC), dm, evaluation_cfg(tmp_path, **{"ood.data": "mnist"}), tmp_path))


def test_not_applicable_reasons(tmp_path):
    dm = Tensors(test=dark(4, MNIST_SPEC))
    cfg = evaluation_cfg(tmp_path)
    assert "does not declare log_prob" in ood.not_applicable(Context(Coder(MNIST_SPEC), dm, cfg, tmp_path))
    flat = DataSpec((784,), "levels", 256, num_classes=10)
    assert "not images" in ood.not_applicable(Context(Darkness(flat), dm, cfg, tmp_path))
    none = evaluation_cfg(tmp_path, **{"ood.transforms": []})
    assert "no outlier set" in ood.not_applicable(Context(Darkness(MNIST_SPEC), dm, none, tmp_path))
