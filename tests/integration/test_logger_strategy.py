"""Every logger (csv, tensorboard, wandb, none) under every strategy (one process, ``ddp``, ``ddp_spawn``), through
the real CLI on tiny settings; a crash while metrics.csv is rewritten; wandb checkpoints (``log_model``).

Each strategy runs twice: ``logger=all`` (wandb, csv and tensorboard side by side, each checked in its own files)
and ``logger=[]``, so the six runs cover the twelve (logger, strategy) pairs. The one-process run keeps wandb's
default (no checkpoints logged); the two-process ones log them (``logger.wandb.log_model=true``).
"""

import base64
import csv
import hashlib
import json
import math
import os
import struct
from pathlib import Path

import pytest
from tests.conftest import ok, run_dirs

TINY = [
    "data=digits", "model=vae_mlp", "model.latent_dim=4", "model.encoder.hidden_dims=[32]",
    "model.decoder.hidden_dims=[32]", "model.iwae_k=2", "trainer.max_epochs=2", "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2", "trainer.limit_test_batches=2", "trainer.log_every_n_steps=2",
    "callbacks.rich_progress_bar=null",
]  # fmt: skip
# the spelling a user types: trainer=ddp_sim's strategy (a DDPStrategy config) replaced by Lightning's name
STRATEGIES = {"single": [], "ddp": ["trainer=ddp_sim"], "ddp_spawn": ["trainer=ddp_sim", "trainer.strategy=ddp_spawn"]}
EPOCHS = ["0", "1"]

# imported by every Python process the run starts (spawned ones too): the disk fills up while a metrics.csv with
# test columns is written, after its first row
DISK_FULL_WHILE_WRITING_TEST_COLUMNS = """
import csv, errno
_writerows = csv.DictWriter.writerows
def writerows(self, rows):
    rows = list(rows)
    if any(str(k).startswith("test/") for k in self.fieldnames):
        _writerows(self, rows[:1])
        raise OSError(errno.ENOSPC, "No space left on device (simulated)")
    return _writerows(self, rows)
csv.DictWriter.writerows = writerows
"""


@pytest.fixture
def disk_full() -> None:
    """Requested by a test whose CLI runs get ``DISK_FULL_WHILE_WRITING_TEST_COLUMNS`` (set up by ``cli_env``)."""


@pytest.fixture(autouse=True)
def cli_env(request, monkeypatch, tmp_path) -> None:
    """The environment of the test's CLI runs, set before the ``cli`` fixture copies it (autouse fixtures come
    first): wandb's staging copies of checkpoints in ``tmp_path``, and the simulated full disk for ``disk_full``."""
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    if "disk_full" in request.fixturenames:
        site = tmp_path / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(DISK_FULL_WHILE_WRITING_TEST_COLUMNS)
        monkeypatch.setenv("PYTHONPATH", str(site), prepend=os.pathsep)


