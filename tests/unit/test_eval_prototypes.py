"""The prototypes test: most and least likely held-out images per class, and the per-class log_prob table."""

import math

import pytest
import torch
from tests.unit.eval_fixtures import Stub, Tensors, evaluation_cfg, is_png

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.evaluation import prototypes
from genlab.evaluation.context import Context

SPEC = DataSpec((1, 3, 3), "levels", 256, num_classes=3)


class Darkness(Stub):
    """``log p(x) = -10 * sum(x)`` nats: the darker an image, the more likely."""

    capabilities = frozenset({"log_prob"})

    def log_prob(self, x):
        return -10 * x.flatten(1).sum(1)


class Coder(Stub):
    capabilities = frozenset({"encode"})

    def encode(self, x):
        return x.flatten(1)


def data():
    """Constant images: example ``i`` has brightness ``b_i``; class 0 has 5 images, class 1 has 3, class 2 none."""
    b = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4])
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    x = b.view(-1, 1, 1, 1).expand(-1, *SPEC.shape).contiguous()
    return Tensors(test=(x, y)), b, y


def test_ranks_and_table_are_exact(tmp_path):
    dm, b, y = data()
    ctx = Context(Darkness(SPEC), dm, evaluation_cfg(tmp_path, figures=False, **{"prototypes.k": 2}), tmp_path)
    prototypes.check(ctx)
    assert prototypes.not_applicable(ctx) is None
    lp = ctx.log_probs("test")
    most, least = prototypes.ranked(lp, y, 0, 2)
    assert most.tolist() == [1, 3] and least.tolist() == [4, 2]  # brightness 0.1, 0.3 ... 0.7, 0.9
    most, least = prototypes.ranked(lp, y, 1, 5)
    assert most.tolist() == [5, 7, 6] and least.tolist() == [5, 7, 6]  # fewer than k: all, in order
    out = prototypes.run(ctx)
    assert out.metrics == {"prototypes_k": 2, "prototypes_split": "test"} and out.figures == {}
    columns, rows = out.tables["log_prob_per_class"]
    assert columns == ["class", "count", "mean_log_prob_nats", "min_log_prob_nats", "max_log_prob_nats"]
    expected0 = -90 * b[:5]  # nine pixels of brightness b
    assert rows[0][:2] == [0, 5] and rows[1][:2] == [1, 3]
    assert rows[0][2:] == pytest.approx([float(expected0.mean()), float(expected0.min()), float(expected0.max())])
    assert rows[2][:2] == [2, 0] and all(math.isnan(v) for v in rows[2][2:])


def test_nan_ranks_least_likely():
    lp = torch.tensor([-1.0, float("nan"), -3.0])
    most, least = prototypes.ranked(lp, torch.zeros(3, dtype=torch.long), 0, 1)
    assert most.tolist() == [0] and least.tolist() == [1]


def test_figure_only_with_figures(tmp_path):
    dm, _, _ = data()
    ctx = Context(Darkness(SPEC), dm, evaluation_cfg(tmp_path, **{"prototypes.k": 4}), tmp_path)
    out = prototypes.run(ctx)
    assert set(out.figures) == {"prototypes"} and is_png(out.figures["prototypes"])
    from PIL import Image

    # 3 rows of 2k + 1 = 9 tiles of 3 px with 2 px padding: 47 x 17 px, enlarged 16-fold to a short side >= 256
    width, height = Image.open(out.figures["prototypes"]).size
    assert (width, height) == (16 * (2 + 9 * (3 + 2)), 16 * (2 + 3 * (3 + 2)))


def test_not_applicable_and_refusal(tmp_path):
    dm, _, _ = data()
    cfg = evaluation_cfg(tmp_path)
    assert "does not declare log_prob" in prototypes.not_applicable(Context(Coder(SPEC), dm, cfg, tmp_path))
    flat = DataSpec((9,), "levels", 256, num_classes=3)
    assert "not images" in prototypes.not_applicable(Context(Darkness(flat), dm, cfg, tmp_path))
    unlabelled = DataSpec((1, 3, 3), "levels", 256)
    assert "no class labels" in prototypes.not_applicable(Context(Darkness(unlabelled), dm, cfg, tmp_path))
    with pytest.raises(ConfigError, match="prototypes.k must be a positive integer"):
        prototypes.check(Context(Darkness(SPEC), dm, evaluation_cfg(tmp_path, **{"prototypes.k": 0}), tmp_path))
