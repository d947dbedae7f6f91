"""Save the run when something stops it from outside: SIGTERM (a scheduler's pre-emption or ``kill``), Ctrl+C, or a
launcher's exit (submitit requeues a timed-out SLURM job with ``sys.exit``).

Lightning turns SIGTERM into ``SIGTERMException`` (a ``SystemExit``) at the next batch boundary and calls every
callback's ``on_exception``; this one writes ``checkpoints/last.ckpt`` there, mid-epoch included, so that
``ckpt_path=last`` (or ``ckpt_path=auto``) continues the run exactly where it stopped: the loaders are resumable
(``genlab.data.base.ResumableLoader``) and the model restores its RNG state. Under SLURM, Lightning's
``SLURMEnvironment`` also saves and requeues on ``SIGUSR1`` (its ``auto_requeue``). Errors and divergences never
write here: ``last.ckpt`` keeps the last finite weights (see :mod:`genlab.callbacks.divergence`).
:class:`TimedCheckpoint` also writes it every so many minutes, for epochs longer than a scheduler's patience.
"""

from __future__ import annotations

import signal
from datetime import timedelta
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException


class CheckpointOnInterrupt(Callback):
    """Write ``<dirpath>/last.ckpt`` when fitting is stopped by SIGTERM, KeyboardInterrupt or ``SystemExit``.

    Args:
        dirpath: the checkpoint folder (``None``: the ModelCheckpoint's, else ``<default_root_dir>/checkpoints``).

    Attributes:
        saved: the path written, ``None`` until then; ``signal``: ``"SIGTERM"``, ``"SIGINT"`` or ``"exit"``.
    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath
        self.saved: Path | None = None
        self.signal: str | None = None

    def folder(self, trainer: L.Trainer) -> Path:
        """Where ``last.ckpt`` goes (see ``dirpath``)."""
        if self.dirpath:
            return Path(self.dirpath)
        cb = trainer.checkpoint_callback
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            return Path(cb.dirpath)
        return Path(trainer.default_root_dir) / "checkpoints"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (SystemExit, KeyboardInterrupt)) or trainer.state.fn != TrainerFn.FITTING:
            return  # an error: the checkpoints written so far stay as they are
        if isinstance(exception, SIGTERMException):
            self.signal = signal.SIGTERM.name
        else:
            self.signal = signal.SIGINT.name if isinstance(exception, KeyboardInterrupt) else "exit"
        path = self.folder(trainer) / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(path)  # every rank calls it (Lightning broadcasts SIGTERM); rank 0 writes
        self.saved = path


class TimedCheckpoint(ModelCheckpoint):
    """Write ``<dirpath>/last.ckpt`` every ``minutes`` of training, mid-epoch included (Lightning's
    ``ModelCheckpoint(train_time_interval=...)``, keeping no top-k files); ``minutes=None`` turns it off. The epoch-end
    checkpoints stay with the main ``ModelCheckpoint``.

    Args:
        dirpath: the checkpoint folder (the main ``ModelCheckpoint``'s).
        minutes: wall-clock minutes between saves (> 0), or ``None``.
    """

    def __init__(self, dirpath: str | None = None, minutes: float | None = None) -> None:
        interval = timedelta(minutes=minutes) if minutes else None
        super().__init__(
            dirpath, save_top_k=0, save_last=True, train_time_interval=interval, enable_version_counter=False
        )
        self.minutes = minutes

    def on_train_batch_end(self, *args: object, **kwargs: object) -> None:
        if self.minutes:
            super().on_train_batch_end(*args, **kwargs)

    def on_train_epoch_end(self, *args: object, **kwargs: object) -> None:
        pass  # the main ModelCheckpoint saves at epoch ends

    def on_validation_end(self, *args: object, **kwargs: object) -> None:
        pass

    def on_train_end(self, *args: object, **kwargs: object) -> None:
        pass
