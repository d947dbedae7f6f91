"""genlab.utils.loggers: metrics.csv keeps every row it held (stale copies of the writer, failed rewrites, earlier
runs' files, lines cut by a kill), and the wandb logger takes log_model offline."""

import csv
import errno
import pickle

import pytest

from genlab.errors import ConfigError
from genlab.utils.loggers import CSVLogger, WandbLogger


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def spawned(logger):
    """The copy of ``logger`` that a process started by ``ddp_spawn`` gets: pickled in the main process."""
    return pickle.loads(pickle.dumps(logger))


def test_a_copy_made_before_the_fit_rows_were_written_keeps_them_when_it_logs_new_columns(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version="")
    logger.log_hyperparams({"seed": 0})  # the main process makes the writer before fit and test are spawned
    fit = spawned(logger)
    for step in range(3):
        fit.log_metrics({"epoch": step, "val/loss": 10.0 - step}, step=step)
        fit.save()
    test = spawned(logger)  # knows no column yet: the file's header says which there are
    test.log_metrics({"epoch": 0, "test/loss": 7.5}, step=0)
    test.save()
    rows = rows_of(tmp_path / "csv" / "metrics.csv")
    assert [r["val/loss"] for r in rows] == ["10.0", "9.0", "8.0", ""]
    assert rows[-1]["test/loss"] == "7.5" and set(rows[0]) == {"epoch", "step", "val/loss", "test/loss"}
    assert (tmp_path / "csv" / "hparams.yaml").is_file()


def test_rows_whose_columns_the_file_has_are_appended_in_the_files_column_order(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version="")
    logger.log_metrics({"b": 1.0, "a": 2.0}, step=0)
    logger.save()
    path = tmp_path / "csv" / "metrics.csv"
    inode = path.stat().st_ino
    other = spawned(logger)
    other.log_metrics({"a": 3.0}, step=1)
    other.save()
    assert path.stat().st_ino == inode  # appended, not rewritten
    assert path.read_text().splitlines() == ["a,b,step", "2.0,1.0,0", "3.0,,1"]


def test_a_rewrite_that_fails_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    logger = CSVLogger(tmp_path, name="csv", version="")
    logger.log_metrics({"val/loss": 1.0}, step=0)
    logger.save()
    path = tmp_path / "csv" / "metrics.csv"
    before = path.read_bytes()

    def disk_full(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", disk_full)
    logger.log_metrics({"test/loss": 2.0}, step=1)  # a new column: the file is rewritten
    with pytest.raises(OSError, match="No space left"):
        logger.save()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]  # no temporary file left behind


def test_an_earlier_runs_file_is_replaced_by_the_first_save_not_before(tmp_path):
    path = tmp_path / "csv" / "metrics.csv"
    path.parent.mkdir()
    path.write_text("epoch,old,step\n0,1.0,0\n")
    with pytest.warns(UserWarning, match="earlier run"):
        logger = CSVLogger(tmp_path, name="csv", version="")
    logger.log_hyperparams({"seed": 0})
    test = spawned(logger)  # made before this run wrote anything
    assert path.read_text() == "epoch,old,step\n0,1.0,0\n"  # a run that fails now leaves it whole
    fit = spawned(logger)
    fit.log_metrics({"val/loss": 5.0}, step=0)
    fit.save()
    assert rows_of(path) == [{"step": "0", "val/loss": "5.0"}]
    test.log_metrics({"test/loss": 4.0}, step=1)  # this run's file now: kept
    test.save()
    assert [r["val/loss"] for r in rows_of(path)] == ["5.0", ""]


def test_a_line_cut_by_a_killed_write_does_not_swallow_the_next_row(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version="")
    logger.log_metrics({"a": 1.0}, step=0)
    logger.save()
    path = tmp_path / "csv" / "metrics.csv"
    with open(path, "a", newline="") as f:
        f.write("2.0")  # killed before the rest of the line
    logger.log_metrics({"a": 3.0}, step=2)
    logger.save()
    assert [r["a"] for r in rows_of(path)] == ["1.0", "2.0", "3.0"] and rows_of(path)[-1]["step"] == "2"


def test_a_remote_save_dir_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="local folder"):
        CSVLogger("s3://bucket/runs", name="csv")


def test_the_wandb_logger_takes_log_model_offline_and_refuses_other_values(tmp_path):
    for value in (True, False, "all"):
        assert WandbLogger(save_dir=tmp_path, offline=True, log_model=value)._log_model == value
    for value in ("yes", 1, None):
        with pytest.raises(ConfigError, match="log_model"):
            WandbLogger(save_dir=tmp_path, offline=True, log_model=value)