def new_run(proc, before: list[Path]) -> Path:
    """The one run folder that ``proc`` made (``before``: the folders there were)."""
    (run,) = [p for p in run_dirs(proc.log_dir) if p not in before]
    return run


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def csv_rows(run: Path) -> list[dict]:
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def wandb_records(path: Path) -> list:
    """The protobuf records (``wandb.proto.wandb_internal_pb2.Record``) of an offline run's ``run-<id>.wandb``: a
    7-byte file header, then 32 KiB blocks of chunks, each ``crc32 (4) | length (2, little-endian) | kind (1)``
    (1 a whole record, 2 / 3 / 4 its first / middle / last part); a block's last < 7 bytes are padding."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", path
    records, part, i = [], b"", 7
    while i + 7 <= len(data):
        if block - i % block < 7:
            i += block - i % block
            continue
        _, n, kind = struct.unpack("<IHB", data[i : i + 7])
        if kind == 0:  # zero padding to the block's end
            i += block - i % block
            continue
        part, i = part + data[i + 7 : i + 7 + n], i + 7 + n
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(part)
            records.append(record)
            part = b""
    return records


def wandb_run_of(run: Path) -> list:
    (folder,) = (run / "wandb").glob("offline-run-*")  # one wandb run, whatever the number of processes
    (path,) = folder.glob("run-*.wandb")
    return wandb_records(path)


def logged(records: list, kind: str, key: str) -> list:
    """The values of ``key`` in the ``history`` or ``summary`` records, JSON-decoded, in logged order."""
    field = {"history": "item", "summary": "update"}[kind]
    items = [i for r in records if r.WhichOneof("record_type") == kind for i in getattr(getattr(r, kind), field)]
    return [json.loads(i.value_json) for i in items if i.key == key or list(i.nested_key) == [key]]


def md5_b64(path: Path) -> str:
    return base64.b64encode(hashlib.md5(Path(path).read_bytes()).digest()).decode()


def check_csv(run: Path, test_nll: float) -> None:
    rows = csv_rows(run)
    assert [r["epoch"] for r in rows if r["val/loss"]] == EPOCHS, rows
    assert len([r for r in rows if r["train/loss"]]) >= 2, rows
    (test,) = [r for r in rows if r["test/nll_nats"]]
    assert float(test["test/nll_nats"]) == pytest.approx(test_nll, rel=1e-6)


def check_tensorboard(run: Path, test_nll: float) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})  # every events file in it
    events.Reload()
    assert len(events.Scalars("val/loss")) == len(EPOCHS) and events.Scalars("train/loss")
    assert events.Scalars("test/nll_nats")[-1].value == pytest.approx(test_nll, rel=1e-6)


def check_wandb(run: Path, test_nll: float, log_model: bool) -> None:
    records = wandb_run_of(run)
    assert len(logged(records, "history", "val/loss")) == len(EPOCHS)
    assert logged(records, "history", "test/nll_nats")[-1] == pytest.approx(test_nll, rel=1e-6)
    assert logged(records, "summary", "test/nll_nats")[-1] == pytest.approx(test_nll, rel=1e-6)
    (exit_record,) = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0  # finished, not left running
    check_model_artifacts(run, records, log_model)


def check_model_artifacts(run: Path, records: list, log_model: bool) -> None:
    """With ``log_model``: the best and the last checkpoints as they are at the end of the run, as versions of one
    ``model`` artifact (aliases ``best`` and ``latest``); without: no artifact."""
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    if not log_model:
        assert artifacts == []
        return
    by_file = {json.loads(a.metadata)["original_filename"]: a for a in artifacts}
    best = Path(metrics_of(run)["artifacts"]["checkpoint"])
    last = run / "checkpoints" / "last.ckpt"
    assert set(by_file) == {best.name, last.name} and len(artifacts) == 2  # each once, at the end of fitting
    assert {a.type for a in artifacts} == {"model"} and len({a.name for a in artifacts}) == 1
    for path in (best, last):
        (entry,) = by_file[path.name].manifest.contents
        assert entry.path == "model.ckpt" and entry.digest == md5_b64(path)  # the final file
    assert "best" in by_file[best.name].aliases and "latest" in artifacts[-1].aliases


@pytest.mark.parametrize(
    ("strategy", "log_model"),
    [("single", False), pytest.param("ddp", True, marks=pytest.mark.heavy),
     pytest.param("ddp_spawn", True, marks=pytest.mark.heavy)],
)  # fmt: skip
def test_every_logger_and_no_logger_under_the_strategy(cli, strategy, log_model):
    extra = ["logger.wandb.log_model=true"] if log_model else []  # false is the default
    proc = ok(cli("train", *TINY, *STRATEGIES[strategy], "logger=all", *extra))
    run = new_run(proc, [])
    m = metrics_of(run)
    assert m["status"] == "ok" and math.isfinite(m["test/nll_nats"])
    trainer = m["config"]["resolved"]["trainer"]
    if strategy != "single":
        assert trainer["devices"] == 2 and trainer["accelerator"] == "cpu"
        assert ("ddp_spawn" if strategy == "ddp_spawn" else "DDPStrategy") in str(trainer["strategy"])
    for name, check in (("csv", check_csv), ("tensorboard", check_tensorboard)):
        try:
            check(run, m["test/nll_nats"])
        except AssertionError as e:
            raise AssertionError(f"logger={name} under {strategy}: {e}") from e
    check_wandb(run, m["test/nll_nats"], log_model)

    proc = ok(cli("train", *TINY, *STRATEGIES[strategy], "logger=[]"))
    bare = new_run(proc, [run])
    m = metrics_of(bare)
    assert m["status"] == "ok" and math.isfinite(m["test/nll_nats"]) and not m["config"]["resolved"].get("logger")
    assert not {"csv", "tensorboard", "wandb", "lightning_logs"} & {p.name for p in bare.iterdir()}


@pytest.mark.parametrize("strategy", ["single", pytest.param("ddp_spawn", marks=pytest.mark.heavy)])
def test_a_crash_while_the_test_stage_writes_metrics_csv_keeps_the_training_rows(cli, disk_full, strategy):
    proc = cli("train", *TINY, *STRATEGIES[strategy], "logger=csv")
    assert proc.returncode != 0 and "No space left on device (simulated)" in proc.stdout + proc.stderr
    (run,) = run_dirs(proc.log_dir)
    assert metrics_of(run)["status"] == "failed"
    rows = csv_rows(run)
    assert [r["epoch"] for r in rows if r["val/loss"]] == EPOCHS and "test/loss" not in rows[0]
    assert [p.name for p in (run / "csv").iterdir() if p.name.endswith(".tmp")] == []


def test_log_model_logs_the_final_checkpoints_as_a_model_artifact(cli, tmp_path):
    proc = ok(cli("train", *TINY, "logger=wandb", "logger.wandb.log_model=true"))
    (run,) = run_dirs(proc.log_dir)
    m = metrics_of(run)
    assert m["status"] == "ok" and m["config"]["resolved"]["logger"]["wandb"]["log_model"] is True
    check_model_artifacts(run, wandb_run_of(run), log_model=True)
    assert list((tmp_path / "wandb-data").rglob("*"))  # the copies `wandb sync` uploads
