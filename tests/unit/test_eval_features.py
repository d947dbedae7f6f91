"""The genlab-trained feature network: its interface for torchmetrics, its training, and its cache."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tests.unit.eval_fixtures import TinyData
from torchmetrics.image.fid import FrechetInceptionDistance

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.evaluation import features
from genlab.evaluation.context import Context
from genlab.evaluation.features import FeatureNet, cache_key, feature_network
from genlab.models.vae import VAE

REPO = Path(__file__).resolve().parents[2]
SPEC = DataSpec((1, 8, 8), "levels", 5, 3)


def eval_cfg(tmp_path: Path, **features_overrides) -> dict:
    cfg = OmegaConf.load(REPO / "conf" / "evaluation" / "default.yaml")
    cfg.features.cache_dir = str(tmp_path / "cache")
    cfg.features.epochs = 2
    for k, v in features_overrides.items():
        cfg.features[k] = v
    return OmegaConf.to_container(cfg, resolve=True)


def make_ctx(tmp_path: Path, data=None, spec=SPEC, **features_overrides) -> Context:
    torch.manual_seed(0)
    model = VAE(data_spec=spec, latent_dim=2)
    return Context(
        model,
        data or TinyData(sizes=(90, 30, 30)),
        eval_cfg(tmp_path, **features_overrides),
        tmp_path / "run",
        device="cpu",
    )


def cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").glob("*"))


# --- the network --------------------------------------------------------------------------------
def test_net_declares_num_features_so_torchmetrics_never_probes_it():
    net = FeatureNet((1, 8, 8), 10, width=4)
    assert net.num_features == 8
    x = torch.rand(5, 1, 8, 8)
    assert net(x).shape == (5, 8) and net.logits(x).shape == (5, 10)
    with pytest.raises(ValueError, match="float images"):
        net(torch.rand(1, 3, 299, 299))  # the probe torchmetrics would send without num_features
    fid = FrechetInceptionDistance(feature=net)  # builds: it read num_features
    fid.update(x, real=True)
    fid.update(torch.rand(5, 1, 8, 8), real=False)
    assert torch.isfinite(fid.compute())


def test_features_are_standardised_on_the_training_split(tmp_path):
    ctx = make_ctx(tmp_path)
    net, _ = feature_network(ctx)
    x = features.to_levels(ctx.split("train")[0], SPEC)
    f = net(x).double()
    assert f.mean(0).abs().max() < 1e-4
    assert abs(float(f.var(0, unbiased=False).mean()) - 1.0) < 1e-4


def test_digits_net_is_accurate_and_fast(tmp_path):
    from genlab.data.digits import DigitsDataModule

    dm = DigitsDataModule()
    cfg = eval_cfg(tmp_path, epochs=5)
    ctx = Context(VAE(data_spec=dm.spec, latent_dim=2), dm, cfg, tmp_path / "run", device="cpu")
    _, info = feature_network(ctx)
    assert info["feature_net_cached"] is False
    assert info["feature_net_test_accuracy"] > 0.9  # 0.955 at the default settings
    assert info["feature_net_seconds"] < 30  # about 0.5 s on one core


def test_unlabelled_data_are_refused(tmp_path):
    ctx = make_ctx(tmp_path, spec=DataSpec((1, 8, 8), "levels", 5, None))
    with pytest.raises(ConfigError, match="unlabelled data: the feature network is a classifier"):
        feature_network(ctx)


@pytest.mark.parametrize("key,value", [("width", 0), ("epochs", -1), ("lr", 0.0), ("batch_size", 1.5)])
def test_bad_settings_name_the_key(tmp_path, key, value):
    with pytest.raises(ConfigError, match=f"evaluation.features.{key}"):
        feature_network(make_ctx(tmp_path, **{key: value}))


# --- the cache ----------------------------------------------------------------------------------
def test_second_call_reuses_the_cache_without_training(tmp_path, monkeypatch):
    net1, info1 = feature_network(make_ctx(tmp_path))
    assert info1["feature_net_cached"] is False
    assert len(cache_files(tmp_path)) == 1

    def fail(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(features, "train_feature_net", fail)
    net2, info2 = feature_network(make_ctx(tmp_path))
    assert info2["feature_net_cached"] is True
    assert info2["feature_net_test_accuracy"] == info1["feature_net_test_accuracy"]
    for (k, a), (_, b) in zip(net1.state_dict().items(), net2.state_dict().items()):
        assert torch.equal(a, b), k
    ctx = make_ctx(tmp_path)
    assert feature_network(ctx)[0] is feature_network(ctx)[0]  # cached in the Context too


def test_other_data_or_settings_give_other_keys(tmp_path):
    feature_network(make_ctx(tmp_path))
    feature_network(make_ctx(tmp_path, data=TinyData(sizes=(90, 30, 30), seed=1)))  # other content, same spec
    feature_network(make_ctx(tmp_path, width=8))  # other setting
    assert len(cache_files(tmp_path)) == 3
    s = features.settings(eval_cfg(tmp_path)["features"])
    spec = SPEC.to_dict()
    keys = {
        cache_key(spec, "abc", "train", s),
        cache_key(spec, "abd", "train", s),
        cache_key(spec, "abc", "val", s),
        cache_key({**spec, "levels": 17}, "abc", "train", s),
        cache_key({**spec, "num_classes": 4}, "abc", "train", s),
        cache_key(spec, "abc", "train", features.FeatureSettings(**{**s.__dict__, "seed": 1})),
    }
    assert len(keys) == 6
    # the folder is not part of the key
    other = features.FeatureSettings(**{**s.__dict__, "cache_dir": "/elsewhere"})
    assert cache_key(spec, "abc", "train", s) == cache_key(spec, "abc", "train", other)


def test_corrupt_cache_file_is_retrained_with_one_warning(tmp_path):
    feature_network(make_ctx(tmp_path))
    (path,) = cache_files(tmp_path)
    path.write_bytes(b"not a checkpoint")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net, info = feature_network(make_ctx(tmp_path))
    relevant = [w for w in caught if "feature network cache" in str(w.message)]
    assert len(relevant) == 1 and "unreadable" in str(relevant[0].message)
    assert info["feature_net_cached"] is False
    payload = torch.load(path, weights_only=True)  # rewritten, valid
    assert set(payload["state_dict"]) == set(net.state_dict())
    assert feature_network(make_ctx(tmp_path))[1]["feature_net_cached"] is True


def test_file_with_another_key_is_not_used(tmp_path):
    feature_network(make_ctx(tmp_path))
    (path,) = cache_files(tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["key"] = "0" * 64
    torch.save(payload, path)
    with pytest.warns(RuntimeWarning, match="unreadable"):
        assert feature_network(make_ctx(tmp_path))[1]["feature_net_cached"] is False


def test_racing_writers_both_end_with_a_valid_file(tmp_path):
    results, errors = [], []

    def job():
        try:
            results.append(feature_network(make_ctx(tmp_path)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 2
    files = cache_files(tmp_path)
    assert len(files) == 1 and not list((tmp_path / "cache").glob(".*"))  # no temporary file left
    payload = torch.load(files[0], weights_only=True)
    a, b = (r[0].state_dict() for r in results)
    assert all(torch.equal(a[k], b[k]) for k in a)  # seeded: both trained the same weights
    assert all(torch.equal(payload["state_dict"][k], a[k]) for k in a)


def test_atomic_save_leaves_no_partial_file_on_failure(tmp_path):
    class Boom:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    path = tmp_path / "cache" / "x.pt"
    with pytest.raises(RuntimeError):
        features.atomic_save({"a": Boom()}, path)
    assert not path.exists() and list(path.parent.iterdir()) == []
