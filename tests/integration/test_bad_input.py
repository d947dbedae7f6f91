"""Bad input through the real CLI: one clear message, a non-zero exit, and no earlier output touched."""

import hashlib
import shutil

import pytest
from tests.conftest import QUIET, ok


def snapshot(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def earlier_run(cli):
    """A finished run in the same outputs folder, and a snapshot of every file under it."""
    proc = ok(cli("train", *QUIET, "trainer.max_epochs=1", "model.iwae_k=2"))
    return proc.log_dir, snapshot(proc.log_dir)


def assert_clear_failure(proc, *needles, code=2):
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in proc.stderr, proc.stderr[-3000:]


def test_bad_inputs_fail_clearly_and_leave_earlier_runs_alone(cli, earlier_run, mnist_root, tmp_path):
    log_dir, before = earlier_run

    # an unknown model name: Hydra lists the available choices
    proc = cli("train", "model=nope", *QUIET)
    assert_clear_failure(proc, "Could not find 'model/nope'", "vae_mlp", code=1)

    # an impossible size
    proc = cli("train", "model.latent_dim=0", *QUIET)
    assert_clear_failure(proc, "model.latent_dim must be a positive integer, got 0")

    # a missing data folder, offline with downloading off
    empty = tmp_path / "no-data"
    proc = cli("train", "data=mnist", f"data.data_dir={empty}", "data.download=false", *QUIET)
    assert_clear_failure(proc, str(empty / "MNIST" / "raw"), "train-images-idx3-ubyte", "data.download=true")

    # a missing data folder with downloading on, on a machine without network
    proc = cli("train", "data=fashion_mnist", f"data.data_dir={empty}", *QUIET)
    assert_clear_failure(proc, str(empty / "FashionMNIST" / "raw"), "download failed")

    # a truncated IDX file
    broken = tmp_path / "broken"
    shutil.copytree(mnist_root, broken)
    f = broken / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:5000])
    proc = cli("train", "data=mnist", f"data.data_dir={broken}", "data.download=false", *QUIET)
    assert_clear_failure(proc, str(f), "truncated or corrupt")

    # a likelihood that cannot score the data
    proc = cli("train", "model.likelihood=bernoulli", *QUIET)
    assert_clear_failure(proc, "data.representation=binarized")

    # a required value left out
    proc = cli("eval")
    assert_clear_failure(proc, "ckpt_path is required")

    # a checkpoint that does not exist
    proc = cli("eval", f"ckpt_path={tmp_path / 'missing.ckpt'}")
    assert_clear_failure(proc, "checkpoint not found")

    after = snapshot(log_dir)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing earlier changed or vanished
