"""``python -m genlab.gpu_check``: the comparison, the run overrides, the no-GPU skip and the real runs on the CPU."""

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from genlab import gpu_check
from genlab.gpu_check import FAMILIES, Run, compare, mode_overrides, rows_of, write_text

REPO = Path(__file__).resolve().parents[2]


def test_compare_passes_inside_the_tolerance_and_fails_outside():
    cpu = {"test/nll_nats": 100.0, "test/loss": -20.0}
    rows = compare(cpu, {"test/nll_nats": 101.9, "test/loss": -20.5}, ["test/nll_nats", "test/loss"], rtol=0.02)
    nll, loss = rows
    assert nll["passed"] is True and nll["rel_diff"] == pytest.approx(0.019)
    # relative to |cpu|, for a negative reference too (a density's NLL can be): 2.5% out, 1.5% in
    assert loss["passed"] is False and loss["rel_diff"] == pytest.approx(0.025)
    (inside,) = compare(cpu, {"test/loss": -19.7}, ["test/loss"], rtol=0.02)
    assert inside["passed"] is True and inside["rel_diff"] == pytest.approx(0.015)
    assert (nll["cpu"], nll["value"], nll["rtol"]) == (100.0, 101.9, 0.02)


def test_compare_fails_missing_non_finite_and_non_numeric_values():
    cpu = {"a": 1.0, "b": 1.0, "c": 1.0, "d": math.nan}
    rows = compare(cpu, {"a": math.inf, "c": "1.0", "d": math.nan, "e": 1.0}, ["a", "b", "c", "d", "e"], rtol=1.0)
    assert [r["passed"] for r in rows] == [False] * 5
    assert all(r["rel_diff"] is None for r in rows)
    assert compare({"x": 0.0}, {"x": 0.0}, ["x"], rtol=1e-3)[0]["passed"] is True  # equal zeros are no failure
    assert compare({"x": 0.0}, {"x": 1e-3}, ["x"], rtol=1e-3)[0]["passed"] is False


def test_a_failed_run_is_one_failing_row_naming_it():
    fam = FAMILIES["vae"]
    cpu = Run("vae", "cpu", [], Path("cpu"), metrics={"test/nll_nats": 1.0, "test/loss": 1.0})
    broken = Run("vae", "bf16", [], Path("bf16"), seconds=2.0, error="exit 1")
    (row,) = rows_of(fam, cpu, broken)
    assert row["passed"] is False and row["metric"] == "run" and "bf16 run: exit 1" in row["error"]
    good = Run("vae", "gpu", [], Path("gpu"), metrics={"test/nll_nats": 1.01, "test/loss": 1.2})
    assert [(r["metric"], r["passed"], r["rtol"]) for r in rows_of(fam, cpu, good)] == [
        ("test/nll_nats", True, fam.rtol["gpu"]),
        ("test/loss", False, fam.rtol["gpu"]),
    ]


def test_mode_overrides():
    fam = FAMILIES["vae"]
    assert mode_overrides(fam, "cpu", 4) == ["trainer=cpu", "data.batch_size=64"]
    assert mode_overrides(fam, "bf16", 4) == ["trainer=gpu", "trainer.precision=bf16-mixed", "data.batch_size=64"]
    # DDP keeps the global batch of the CPU run: 64 = 4 processes x 16
    assert mode_overrides(fam, "ddp", 4) == ["trainer=ddp", "trainer.devices=4", "data.batch_size=16"]
    assert mode_overrides(fam, "ddp", 2, accelerator="cpu")[-1] == "trainer.accelerator=cpu"
    assert "trainer.accelerator=cpu" not in mode_overrides(fam, "cpu", 1, accelerator="cpu")
    with pytest.raises(ValueError, match="unknown mode"):
        mode_overrides(fam, "tpu", 1)
    with pytest.raises(ValueError, match="devices"):
        mode_overrides(fam, "ddp", 0)


def test_every_family_has_a_tolerance_for_every_mode():
    for fam in FAMILIES.values():
        assert set(fam.rtol) == set(gpu_check.MODES) and fam.metrics
        assert all(0 < t < 0.1 for t in fam.rtol.values())


def test_the_text_is_the_same_every_time(tmp_path):
    a = write_text(tmp_path / "a.txt").read_bytes()
    b = write_text(tmp_path / "b.txt").read_bytes()
    assert a == b and len(a) >= 30_000
    assert write_text(tmp_path / "c.txt", seed=1).read_bytes() != a
    assert len(set(a.decode())) < 40  # a small vocabulary: the tiny GPT learns it in a few steps


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: the check would run")
def test_without_a_gpu_it_says_skipped_and_exits_0():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "genlab.gpu_check"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "skipped: no GPU" in proc.stdout


@pytest.mark.heavy
def test_the_real_runs_on_the_cpu_pass_and_a_too_tight_tolerance_fails(tmp_path, monkeypatch, capsys):
    """The CPU stands in for the GPU (``--accelerator cpu``): three real runs of the classical family. The "gpu" run
    is the CPU reference again (identical numbers); two DDP processes draw other dequantization noise, so a
    tolerance of 1e-9 fails them."""
    fam = replace(FAMILIES["classical"], rtol={**FAMILIES["classical"].rtol, "ddp": 1e-9})
    monkeypatch.setitem(gpu_check.FAMILIES, "classical", fam)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the run folders, kept after a failure
    out = tmp_path / "check.json"
    argv = ["--accelerator", "cpu", "--families", "classical", "--modes", "gpu", "ddp", "--ddp-devices", "2",
            "--jobs", "2", "--out", str(out)]  # fmt: skip
    assert gpu_check.main(argv) == 1
    record = json.loads(out.read_text())
    assert record["passed"] is False and record["ddp_devices"] == 2
    rows = {(r["mode"], r["metric"]): r for r in record["rows"]}
    assert set(rows) == {(m, k) for m in ("gpu", "ddp") for k in fam.metrics}  # every key exists in metrics.json
    assert all(rows["gpu", k]["passed"] and rows["gpu", k]["rel_diff"] == 0 for k in fam.metrics)
    assert all(not rows["ddp", k]["passed"] and 0 < rows["ddp", k]["rel_diff"] < 3e-3 for k in fam.metrics)
    assert [r["returncode"] for r in record["runs"]] == [0, 0, 0]
    printed = capsys.readouterr().out
    assert "FAIL" in printed and "PASS" in printed and "FAILED (2 of 4 rows)" in printed
