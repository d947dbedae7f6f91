"""Rebuild a trained model and its DataModule from a genlab checkpoint alone."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate

from genlab.errors import ConfigError, DataError
from genlab.models.base import GenerativeModel


def read_meta(ckpt_path: str | Path, full: bool = False) -> dict[str, Any]:
    """The ``genlab`` entry of a checkpoint: ``{"model_target": str, "data": dict}`` (``full``: the whole checkpoint).

    Loaded with ``torch.load(weights_only=True)``: no code in the file is executed.

    Raises:
        DataError: if the file is missing or not a readable checkpoint.
        ConfigError: if it is not a genlab checkpoint.
    """
    path = Path(ckpt_path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path} (pass ckpt_path=<run>/checkpoints/<file>.ckpt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = "holds objects that need arbitrary code to load, which weights_only=True refuses"
        raise DataError(f"{path} {why}; genlab checkpoints hold tensors and plain types only") from e
    except Exception as e:  # truncated or not a torch file
        first = str(e).strip().split(". ")[0].splitlines()[0] if str(e).strip() else ""
        raise DataError(f"cannot read checkpoint {path} (truncated or corrupt?): {type(e).__name__}: {first}") from e
    meta = ckpt.get("genlab") if isinstance(ckpt, dict) else None
    if not meta or "model_target" not in meta:
        raise ConfigError(f"{path} is not a genlab checkpoint (no 'genlab' entry); train it with genlab.train")
    return ckpt if full else meta


def load_model(ckpt_path: str | Path, **overrides: Any) -> GenerativeModel:
    """Load the model class named in the checkpoint, ``weights_only``; ``overrides`` replace hparams
    (e.g. ``iwae_k=1000``)."""
    meta = read_meta(ckpt_path)
    cls = get_class(meta["model_target"])
    try:
        return cls.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True, **overrides)
    except TypeError as e:  # hparams this genlab no longer takes (e.g. the GPT's old min_lr/betas)
        raise ConfigError(
            f"{ckpt_path} was written by another genlab version and cannot rebuild {cls.__name__}: {e}; "
            "retrain it, or load its state_dict into a model built from the current config"
        ) from e


def build_datamodule(ckpt_path: str | Path, data_dir: str | None = None, **overrides: Any):
    """The DataModule the checkpoint was trained on, with ``data_dir`` and other settings replaced."""
    data = dict(read_meta(ckpt_path)["data"])
    if data_dir is not None:
        data["data_dir"] = data_dir
    data.update(overrides)
    return instantiate(data)
