"""The sampling test: FID/KID and their floors, the classifier numbers, the refusals, and the text measures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tests.unit.eval_fixtures import TinyData
from torch import nn

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.evaluation import evaluate, features, samples
from genlab.evaluation.context import Context
from genlab.evaluation.features import FeatureNet
from genlab.evaluation.samples import SampleSettings, class_stats, classifier_score, fid_kid, text_metrics
from genlab.models.classical.linear_ae import LinearAutoencoder
from genlab.models.vae import VAE

REPO = Path(__file__).resolve().parents[2]
SPEC = DataSpec((1, 8, 8), "levels", 5, 3)


def eval_cfg(tmp_path: Path, samples_overrides=None, features_overrides=None, **top) -> dict:
    cfg = OmegaConf.load(REPO / "conf" / "evaluation" / "default.yaml")
    cfg.features.cache_dir = str(tmp_path / "cache")
    cfg.features.epochs = 2
    cfg.features.width = 4  # 8 features
    cfg.samples.kid_subset_size = 10
    cfg.samples.kid_subsets = 20
    cfg.tests = ["samples"]
    for k, v in (samples_overrides or {}).items():
        cfg.samples[k] = v
    for k, v in (features_overrides or {}).items():
        cfg.features[k] = v
    for k, v in top.items():
        cfg[k] = v
    return OmegaConf.to_container(cfg, resolve=True)


def vae(spec=SPEC):
    torch.manual_seed(0)
    return VAE(data_spec=spec, latent_dim=2)


def make_ctx(tmp_path, model=None, data=None, **kw) -> Context:
    model = vae() if model is None else model
    return Context(model, data or TinyData(), eval_cfg(tmp_path, **kw), tmp_path / "run", device="cpu")


SETTINGS = SampleSettings(num_samples=1000, kid_subset_size=10, kid_subsets=20, text_chars=100, copy_length=5)


class Flat(nn.Module):
    """Identity features of ``(B, D, 1, 1)`` 'images'."""

    def __init__(self, d):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x.flatten(1)


# --- FID and KID --------------------------------------------------------------------------------
def test_fid_of_a_set_against_itself_is_zero(tmp_path):
    ctx = make_ctx(tmp_path)
    torch.manual_seed(0)
    net = FeatureNet((1, 8, 8), 3, width=4).eval()
    x = torch.randint(0, 5, (200, 1, 8, 8)).float() / 4
    fid, kid, _ = fid_kid(net, x, x, SETTINGS, ctx, salt=0)
    assert abs(fid) < 1e-3  # float32 features, float64 statistics (the trace of each covariance is ~0.1)
    assert abs(kid) < 0.05


def test_real_floor_shrinks_as_n_grows(tmp_path):
    ctx = make_ctx(tmp_path)
    g = torch.Generator().manual_seed(0)

    def floor(n):
        values = []
        for _ in range(5):
            a, b = torch.randn(2, n, 4, 1, 1, generator=g)
            values.append(fid_kid(Flat(4), a, b, SETTINGS, ctx, salt=0)[0])
        return sum(values) / len(values)

    f50, f400, f3200 = floor(50), floor(400), floor(3200)
    assert f50 > f400 > f3200 > 0
    assert f3200 < 0.02  # the FID between two samples of N(0, I_4) has bias ~ 2 * 4 / N


def test_kid_is_seeded(tmp_path):
    ctx = make_ctx(tmp_path)
    a, b = torch.randn(2, 100, 4, 1, 1, generator=torch.Generator().manual_seed(1))
    assert fid_kid(Flat(4), a, b, SETTINGS, ctx, 5) == fid_kid(Flat(4), a, b, SETTINGS, ctx, 5)


# --- the classifier numbers ---------------------------------------------------------------------
def test_classifier_score_is_independent_of_the_order():
    g = torch.Generator().manual_seed(0)
    probs = torch.distributions.Dirichlet(torch.full((10,), 0.3)).sample((500,))
    probs = probs[torch.randperm(500, generator=g)]
    perm = torch.randperm(500, generator=g)
    assert classifier_score(probs) == classifier_score(probs[perm])
    assert class_stats(probs) == class_stats(probs[perm])


def test_classifier_score_exact_values():
    k = 4
    one_hot = torch.eye(k).repeat(5, 1)  # confident and balanced: exp(log K) = K
    assert classifier_score(one_hot) == pytest.approx(k, rel=1e-12)
    same = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).repeat(7, 1)  # no information: 1
    assert classifier_score(same) == pytest.approx(1.0, rel=1e-12)
    hist, bits = class_stats(torch.eye(k)[[0, 0, 1, 3]])
    assert hist == [2, 1, 0, 1] and bits == pytest.approx(1.5, rel=1e-12)


def test_classifier_numbers_of_shuffled_samples_are_equal(tmp_path):
    ctx = make_ctx(tmp_path)
    net, _ = features.feature_network(ctx)
    x = ctx.split("test")[0]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(3))
    a = samples._classifier_numbers(ctx, net, x, "")
    b = samples._classifier_numbers(ctx, net, x[perm], "")
    assert a["class_histogram"] == b["class_histogram"]
    assert a["classifier_score"] == pytest.approx(b["classifier_score"], rel=1e-12, abs=0)


# --- refusals before the network ----------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the feature network was used")

    monkeypatch.setattr(features, "train_feature_net", fail)
    monkeypatch.setattr(samples, "feature_network", fail)
    monkeypatch.setattr(FeatureNet, "forward", fail)


def test_kid_subset_larger_than_n_is_refused_before_the_network(tmp_path, no_network):
    # N = min(num_samples, test 60, val 40) = 40
    cfg = eval_cfg(tmp_path, samples_overrides={"kid_subset_size": 50})
    with pytest.raises(ConfigError, match=r"evaluation.samples.kid_subset_size=50 exceeds N=40; lower it or raise "
                                          r"evaluation.samples.num_samples") as e:  # fmt: skip
        evaluate(vae(), TinyData(), cfg, tmp_path / "run")
    assert "\n" not in str(e.value)


def test_n_below_the_feature_dimension_is_refused_before_the_network(tmp_path, no_network):
    cfg = eval_cfg(tmp_path, features_overrides={"width": 32})  # 64 features > N = 40
    with pytest.raises(ConfigError, match="evaluation.samples.num_samples") as e:
        evaluate(vae(), TinyData(), cfg, tmp_path / "run")
    assert "evaluation.features.width=32" in str(e.value) and "N=40" in str(e.value) and "64" in str(e.value)
    cfg = eval_cfg(tmp_path, samples_overrides={"num_samples": 8, "kid_subset_size": 4})  # N = 8 = 8 features
    with pytest.raises(ConfigError, match="singular"):
        evaluate(vae(), TinyData(), cfg, tmp_path / "run")


def test_bad_sample_settings_name_the_key(tmp_path, no_network):
    with pytest.raises(ConfigError, match="evaluation.samples.kid_subsets"):
        evaluate(vae(), TinyData(), eval_cfg(tmp_path, samples_overrides={"kid_subsets": 0}), tmp_path / "run")


# --- applicability ------------------------------------------------------------------------------
def test_not_applicable_reasons(tmp_path):
    assert samples.not_applicable(make_ctx(tmp_path)) is None
    unlabelled = DataSpec((1, 8, 8), "levels", 5, None)
    ctx = make_ctx(tmp_path, model=vae(unlabelled))
    assert samples.not_applicable(ctx) == "unlabelled data: the feature network is a classifier"
    samples.check(ctx)  # n/a: nothing to refuse
    ctx = make_ctx(tmp_path, model=LinearAutoencoder(SPEC, latent_dim=2))
    assert "does not sample" in samples.not_applicable(ctx)


# --- the whole test -----------------------------------------------------------------------------
def test_run_reports_every_key_and_repeats(tmp_path):
    model = vae()
    keys_before = set(model.state_dict())
    ctx = make_ctx(tmp_path, model=model, figures=True)
    out = samples.run(ctx)
    m = out.metrics
    assert m["fid_num_samples"] == 40
    assert m["fid_real_floor_sets"].startswith("test vs val: 40")
    for suffix in ("", "_decoder_mean"):
        for k in ("fid", "kid"):
            assert math.isfinite(m[f"{k}{suffix}"])
        assert m[f"kid_std{suffix}"] >= 0
        assert sum(m[f"class_histogram{suffix}"]) == 40 and len(m[f"class_histogram{suffix}"]) == 3
        assert 1.0 <= m[f"classifier_score{suffix}"] <= 3.0 + 1e-9
        assert 0.0 <= m[f"class_entropy_bits{suffix}"] <= math.log2(3) + 1e-9
    assert m["fid_real_floor"] >= 0 and math.isfinite(m["kid_real_floor"])
    assert 0 <= m["feature_net_test_accuracy"] <= 1 and m["feature_net_cached"] is False
    assert set(out.figures) == {"samples_draw", "samples_decoder_mean"}
    assert all(p.is_file() and p.parent == tmp_path / "run" / "evaluation" for p in out.figures.values())
    assert set(model.state_dict()) == keys_before  # the feature network is never attached to the model
    again = samples.run(make_ctx(tmp_path, model=model)).metrics
    assert again["feature_net_cached"] is True
    for k, v in m.items():
        if k not in ("feature_net_cached", "feature_net_seconds"):
            assert again[k] == v, k


def test_without_a_val_split_the_floor_uses_two_halves_of_the_test_split(tmp_path):
    ctx = make_ctx(tmp_path, data=TinyData(sizes=(90, 0, 60)))
    a, b, how = samples.real_sets(ctx, 30)
    assert a.shape == b.shape == (30, 1, 8, 8) and "two disjoint random halves of test" in how
    x = ctx.split("test")[0]
    flat = x.flatten(1)
    ia = {int((flat == r).all(1).nonzero()[0]) for r in a.flatten(1)}
    ib = {int((flat == r).all(1).nonzero()[0]) for r in b.flatten(1)}
    assert len(ia | ib) == 60 or not (ia & ib)  # disjoint rows (duplicates in the data aside)
    assert samples.real_plan(ctx, 1000)[0] == 30


# --- text ---------------------------------------------------------------------------------------
def test_text_metrics_exact():
    train = "the cat sat on the mat"
    m = text_metrics(["the dog sat", "cat2mat"], train, copy_length=3)
    # words: the, dog, sat | cat, mat -> 4 of 5 in the training words
    assert m["valid_word_rate"] == pytest.approx(4 / 5)
    # 3-grams: "the","he ","e d"," do","dog","og ","g s"," sa","sat" | "cat","at2","t2m","2ma","mat"
    # in the training text: the, he , sa, sat, cat, mat -> 6 of 14
    assert m["copy_rate"] == pytest.approx(6 / 14)
    assert m["text_num_chars"] == 18 and m["text_num_words"] == 5


def test_text_metrics_edge_cases():
    m = text_metrics(["12 34"], "abc def", copy_length=10)
    assert math.isnan(m["valid_word_rate"]) and math.isnan(m["copy_rate"])
    assert text_metrics(["ABC"], "xx abc", 3)["valid_word_rate"] == 1.0  # lower-cased
    assert text_metrics(["ABC"], "xx abc", 3)["copy_rate"] == 0.0  # copies are case-sensitive


def test_text_run_with_a_tiny_gpt(tmp_path):
    from genlab.data.text import TextDataModule
    from genlab.models.gpt import GPT

    path = tmp_path / "tiny.txt"
    path.write_text("to be or not to be, that is the question.\n" * 40, encoding="utf-8")
    dm = TextDataModule(path=str(path), block_size=16, batch_size=4, splits=(0.8, 0.1, 0.1))
    torch.manual_seed(0)
    model = GPT(dm.spec, n_layer=1, n_head=1, n_embd=16)
    ctx = Context(model, dm, eval_cfg(tmp_path, samples_overrides={"text_chars": 300, "copy_length": 8}),
                  tmp_path / "run", device="cpu")  # fmt: skip
    assert samples.not_applicable(ctx) is None
    samples.check(ctx)
    m = samples.run(ctx).metrics
    assert m["text_num_chars"] == 300
    assert 0.0 <= m["valid_word_rate"] <= 1.0 and 0.0 <= m["copy_rate"] <= 1.0
    assert samples.run(ctx).metrics == m  # seeded
