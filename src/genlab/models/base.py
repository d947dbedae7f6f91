"""The one protocol every genlab model implements, and the training/evaluation loop built on it.

Callbacks, ``eval.py`` and reports use only this protocol and the capability flags; they never
branch on a model's class.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import lightning as L
import torch

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.metrics.likelihood import bits_per_dim

NLL_KINDS = ("exact", "bound", "none")
CAPABILITIES = ("log_prob", "sample", "encode", "reconstruct")


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an int if it is a positive integer, else raise a ``ConfigError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {value!r} (e.g. {name}=16)")
    return value


class GenerativeModel(L.LightningModule):
    """Base class of all genlab models.

    The protocol (implement what the family has, and list it in ``capabilities``):

    * ``log_prob(x) -> (B,)``: log-likelihood in nats per example; ``nll_kind`` says whether it is
      ``"exact"``, a lower ``"bound"``, or ``"none"`` (no likelihood). For ``spec.kind`` ``binary``
      and ``levels`` it is a log mass, for ``dequantized`` a log density on ``[0, 1]^D``.
    * ``sample(n, condition=None) -> (n, *spec.shape)`` in the data's value space (``[0, 1]``).
    * ``encode(x) -> (B, latent_dim)``.
    * ``reconstruct(x) -> Tensor like x``.

    Training: subclasses implement ``loss_terms(x, y, stage) -> {name: (B,)}`` with a ``"loss"``
    entry (minimised, averaged over the batch). Everything returned is logged as
    ``<stage>/<name>``, averaged over the whole split (weighted by batch size, synchronised across
    processes). Density models also return ``"nll_nats"``; ``bits_per_dim`` is derived here. In the
    test stage, ``nll_nats`` comes from ``log_prob`` and ``recon_mse`` from ``reconstruct``.

    Args:
        data_spec: the :class:`DataSpec` (or its dict form) of the data the model is built for.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
    """

    nll_kind: ClassVar[str] = "none"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: whether training loaders drop a final partial batch (models fitted from sufficient statistics set False)
    train_drop_last: ClassVar[bool] = True

    def __init__(self, data_spec: DataSpec | dict[str, Any], lr: float = 1e-3, weight_decay: float = 0.0):
        super().__init__()
        self.spec = DataSpec.coerce(data_spec)
        if lr <= 0:
            raise ConfigError(f"model.lr must be positive, got {lr}")
        self.lr, self.weight_decay = lr, weight_decay
        self.genlab_meta: dict[str, Any] = {}  # set by train.py, stored in checkpoints

    def save_model_hparams(self) -> None:
        """Store the calling ``__init__``'s arguments as hparams, with ``data_spec`` as a plain dict.

        Call it from a subclass ``__init__`` after ``super().__init__``: checkpoints then rebuild the
        model with ``load_from_checkpoint(weights_only=True)`` (plain types only).
        """
        self.save_hyperparameters(ignore=["data_spec"], frame=inspect.currentframe().f_back)
        self.hparams["data_spec"] = self.spec.to_dict()

    # --- the protocol --------------------------------------------------------------------------
    def can(self, capability: str) -> bool:
        """Whether this model implements ``capability`` (one of :data:`CAPABILITIES`)."""
        return capability in self.capabilities

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no likelihood")

    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot sample")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no latent code")

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot reconstruct")

    def describe(self) -> dict[str, Any]:
        """Constants that qualify the test numbers (e.g. ``nll_kind``, ``iwae_k``) for metrics.json."""
        return {"nll_kind": self.nll_kind}

    # --- training and evaluation ---------------------------------------------------------------
    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, stage: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _log_terms(self, stage: str, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        if "nll_nats" in terms:
            terms["bits_per_dim"] = bits_per_dim(terms["nll_nats"], self.spec)
        on_step = stage == "train"
        for name, value in terms.items():
            self.log(
                f"{stage}/{name}", value.detach().mean(), batch_size=batch_size,
                on_step=on_step, on_epoch=not on_step, sync_dist=not on_step,
                prog_bar=name in ("loss", "bits_per_dim"),
            )  # fmt: skip

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        terms = self.loss_terms(x, y, "train")
        loss = terms["loss"].mean()
        self._log_terms("train", {"loss": loss}, len(x))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._log_terms("val", self.loss_terms(x, y, "val"), len(x))

    @torch.no_grad()
    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        terms = self.loss_terms(x, y, "test")
        if self.can("log_prob"):
            terms["nll_nats"] = -self.log_prob(x)
        if self.can("reconstruct"):
            terms["recon_mse"] = (self.reconstruct(x) - x).pow(2).flatten(1).mean(1)
        self._log_terms("test", terms, len(x))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    # --- checkpoints carry what eval/sample need to rebuild the run ----------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["genlab"] = self.genlab_meta

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.genlab_meta = checkpoint.get("genlab", {})
