"""Lightning loggers that keep what they logged, whatever the strategy (one process, ``ddp``, ``ddp_spawn``).

:class:`CSVLogger` fixes Lightning 2.6's ``CSVLogger`` under ``ddp_spawn``: each ``fit`` / ``test`` runs in freshly
spawned processes that get a pickled copy of the main process's logger, so the test stage's writer does not know the
columns that the fit stage wrote to ``metrics.csv``. On its first new key it rewrote the file with a header of the
test columns only, in place: the rewrite raised ``dict contains fields not in fieldnames`` after truncating the file
to that header, and the training history was lost. This writer takes the columns from the file itself, appends when
they already cover the new rows, and otherwise rewrites a temporary file that replaces ``metrics.csv`` in one rename.

:class:`WandbLogger` is Lightning's, with ``log_model`` allowed in offline runs (the checkpoints are kept with the
offline run, and ``wandb sync`` uploads them with it).
"""

from __future__ import annotations

import csv
import os
import secrets
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_warn
from lightning.pytorch import loggers as pl_loggers
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from genlab.errors import ConfigError

METRICS_FILE = "metrics.csv"

FileId = tuple[int, int, int]  # what file_id returns: inode, size, mtime (ns)


def file_id(path: str | Path) -> FileId | None:
    """``(inode, size in bytes, mtime in ns)`` of ``path``, or ``None`` when there is no such file: a file that is
    rewritten, replaced or appended to gets another one."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_header(path: str | Path) -> list[str]:
    """The column names in the first line of the CSV file ``path`` (``[]`` for an empty file).

    Raises:
        OSError: if ``path`` cannot be read.
    """
    with open(path, newline="") as f:
        return next(csv.reader(f), [])


def write_csv_atomic(path: str | Path, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` under the header ``fieldnames`` to a temporary file beside ``path``, flushed to disk, then
    ``os.replace`` it onto ``path``: a reader, or a crash at any point, sees the old file or the new one, whole.

    Raises:
        ValueError: if a row has a key not in ``fieldnames`` (``path`` is left as it was).
        OSError: if the folder cannot be written (``path`` is left as it was).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", newline="") as f:  # a new file, with the umask's permissions (as the file it replaces)
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class MetricsWriter(ExperimentWriter):
    """Lightning's CSV experiment writer (``hparams.yaml`` and ``metrics.csv`` in ``log_dir``) whose ``save`` never
    loses rows already in ``metrics.csv``, even when this object's own record of the columns is stale (a copy made
    before another process wrote the file, as ``ddp_spawn`` makes).

    Args:
        log_dir: the folder of ``metrics.csv`` (a local path).
        stale: :func:`file_id` of a ``metrics.csv`` that an earlier run left in ``log_dir`` (``None``: none). That file
            is replaced by the first save, not deleted up front as Lightning does, so a run that fails before it
            logs anything leaves it whole.
    """

    def __init__(self, log_dir: str, stale: FileId | None = None) -> None:
        self._stale = stale
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        """Lightning deletes an existing ``metrics.csv`` here; this writer replaces it at its first save instead."""

    def save(self) -> None:
        """Write the rows logged since the last save to ``metrics.csv``.

        Rows whose columns the file's header covers are appended (after completing a last line that a killed
        write left unfinished). Otherwise the file's rows and the new ones are rewritten under the union of the
        columns (sorted, as Lightning does) with :func:`write_csv_atomic`.

        Raises:
            OSError: if ``metrics.csv`` cannot be read or written (its rows are then as they were).
        """
        if not self.metrics:
            return
        path = self.metrics_file_path
        found = file_id(path)
        fresh = found is None or found == self._stale  # no file yet, or an earlier run's: the rows start anew
        header = [] if fresh else read_header(path)
        keys = set(header).union(self.metrics_keys, *self.metrics)
        if header and keys <= set(header):
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                unfinished = f.read(1) != b"\n"
            with open(path, "a", newline="") as f:
                if unfinished:
                    f.write("\r\n")  # csv's line terminator
                csv.DictWriter(f, fieldnames=header).writerows(self.metrics)
            fieldnames = header
        else:
            old: list[dict[str, Any]] = []
            if not fresh:
                with open(path, newline="") as f:  # restkey None: the extra fields of a malformed line are dropped
                    old = [{k: v for k, v in row.items() if k is not None} for row in csv.DictReader(f)]
            fieldnames = sorted(keys)
            write_csv_atomic(path, fieldnames, old + self.metrics)
        self.metrics_keys = list(fieldnames)
        self.metrics = []
        self._stale = None


class CSVLogger(pl_loggers.CSVLogger):
    """Lightning's ``CSVLogger`` (same arguments; ``save_dir/name/version/metrics.csv`` and ``hparams.yaml``) that
    writes with :class:`MetricsWriter`, so that every strategy, ``ddp_spawn`` included, keeps the fit stage's rows
    when the test stage logs, and no crash leaves ``metrics.csv`` with fewer rows than it had.

    The version folder is fixed when the logger is made (in the main process, before any process is spawned), and
    so is which ``metrics.csv``, if any, an earlier run left there (the run's first save replaces it).

    Raises:
        ConfigError: for a ``save_dir`` on a remote file system (``s3://...``): the writer renames local files.
    """

    def __init__(
        self,
        save_dir: str | Path,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        if "://" in os.fspath(save_dir):
            raise ConfigError(f"logger.csv.save_dir={save_dir}: the CSV logger writes to a local folder only")
        super().__init__(save_dir, name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)  # fmt: skip
        self._stale = file_id(os.path.join(self.log_dir, METRICS_FILE))  # self.log_dir fixes the version
        if self._stale is not None:
            rank_zero_warn(f"{self.log_dir}/{METRICS_FILE} holds an earlier run's metrics: this run's replace them")

    @property
    @rank_zero_experiment
    def experiment(self) -> MetricsWriter:
        """The :class:`MetricsWriter` of ``log_dir`` (made on first use; a dummy on processes of rank > 0)."""
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = MetricsWriter(log_dir=self.log_dir, stale=self._stale)
        return self._experiment


class WandbLogger(pl_loggers.WandbLogger):
    """Lightning's ``WandbLogger`` (same arguments) that also takes ``log_model`` in offline runs, which Lightning
    refuses: wandb keeps the logged checkpoints with the offline run (copies in its staging folder, under
    ``$WANDB_DATA_DIR``) and ``wandb sync`` uploads them with the run.

    ``log_model``: ``False`` (no checkpoints), ``True`` (when fitting ends, the best and the last checkpoint of each
    ``ModelCheckpoint``: the final ones, aliases ``best`` and ``latest``) or ``"all"`` (each checkpoint as it is
    written).

    Raises:
        ConfigError: for a ``log_model`` other than ``True``, ``False`` or ``"all"``.
    """

    def __init__(self, *args: Any, log_model: bool | str = False, **kwargs: Any) -> None:
        if not (isinstance(log_model, bool) or log_model == "all"):
            raise ConfigError(f"logger.wandb.log_model={log_model!r}: choose true, false or all")
        super().__init__(*args, log_model=False, **kwargs)
        self._log_model = log_model
