"""The evaluator through the real CLI on real data: every test, every key documented, n/a where it does not apply."""

import csv
import json
import math

import pytest
import torch
from PIL import Image
from tests.conftest import QUIET, ok, run_dirs

from genlab.schema import entry

TESTS = ("density", "samples", "representation", "prototypes", "classifier", "ood")


def metrics_of(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def eval_keys(m):
    return {k: v for k, v in m.items() if k.startswith(("eval/", "test/", "val/", "sample/", "time/"))}


def undocumented(m):
    return sorted(k for k in eval_keys(m) if entry(k) is None)


@pytest.mark.heavy
def test_full_evaluation_of_a_vae_on_digits_then_eval_reproduces_it(cli):
    proc = ok(cli("train", *QUIET, "logger=default", "trainer.max_epochs=5", "model.iwae_k=5", "evaluation=full",
                  "model.conditional=true"))  # fmt: skip
    (run,) = run_dirs(proc.log_dir)
    m = metrics_of(run)
    assert {m[f"eval/{t}"] for t in TESTS} == {"ok"}, {t: m[f"eval/{t}"] for t in TESTS}
    assert undocumented(m) == []
    # sample quality in both labelled forms, with the floor of real images against real images
    for key in ("fid", "kid", "fid_decoder_mean", "fid_real_floor", "classifier_score", "class_entropy_bits"):
        assert math.isfinite(m[f"eval/{key}"]), key
    assert m["eval/fid_num_samples"] > 0 and sum(m["eval/class_histogram"]) > 0
    assert 0.0 <= m["eval/class_entropy_bits"] <= math.log2(10) + 1e-9
    assert 0.1 < m["eval/probe_accuracy"] <= 1.0 and 0.0 <= m["eval/generative_classifier_accuracy"] <= 1.0
    assert 0.0 <= m["eval/ood_auroc_inverted"] <= 1.0
    figures = {k: v for k, v in m["artifacts"].items() if k.startswith("figure/")}
    assert {"figure/codes_2d", "figure/interpolations", "figure/traversals", "figure/prototypes"} <= set(figures)
    for path in figures.values():
        assert Image.open(path).format == "PNG"
    # every logger gets the figures; wandb also the per-class tables (offline run files)
    media = next((run / "wandb").glob("offline-run-*")) / "files" / "media"
    tables = {p.name.split("_")[0] for p in (media / "table" / "eval").glob("*.table.json")}
    assert {"nll", "probe", "generative", "log", "ood"} <= tables, tables
    assert {p.name.rsplit("_", 2)[0] for p in (media / "images" / "eval").glob("*.png")} >= {"prototypes", "codes_2d"}
    with open(run / "csv" / "metrics.csv") as f:
        assert "eval/fid" in f.readline()
    with open(run / "evaluation" / "nll_per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 10 and sum(int(r["count"]) for r in rows) == m["eval/density_num_examples"]

    # eval.py on the checkpoint: the same evaluation numbers (every test seeds its own random numbers)
    ckpt = m["artifacts"]["checkpoint"]
    proc = ok(cli("eval", f"ckpt_path={ckpt}", "callbacks.rich_progress_bar=null", "evaluation=full"))
    (ev,) = run_dirs(proc.log_dir, "eval")
    again = metrics_of(ev)
    timing = {"eval/feature_net_cached", "eval/feature_net_seconds"}  # the eval run loads the cached network
    numbers = [k for k, v in m.items() if k.startswith("eval/") and isinstance(v, (int, float)) and k not in timing]
    assert again["eval/feature_net_cached"] is True
    assert {k: again[k] for k in numbers} == pytest.approx({k: m[k] for k in numbers}, rel=1e-6, abs=1e-9)


@pytest.mark.heavy
@pytest.mark.parametrize(
    ("model", "extra", "not_applicable"),
    [
        ("pca", [], {"density", "samples", "prototypes", "classifier", "ood"}),
        ("gmm", ["data.representation=dequantized"], {"classifier"}),
        ("ae_mlp", [], {"density", "prototypes", "classifier", "ood"}),
        ("pixelcnn", ["model.hidden_channels=8", "model.num_layers=2"], {"representation", "classifier"}),
    ],
)
def test_every_family_reports_what_applies(cli, model, extra, not_applicable):
    proc = ok(cli("train", *QUIET, f"model={model}", "trainer.max_epochs=1", "evaluation=full", *extra))
    (run,) = run_dirs(proc.log_dir)
    m = metrics_of(run)
    status = {t: m[f"eval/{t}"] for t in TESTS}
    assert {t for t, s in status.items() if s.startswith("n/a: ")} == not_applicable, status
    assert {t for t, s in status.items() if s == "ok"} == set(TESTS) - not_applicable
    assert undocumented(m) == []


def test_score_a_png_and_a_tensor_under_a_digits_model(cli, tmp_path):
    proc = ok(cli("train", *QUIET, "trainer.max_epochs=1", "model.iwae_k=2", "evaluation=none"))
    (run,) = run_dirs(proc.log_dir)
    ckpt = metrics_of(run)["artifacts"]["checkpoint"]
    from sklearn.datasets import load_digits
    from torchvision.utils import save_image

    x = torch.tensor(load_digits().images[:2] / 16.0, dtype=torch.float32)[:, None]
    for i in range(2):
        save_image(x[i], tmp_path / f"digit{i}.png")
    torch.save(x, tmp_path / "digits.pt")
    proc = ok(cli("score", f"ckpt_path={ckpt}", f"input={tmp_path}/digit*.png"))
    (s,) = run_dirs(proc.log_dir, "score")
    with open(s / "scores.csv") as f:
        png = list(csv.DictReader(f))
    assert [r["input"].rsplit("/", 1)[-1] for r in png] == ["digit0.png", "digit1.png"]
    assert all(0.0 <= float(r["percentile_in_test"]) <= 100.0 for r in png)
    assert "17 levels" in proc.stdout
    proc = ok(cli("score", f"ckpt_path={ckpt}", f"input={tmp_path}/digits.pt"))
    s = run_dirs(proc.log_dir, "score")[-1]
    with open(s / "scores.csv") as f:
        pt = list(csv.DictReader(f))
    # the PNGs hold the same 17-level images: the same bound (the PNG path rounds 8-bit values back to the levels)
    for a, b in zip(png, pt, strict=True):
        assert float(a["log_p_nats"]) == pytest.approx(float(b["log_p_nats"]), abs=1e-4)

    big = tmp_path / "big.png"
    Image.new("L", (16, 16)).save(big)
    proc = cli("score", f"ckpt_path={ckpt}", f"input={big}")
    assert proc.returncode != 0 and "16x16 pixels; the model scores grayscale images of 8x8 pixels" in proc.stderr


def test_bad_evaluation_settings_fail_before_training(cli):
    proc = cli("train", *QUIET, "evaluation=nonsense")
    assert proc.returncode != 0 and "evaluation" in proc.stderr
    proc = cli("train", *QUIET, "evaluation=default", "evaluation.samples.num_samples=40",
               "evaluation.samples.kid_subset_size=100")  # fmt: skip
    assert proc.returncode == 2 and "evaluation.samples.kid_subset_size" in proc.stderr
    assert not list((proc.log_dir / "train" / "runs").glob("*/checkpoints/*.ckpt"))  # refused before training
    proc = cli("train", *QUIET, "evaluation=default", "evaluation.tests=[density,typo]")
    assert proc.returncode == 2 and "unknown evaluation test" in proc.stderr
    proc = cli("train", *QUIET, "evaluation=default", "evaluation.samples.num_samples=30",
               "evaluation.samples.kid_subset_size=10")  # fmt: skip
    assert proc.returncode == 2 and "evaluation.features.width" in proc.stderr  # N=30 < 64 features
    proc = cli("train", *QUIET, "evaluation=full", "evaluation.ood.data=cifar10")
    assert proc.returncode == 2 and "has shape (3, 32, 32); the model's data have (1, 8, 8)" in proc.stderr
    assert not list((proc.log_dir / "train" / "runs").glob("*/checkpoints/*.ckpt"))


def test_guidance_needs_a_model_that_samples(cli):
    first = ok(cli("train", *QUIET, "model=pca"))
    (run,) = run_dirs(first.log_dir)
    before = (run / "metrics.json").read_text()
    ckpt = json.loads(before)["artifacts"]["checkpoint"]
    proc = cli("sample", f"ckpt_path={ckpt}", "condition=[3]", "guidance=classifier")
    assert proc.returncode == 2 and "guidance=classifier needs a model that samples" in proc.stderr
    assert (run / "metrics.json").read_text() == before
