"""ckpt_path=last resumes the newest unfinished run in its own folder, exactly where it stopped."""

import csv
import json
import signal
import time

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


def test_sigterm_mid_epoch_saves_and_the_resume_gives_the_uninterrupted_run_exactly(cli, tmp_path):
    """Killed from outside in the middle of epoch 1, the run saves last.ckpt (loader position, optimizer, RNG),
    exits 143 with status interrupted, and ckpt_path=last ends with the weights of the run that was never stopped.
    Every CPU kernel used here is deterministic for a fixed thread count (OMP_NUM_THREADS=1), so equality is exact.
    """
    args = [*RUN, "data.batch_size=4", "trainer.max_epochs=2"]  # 323 batches an epoch: the kill lands inside one
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    ok(cli("train", *args, f"hydra.run.dir={whole}"))

    proc = cli.start("train", *args, f"hydra.run.dir={cut}")
    deadline = time.monotonic() + 300
    while not (cut / "checkpoints" / "last.ckpt").is_file():  # written after epoch 0's validation
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "genlab: error: stopped by SIGTERM at step" in stderr
    record = json.loads((cut / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["artifacts"]["checkpoint"].endswith("last.ckpt")
    saved = torch.load(cut / "checkpoints" / "last.ckpt", weights_only=True)
    (position,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert position["epoch"] == 1 and 0 < position["batch"] < 323, position  # mid-epoch, after some batches
    assert saved["global_step"] == 323 + position["batch"]

    proc = ok(cli("train", *args, f"hydra.run.dir={cut}", "ckpt_path=last"))
    assert "resuming from" in proc.stdout
    resumed, reference = (json.loads((p / "metrics.json").read_text()) for p in (cut, whole))
    assert resumed["status"] == "ok" and resumed["test/nll_nats"] == reference["test/nll_nats"]
    assert all(torch.equal(weights(whole)[k], v) for k, v in weights(cut).items())


def test_ckpt_path_auto_starts_fresh_then_resumes_in_the_same_folder(cli, tmp_path):
    run = tmp_path / "job"
    first = ok(cli("train", *RUN, "trainer.max_epochs=1", f"hydra.run.dir={run}", "ckpt_path=auto"))
    assert "resuming" not in first.stdout
    (run / "metrics.json").unlink()  # as a requeued job finds its folder
    again = ok(cli("train", *RUN, "trainer.max_epochs=2", f"hydra.run.dir={run}", "ckpt_path=auto"))
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'}" in again.stdout
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1


def test_a_resumed_run_continues_its_wandb_run(cli, tmp_path):
    run, args = (
        tmp_path / "run",
        ["logger=wandb", "callbacks.rich_progress_bar=null", f"hydra.run.dir={tmp_path / 'run'}"],
    )
    ok(cli("train", *args, "trainer.max_epochs=1"))
    (first,) = (run / "wandb").glob("offline-run-*")
    run_id = first.name.rsplit("-", 1)[-1]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["genlab"]["wandb_id"] == run_id
    (run / "metrics.json").unlink()
    ok(cli("train", *args, "trainer.max_epochs=2", "ckpt_path=last"))
    ids = sorted(p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*"))
    assert ids == [run_id, run_id]  # two sessions of one wandb run: `wandb sync` joins them


def test_ckpt_path_last_alone_continues_the_run_with_its_first_overrides(cli, tmp_path):
    run = tmp_path / "run"
    ok(cli("train", *RUN, "data.batch_size=32", "trainer.max_epochs=1", f"hydra.run.dir={run}"))
    (run / "metrics.json").unlink()
    proc = ok(cli("train", "ckpt_path=last", "trainer.max_epochs=2", f"hydra.run.dir={run}"))
    assert "resuming with the run's overrides:" in proc.stdout
    record = json.loads((run / "metrics.json").read_text())
    resolved, overrides = record["config"]["resolved"], record["config"]["overrides"]
    assert resolved["data"]["batch_size"] == 32 and resolved["trainer"]["max_epochs"] == 2  # kept, and replaced
    assert "data.batch_size=32" in overrides and "trainer.max_epochs=1" not in overrides
    assert (run / "csv" / "resume-1" / "metrics.csv").is_file()  # the first session's logger, as it was started
