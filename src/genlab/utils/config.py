"""Objects as config: ``_target_`` dicts that a model stores in its hparams and builds from.

A model that takes a sub-network as config (e.g. ``model.encoder``) receives a plain dict with a
``_target_``, stores that dict in its hparams (so checkpoints load with ``weights_only=True``) and
fills in the data-dependent arguments when it builds it with :func:`build`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from genlab.errors import ConfigError, GenlabError


def config_of(cls: type, **kwargs: Any) -> dict[str, Any]:
    """The config that builds ``cls(**kwargs)``: ``{"_target_": "<module>.<name>", **kwargs}``."""
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}", **kwargs}


def plain(cfg: Any) -> Any:
    """A config node (``DictConfig``/``ListConfig``) as plain dicts and lists; anything else unchanged."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def build(cfg: Mapping[str, Any], key: str, **kwargs: Any) -> Any:
    """Instantiate the ``_target_`` config ``cfg`` (dict or DictConfig) with ``kwargs`` added; they
    win over keys of ``cfg``. Lists reach the target as plain lists (``_convert_="all"``); a config with
    ``_partial_: true`` gives a ``functools.partial`` (e.g. ``model.optimizer``).

    Args:
        cfg: a mapping with ``_target_``, e.g. ``{"_target_": "genlab.nn.mlp.MLPEncoder", "hidden_dims": [64]}``.
        key: where ``cfg`` sits in the config, e.g. ``model.encoder``; every error names it.
        kwargs: the arguments the caller fills in, e.g. ``shape=(1, 8, 8), out_features=32``.

    Raises:
        ConfigError: naming ``key``, when ``cfg`` is not a mapping with a ``_target_``, the target
            cannot be imported, it rejects the arguments, or it raises a genlab error itself.
    """
    target = cfg.get("_target_") if isinstance(cfg, Mapping) else None
    if not isinstance(target, str):
        raise ConfigError(f"{key} must be a config with a _target_ (a class path), got {cfg!r}")
    try:
        return instantiate(cfg, **kwargs, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, GenlabError):
            raise ConfigError(f"{key}: {cause}") from cause
        if isinstance(cause, ImportError):  # Hydra's import message spans lines: keep it to one
            raise ConfigError(
                f"{key}._target_={target!r} cannot be imported: {' '.join(str(cause).split())}"
            ) from cause
        if cause is None:
            raise ConfigError(f"{key} ({target}): {e}") from e
        raise ConfigError(f"{key} ({target}): {type(cause).__name__}: {cause}") from cause
