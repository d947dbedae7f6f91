"""PixelCNN, PixelRNN and ImageGPT through the real CLI: digits and the real MNIST subset."""

import json
import math

import pytest
import torch
from tests.conftest import QUIET, ok, run_dirs

SMALL_CNN = ["model=pixelcnn", "model.hidden_channels=16", "model.num_layers=3", "model.head_channels=32"]
SMALL_RNN = ["model=pixelrnn", "model.hidden_channels=16", "model.num_layers=1", "model.head_channels=32",
             "model.input_kernel_size=5"]  # fmt: skip
SMALL_GPT = ["model=image_gpt", "model.n_layer=2", "model.n_head=2", "model.n_embd=32"]


def metrics_of(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_digits_conditional_pixelcnn_learns_then_samples_a_class(cli):
    proc = ok(cli("train", *SMALL_CNN, "model.conditional=true", *QUIET, "trainer=cpu", "trainer.max_epochs=3"))
    (run,) = run_dirs(proc.log_dir)
    m = metrics_of(run)
    assert m["test/nll_kind"] == "exact" and m["test/conditional"] is True
    uniform = math.log2(17)  # 4.09 bits/dim: every one of the 17 grey levels equally likely
    assert m["test/bits_per_dim"] < 0.8 * uniform
    assert m["test/bits_per_dim"] == pytest.approx(m["test/nll_nats"] / (64 * math.log(2)), rel=1e-5)
    # marginal over a uniform prior: -log p(x) <= -log p(x | y) + log 10, and it is not the conditional
    assert m["test/nll_nats"] <= m["test/cond_nll_nats"] + math.log(10) + 1e-3
    assert m["test/nll_nats"] != pytest.approx(m["test/cond_nll_nats"], rel=1e-3)
    assert (run / "samples.png").is_file() and not (run / "reconstructions.png").exists()

    proc = ok(cli("sample", f"ckpt_path={m['artifacts']['checkpoint']}", "num_samples=6", "seed=1", "condition=[3]"))
    (s,) = run_dirs(proc.log_dir, "sample")
    x = torch.load(s / "samples.pt", weights_only=True)
    assert x.shape == (6, 1, 8, 8) and torch.equal(x * 16, (x * 16).round())


@pytest.mark.parametrize(
    "model", [pytest.param(SMALL_RNN, marks=pytest.mark.heavy), SMALL_GPT], ids=["pixelrnn", "image_gpt"]
)
def test_digits_pixelrnn_and_image_gpt_beat_the_uniform_model(cli, model):
    proc = ok(cli("train", *model, *QUIET, "trainer=cpu", "trainer.max_epochs=3"))
    (run,) = run_dirs(proc.log_dir)
    m = metrics_of(run)
    assert m["test/nll_kind"] == "exact" and m["test/bits_per_dim"] < 0.8 * math.log2(17)
    assert (run / "samples.png").is_file()


@pytest.mark.heavy
@pytest.mark.parametrize(
    "overrides, uniform",
    [([], 8.0), (["data.representation=binarized"], 1.0)],
)
def test_real_mnist_subset(cli, mnist_root, overrides, uniform):
    proc = ok(cli(
        "train", "data=mnist", f"data.data_dir={mnist_root}", "data.download=false", *SMALL_CNN, *overrides,
        *QUIET, "trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=10",
        "trainer.num_sanity_val_steps=0", "data.eval_batch_size=250", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=2", "callbacks.image_grids.num_samples=8",
    ))  # fmt: skip
    (run,) = run_dirs(proc.log_dir)
    m = metrics_of(run)
    assert m["test/nll_kind"] == "exact" and m["test/bits_per_dim"] < uniform
    assert (run / "samples.png").is_file()


def test_dequantized_data_are_refused_with_the_fix(cli):
    proc = cli("train", "model=pixelcnn", "data.representation=dequantized", *QUIET)
    assert proc.returncode == 2
    assert "data.representation=continuous" in proc.stdout + proc.stderr
