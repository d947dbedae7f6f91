"""ckpt_path=last resumes the newest unfinished run in its own folder, exactly where it stopped."""

import csv
import json

import torch
from tests.conftest import QUIET, ok, run_dirs

RUN = [*QUIET, "callbacks.early_stopping=null"]


def weights(run):
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def epochs(path):
    with open(path) as f:
        return sorted({int(r["epoch"]) for r in csv.DictReader(f) if r.get("val/loss")})


def test_resume_in_place_gives_the_uninterrupted_run_exactly(cli, tmp_path):
    (whole,) = run_dirs(ok(cli("train", *RUN, "trainer.max_epochs=4")).log_dir)
    reference = json.loads((whole / "metrics.json").read_text())
    (whole / "metrics.json").rename(tmp_path / "whole.json")  # out of the way: only one unfinished run below

    proc = ok(cli("train", *RUN, "trainer.max_epochs=2"))
    first = next(p for p in run_dirs(proc.log_dir) if p != whole)
    (first / "metrics.json").unlink()  # as a run killed before its end leaves it
    original = (first / ".hydra" / "overrides.yaml").read_text()
    (whole / "checkpoints" / "last.ckpt").rename(tmp_path / "whole.ckpt")  # so the newest unfinished run is `first`

    proc = ok(cli("train", *RUN, "trainer.max_epochs=4", "ckpt_path=last"))
    assert f"resuming from {first / 'checkpoints' / 'last.ckpt'} in {first}" in proc.stdout
    assert set(run_dirs(proc.log_dir)) == {whole, first}  # no new folder
    resumed = json.loads((first / "metrics.json").read_text())
    assert resumed["status"] == "ok" and resumed["test/nll_nats"] == reference["test/nll_nats"]
    whole_weights = torch.load(tmp_path / "whole.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(whole_weights[k], v) for k, v in weights(first).items())  # identical weights
    # the first .hydra/ and metrics.csv are kept; the resume's config and log sit beside them
    assert (first / ".hydra" / "overrides.yaml").read_text() == original
    assert "ckpt_path=last" in (first / ".hydra" / "resume-1" / "overrides.yaml").read_text()
    assert epochs(first / "csv" / "metrics.csv") == [0, 1] and epochs(first / "csv" / "resume-1" / "metrics.csv") == [
        2,
        3,
    ]


def test_nothing_to_resume_and_broken_checkpoints_are_one_line_refusals(cli, tmp_path):
    proc = cli("train", *RUN, "ckpt_path=last")
    assert proc.returncode == 2 and "ckpt_path=last: nothing to resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    for module in ("train", "eval", "sample"):
        proc = cli(module, f"ckpt_path={bad}")
        assert proc.returncode == 2, (module, proc.stderr[-2000:])
        assert f"cannot read checkpoint {bad} (truncated or corrupt?)" in proc.stderr and "Traceback" not in proc.stderr
