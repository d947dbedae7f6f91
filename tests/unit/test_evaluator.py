"""The evaluator's entry: settings refused before work, the model left as it was, statuses for every test."""

import pytest
import torch
from tests.unit.eval_fixtures import Stub, TinyData, evaluation_cfg

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.evaluation import TESTS, check_tests, evaluate, preflight
from genlab.models.vae import VAE

SPEC = DataSpec((1, 8, 8), "levels", 5, 3)
#: sizes that fit TinyData (40 images per set): 8 features, KID subsets of 10, 5 labels per class
SMALL = {"features.epochs": 1, "features.width": 4, "samples.kid_subset_size": 10, "samples.kid_subsets": 5,
         "representation.labels_per_class": [5]}  # fmt: skip


def vae():
    torch.manual_seed(0)
    return VAE(SPEC, latent_dim=2, iwae_k=2)


def test_preflight_checks_settings_and_leaves_the_model_in_training_mode(tmp_path):
    model = vae()
    assert model.training
    preflight(model, TinyData(), evaluation_cfg(tmp_path, "full", **SMALL), tmp_path)
    assert model.training and all(m.training for m in model.modules())  # Lightning would train it as it finds it
    bad = evaluation_cfg(tmp_path, "default", **{**SMALL, "samples.kid_subset_size": 100})
    with pytest.raises(ConfigError, match="evaluation.samples.kid_subset_size"):
        preflight(model, TinyData(), bad, tmp_path)


def test_unknown_tests_are_refused_and_known_ones_run_in_one_order():
    assert check_tests(["ood", "density"]) == ["density", "ood"]
    with pytest.raises(ConfigError, match=r"unknown evaluation test\(s\) \['typo'\]"):
        check_tests(["density", "typo"])


def test_every_test_reports_a_status_and_the_global_random_state_is_untouched(tmp_path):
    cfg = evaluation_cfg(tmp_path, "full", **SMALL)
    model, data = vae(), TinyData()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    metrics, figures = evaluate(model, data, cfg, tmp_path)
    assert torch.equal(torch.get_rng_state(), before)
    status = {t: metrics[f"eval/{t}"] for t in TESTS}
    assert status["classifier"].startswith("n/a: ") and status["ood"] == status["samples"] == "ok", status
    assert figures and all(p.suffix == ".png" and p.is_file() for p in figures.values())
    assert evaluate(vae(), TinyData(), evaluation_cfg(tmp_path, "none"), tmp_path) == ({}, {})


class RecordingConditional(Stub):
    """A conditional model whose code is the image's mean; ``decode`` records the labels it is given."""

    capabilities = frozenset({"encode", "decode", "conditional"})
    latent_dim = 1

    def __init__(self, spec):
        super().__init__(spec)
        self.num_classes, self.conditions = spec.num_classes, []

    def encode(self, x):
        return x.flatten(1).mean(1, keepdim=True)

    def decode(self, z, condition=None):
        self.conditions.append(None if condition is None else condition.tolist())
        return z.view(-1, 1, 1, 1).expand(-1, *self.spec.shape).clamp(0, 1)


def test_figures_of_a_conditional_model_decode_each_row_with_one_class(tmp_path):
    model = RecordingConditional(SPEC)
    cfg = evaluation_cfg(tmp_path, "full", tests=["representation"], **SMALL)
    metrics, figures = evaluate(model, TinyData(), cfg, tmp_path)
    assert {"interpolations", "traversals"} <= set(figures)
    assert model.conditions and all(c is not None and len(set(c)) == 1 for c in model.conditions)
