"""The representation test: linear probes, clustering and figures, through the protocol only."""

import time

import pytest
import torch
from tests.unit.eval_fixtures import Stub, Tensors, evaluation_cfg, is_png

from genlab.data.digits import DigitsDataModule
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.evaluation import evaluate, representation
from genlab.evaluation.context import Context
from genlab.models.classical import PCA

SPEC = DataSpec((1, 2, 2), "levels", 256, num_classes=3)


def separable(n_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of class ``c`` have pixel ``c`` at 1 and the other pixels below 0.2: linearly separable."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = 0.2 * torch.rand(len(y), 4, generator=g)
    x[torch.arange(len(y)), y] = 1.0
    return x.view(-1, *SPEC.shape), y


class Identity(Stub):
    """Its code is the image itself (flattened)."""

    capabilities = frozenset({"encode"})

    def encode(self, x):
        return x.flatten(1)


class IdentityWithClusters(Identity):
    """The same code, and its own clusters: the brightest of the first three pixels."""

    capabilities = frozenset({"encode", "assign"})

    def assign(self, x):
        return x.flatten(1)[:, :3].argmax(1)


class DensityOnly(Stub):
    capabilities = frozenset({"log_prob"})

    def log_prob(self, x):
        return -x.flatten(1).pow(2).sum(1)


def synthetic():
    return Tensors(train=separable(20, 0), val=separable(5, 1), test=separable(10, 2))


def test_probe_and_clusters_on_separable_codes_are_perfect(tmp_path):
    cfg = evaluation_cfg(tmp_path, figures=False, **{"representation.labels_per_class": [2, 5]})
    ctx = Context(IdentityWithClusters(SPEC), synthetic(), cfg, tmp_path)
    representation.check(ctx)
    assert representation.not_applicable(ctx) is None
    out = representation.run(ctx)
    m = out.metrics
    assert m["probe_accuracy"] == 1.0
    assert m["probe_accuracy_2"] == m["probe_accuracy_5"] == 1.0
    assert m["probe_accuracy_2_std"] == m["probe_accuracy_5_std"] == 0.0
    assert m["probe_seeds"] == 3 and m["probe_num_train"] == 60 and m["probe_num_test"] == 30
    assert m["representation_split"] == "test" and m["code_dim"] == 4
    assert (m["ari"], m["nmi"], m["clusters_from"]) == (1.0, 1.0, "assign")
    columns, rows = out.tables["probe_per_class"]
    assert columns == ["class", "accuracy", "count"] and rows == [[0, 1.0, 10], [1, 1.0, 10], [2, 1.0, 10]]
    assert out.figures == {}


def test_kmeans_on_the_codes_without_assign(tmp_path):
    cfg = evaluation_cfg(tmp_path, figures=False, **{"representation.labels_per_class": []})
    m = representation.run(Context(Identity(SPEC), synthetic(), cfg, tmp_path)).metrics
    assert (m["ari"], m["nmi"], m["clusters_from"]) == (1.0, 1.0, "kmeans on codes")


def test_few_label_probes_differ_by_seed_and_repeat():
    import numpy as np

    y = np.repeat(np.arange(3), 20)
    a = representation.few_label_indices(y, 4, np.random.default_rng(0))
    b = representation.few_label_indices(y, 4, np.random.default_rng(1))
    assert len(a) == 12 and np.bincount(y[a]).tolist() == [4, 4, 4]
    assert np.array_equal(a, representation.few_label_indices(y, 4, np.random.default_rng(0)))
    assert not np.array_equal(a, b)


def test_not_applicable_reasons(tmp_path):
    cfg = evaluation_cfg(tmp_path)
    no_code = Context(DensityOnly(SPEC), synthetic(), cfg, tmp_path)
    assert "does not declare encode" in representation.not_applicable(no_code)
    unlabelled = DataSpec((1, 2, 2), "levels", 256)
    no_labels = Context(Identity(unlabelled), synthetic(), cfg, tmp_path)
    assert "no class labels" in representation.not_applicable(no_labels)


def test_impossible_settings_are_refused(tmp_path):
    cfg = evaluation_cfg(tmp_path, **{"representation.labels_per_class": [21]})
    with pytest.raises(ConfigError, match="class 0 has only 20 in the training split; choose at most 20"):
        representation.check(Context(Identity(SPEC), synthetic(), cfg, tmp_path))
    for key, value in (("representation.seeds", 0), ("representation.labels_per_class", [0]),
                       ("representation.interpolation_steps", 1)):  # fmt: skip
        with pytest.raises(ConfigError, match=key.split(".")[1]):
            cfg = evaluation_cfg(tmp_path, **{key: value})
            representation.check(Context(Identity(SPEC), synthetic(), cfg, tmp_path))


def test_pca_on_digits_gives_a_probe_and_every_figure(tmp_path):
    dm = DigitsDataModule()
    model = PCA(dm.spec, 8).fit_tensor(dm.split_tensors("train")[0])
    ctx = Context(model, dm, evaluation_cfg(tmp_path), tmp_path)  # full: labels 10 and 100, clustering, figures
    representation.check(ctx)
    start = time.perf_counter()
    out = representation.run(ctx)
    seconds = time.perf_counter() - start
    m = out.metrics
    assert 0.85 < m["probe_accuracy"] <= 1.0  # 8 principal components of the digits carry the classes
    assert m["probe_accuracy_10"] < m["probe_accuracy_100"] <= m["probe_accuracy"] + 0.02
    assert m["clusters_from"] == "kmeans on codes" and 0.3 < m["ari"] <= 1.0 and 0.4 < m["nmi"] <= 1.0
    assert set(out.figures) == {"codes_2d", "interpolations", "traversals", "components"}
    assert all(is_png(p) and p.parent == tmp_path / "evaluation" for p in out.figures.values())
    assert seconds < 30


def test_evaluate_reports_the_test_and_its_table(tmp_path):
    dm = DigitsDataModule()
    model = PCA(dm.spec, 4).fit_tensor(dm.split_tensors("train")[0])
    cfg = evaluation_cfg(tmp_path, figures=False, tests=["representation", "prototypes", "classifier", "ood"],
                         **{"representation.labels_per_class": [], "representation.clustering": False})  # fmt: skip
    metrics, figures = evaluate(model, dm, cfg, tmp_path)
    assert metrics["eval/representation"] == "ok" and 0 < metrics["eval/probe_accuracy"] <= 1
    assert metrics["eval/prototypes"].startswith("n/a: no likelihood")
    assert metrics["eval/ood"].startswith("n/a: no likelihood")
    assert metrics["eval/classifier"] == "n/a: the model is not class-conditional (train with model.conditional=true)"
    assert figures == {}
    lines = (tmp_path / "evaluation" / "probe_per_class.csv").read_text().splitlines()
    assert lines[0] == "class,accuracy,count" and len(lines) == 11
