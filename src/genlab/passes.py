"""The fitting loop of the models that declare ``fit``: passes over the data on Lightning Fabric.

A pass feeds every training example once (``datamodule.pass_dataloader()``) to
:meth:`~genlab.models.classical.fitting.FittedModel.accumulate`; ``end_pass`` sums the statistics over
processes and updates the parameters (closed form or one M-step). Then the validation split is scored
(``val/<name>`` = sum over the split / count, summed over processes; :class:`~genlab.models.base.SplitMeans`),
``train/<name>`` (what the pass reports) and ``val/<name>`` go to the Trainer's loggers with
``step`` = the pass index, and rank 0 writes ``last.ckpt`` and the best checkpoint by the
ModelCheckpoint callback's ``monitor``. The loop stops when the model has converged, after
``trainer.max_epochs`` passes, or when the EarlyStopping callback's ``patience`` runs out.

Devices, strategy, loggers, callbacks and ``max_epochs`` are read from the Trainer that ``train.py``
builds, which then tests the best checkpoint. Batch limits, ``max_steps`` and the validation cadence
do not apply: a pass is the whole training split, and every pass is validated.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import lightning as L
import torch
from lightning.fabric import Fabric
from lightning.fabric.strategies import DDPStrategy
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy as TrainerDDPStrategy
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

from genlab.errors import ConfigError, DataError
from genlab.models.base import SplitMeans
from genlab.models.classical.fitting import FittedModel


def launch_fabric(trainer: L.Trainer) -> Fabric:
    """A launched Fabric on the Trainer's accelerator, devices and nodes, logging to its loggers.

    Several processes run DDP started as subprocesses (``trainer=ddp`` / ``ddp_sim``), with the
    Trainer's ``process_group_backend``; the launcher sets ``LOCAL_RANK``, so the Trainer that tests
    afterwards finds its processes already created and does not start them again.

    Raises:
        ConfigError: for several processes under any other strategy (e.g. ``ddp_spawn``).
    """
    ours, strategy, accelerator = trainer.strategy, "auto", trainer.strategy.root_device.type
    if trainer.world_size > 1:
        if not (isinstance(ours, TrainerDDPStrategy) and isinstance(ours.launcher, _SubprocessScriptLauncher)):
            raise ConfigError(
                f"models fitted by passes run on one process or under DDP started as subprocesses, not "
                f"{type(ours).__name__} with {type(ours.launcher).__name__}: use trainer=ddp or trainer=ddp_sim"
            )
        strategy = DDPStrategy(process_group_backend=ours.process_group_backend, checkpoint_io=ours.checkpoint_io)
    devices = trainer.device_ids if accelerator == "cuda" else trainer.num_devices
    plugins = [ours.checkpoint_io] if strategy == "auto" else None  # the Trainer's (atomic) checkpoint writer
    fabric = Fabric(
        accelerator=accelerator, strategy=strategy, devices=devices, num_nodes=trainer.num_nodes,
        loggers=trainer.loggers, plugins=plugins,
    )  # fmt: skip
    fabric.launch()
    return fabric


def lightning_checkpoint(model: FittedModel, epoch: int) -> dict[str, Any]:
    """The Lightning checkpoint dict of ``model`` after pass ``epoch`` (0-based): what ``trainer.test(ckpt_path=)``
    and ``load_from_checkpoint(weights_only=True)`` read (``state_dict``, ``hyper_parameters``, the genlab meta)."""
    ckpt = {
        "epoch": epoch, "global_step": epoch + 1, "pytorch-lightning_version": L.__version__,
        "state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
    }  # fmt: skip
    model.on_save_checkpoint(ckpt)
    return ckpt


def save_checkpoints(fabric: Fabric, cb: ModelCheckpoint, model: FittedModel, epoch: int, metrics: dict) -> None:
    """Write ``last.ckpt`` (``cb.save_last``) and, when ``metrics[cb.monitor]`` improves (every pass without a
    monitor), the best checkpoint named by ``cb.filename`` in ``cb.dirpath``, replacing the previous best (unless
    ``cb.save_top_k == 0``). Rank 0 writes; the paths and the best score are recorded on ``cb``, as the Trainer does."""
    state, names = lightning_checkpoint(model, epoch), {"epoch": epoch, "step": epoch + 1, **metrics}
    if cb.save_last:
        cb.last_model_path = cb.format_checkpoint_name(names, cb.CHECKPOINT_NAME_LAST)
        fabric.save(cb.last_model_path, state)
    current, best = metrics.get(cb.monitor) if cb.monitor else None, cb.best_model_score
    improved = current is not None and (best is None or {"min": torch.lt, "max": torch.gt}[cb.mode](current, best))
    if cb.save_top_k != 0 and (cb.monitor is None or improved):
        old, cb.best_model_path, cb.best_model_score = cb.best_model_path, cb.format_checkpoint_name(names), current
        fabric.save(cb.best_model_path, state)
        if fabric.is_global_zero and old and old != cb.best_model_path:
            os.remove(old)


@torch.no_grad()
def validate(model: FittedModel, loader: Any, fabric: Fabric, reduce: Any) -> dict[str, torch.Tensor]:
    """``{name: float32 mean over the split}`` of ``model.score(x, y, "val")`` (``reduce`` sums across processes),
    plus ``bits_per_dim`` when the model scores ``nll_nats``."""
    means = SplitMeans(fabric.device)
    for batch in loader:
        means.add(*model.score(*fabric.to_device(batch), "val"))
    return model.split_metrics(means, reduce)[0]


def first_examples(model: FittedModel, loader: Any, fabric: Fabric, n: int) -> torch.Tensor:
    """The first ``n`` examples ``(n, P)`` float64 of one pass over ``loader`` (fewer if the split is smaller).

    Raises:
        DataError: if the loader yields nothing.
    """
    chunks, got = [], 0
    for x, _ in loader:
        chunks.append(model.features(fabric.to_device(x)))
        got += len(x)
        if got >= n:
            break
    if not chunks:
        raise DataError("the training split is empty: nothing to initialise the model from")
    return torch.cat(chunks)[:n]


def fit_by_passes(model: FittedModel, datamodule: Any, trainer: L.Trainer, ckpt_path: str | None = None) -> str:
    """Fit ``model`` (one that declares ``fit``) by passes over ``datamodule``'s training split; see the module doc.

    Args:
        model: the model; left fitted on every process (float64 buffers, on the Fabric's device).
        datamodule: provides ``setup``, ``pass_dataloader()`` (every training example once) and ``val_dataloader()``.
        trainer: the run's Trainer: devices, strategy, precision, loggers, ``max_epochs`` and the
            ModelCheckpoint / EarlyStopping callbacks are read from it.
        ckpt_path: a checkpoint to resume from: its state is loaded and the passes continue after its ``epoch``.

    Returns:
        The best checkpoint's path (``""`` without a ModelCheckpoint callback).

    Raises:
        ConfigError: for a strategy other than DDP across processes, or a trainer precision that casts the
            float64 statistics (``*-true`` below 32 bits).
        DataError: for an empty training split or malformed data.
    """
    fabric = launch_fabric(trainer)
    trainer.precision_plugin.convert_module(model)  # as the test stage will: `*-true` below 32 bits casts buffers
    lowered = sorted({str(b.dtype) for b in model.buffers() if b.is_floating_point() and b.dtype != torch.float64})
    if lowered:
        raise ConfigError(
            f"{type(model).__name__} keeps its statistics in float64 but the trainer cast them to {lowered}; "
            "use trainer.precision=32-true (or a *-mixed precision, which leaves float64 alone)"
        )
    model.to(fabric.device)
    reduce = (lambda t: fabric.all_reduce(t, reduce_op="sum")) if fabric.world_size > 1 else None
    datamodule.setup("fit")
    train = datamodule.pass_dataloader()  # one loader: each pass (and the seeding) draws its next shuffle
    start = 0
    if ckpt_path:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.on_load_checkpoint(ckpt)
        model.load_state_dict(ckpt["state_dict"])
        start = ckpt["epoch"] + 1
    if n := model.init_examples():
        model.initialize(first_examples(model, train, fabric, n))
        if fabric.world_size > 1:  # every process starts from rank 0's initialisation
            model.load_state_dict(fabric.broadcast(model.state_dict(), src=0))
    cb, stop = trainer.checkpoint_callback, trainer.early_stopping_callback
    if cb is not None and cb.dirpath is None:
        cb.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")
    for epoch in range(start, trainer.max_epochs if trainer.max_epochs >= 0 else sys.maxsize):
        model.begin_pass()
        for x, _ in train:
            model.accumulate(fabric.to_device(x))
        report = model.end_pass(reduce)
        val = validate(model, datamodule.val_dataloader(), fabric, reduce)
        metrics = {**{f"train/{k}": v for k, v in report.items()}, **{f"val/{k}": v for k, v in val.items()}}
        fabric.log_dict({"epoch": epoch, **metrics}, step=epoch)
        fabric.print(f"pass {epoch}: " + ", ".join(f"{k}={float(v):.6g}" for k, v in metrics.items()))
        if cb is not None:
            save_checkpoints(fabric, cb, model, epoch, metrics)
        # EarlyStopping's own rule (patience, min_delta, thresholds, check_finite), as the Trainer applies it
        halt, reason = (False, None)
        if stop is not None and stop.monitor in metrics:
            halt, reason = stop._evaluate_stopping_criteria(torch.as_tensor(metrics[stop.monitor]))
        if reason and halt:
            fabric.print(reason)
        if model.converged or halt:
            break
    for logger in fabric.loggers:
        logger.finalize("success")
    return cb.best_model_path if cb is not None else ""
