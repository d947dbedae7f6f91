"""The one protocol every genlab model implements, and the one Lightning adapter that trains it.

Callbacks, ``eval.py``, the evaluator and reports use only this protocol and the declared
capabilities; they never branch on a model's class and never probe with ``getattr``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import lightning as L
import torch
import torch.distributed as dist

from genlab.checks import positive, require
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.metrics.likelihood import bits_per_dim
from genlab.utils.config import build, plain

NLL_KINDS = ("exact", "bound", "none")
#: Everything a caller may look for. ``generate``: continue a prompt; ``decode``: codes ``(B, latent_dim)``
#: to data; ``assign``: cluster indices ``(B,)``; ``components``: ``component_vectors() -> (K, P)``; ``conditional``:
#: ``log_prob`` and ``sample`` take a label; ``fit``: fitted from statistics by passes, not by gradient steps.
CAPABILITIES = (
    "log_prob", "sample", "encode", "reconstruct", "generate", "decode", "assign", "components", "conditional", "fit",
)  # fmt: skip
#: the method each capability stands for (``None``: a property of ``log_prob``/``sample``, or of the fit)
METHOD_OF = {
    "log_prob": "log_prob", "sample": "sample", "encode": "encode", "decode": "decode", "reconstruct": "reconstruct",
    "generate": "generate", "assign": "assign", "components": "component_vectors", "conditional": None,
    "fit": "fit_tensor",
}  # fmt: skip
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True}

Scores = tuple[dict[str, torch.Tensor], "torch.Tensor | None"]


def _partial(cfg: Any, key: str) -> Callable[..., Any]:
    """The ``functools.partial`` a ``_partial_: true`` config gives. Raises: ConfigError naming ``key``."""
    require(isinstance(cfg, dict) and bool(cfg.get("_partial_")), key, "a config with _partial_: true", cfg)
    return build(cfg, key)


class SplitMeans:
    """Exact averages over a split: running sums of per-example sums and of per-example counts.

    ``add(sums, counts)`` takes what :meth:`GenerativeModel.score` returns (``counts`` ``(B,)``, or
    ``None`` for one unit per example); ``compute(reduce)`` returns ``{name: sum / count}`` as float64
    scalars, after ``reduce`` (e.g. an all-reduce sum across processes) has summed every total, so the
    average is over the whole split whatever the batching or the number of processes. Token-weighted
    (text) and example-weighted (images) means are the same code.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count: torch.Tensor | None = None
        self.device = device  # where an empty process's zeros live (the reduction's device)

    def add(self, sums: dict[str, torch.Tensor], counts: torch.Tensor | None) -> None:
        """Add one batch: ``sums`` ``{name: (B,)}`` and ``counts`` ``(B,)`` or ``None``."""
        first = next(iter(sums.values()))
        total = first.new_tensor(float(len(first)), dtype=torch.float64) if counts is None else counts.double().sum()
        self.count = total if self.count is None else self.count + total
        for name, value in sums.items():
            v = value.detach().to(torch.float64).sum()
            self.sums[name] = v if name not in self.sums else self.sums[name] + v

    def compute(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[dict, float]:
        """``({name: mean}, total count)`` over everything added (and over processes, via ``reduce``).

        Under ``torch.distributed`` the term names are gathered first, so a process whose shard was empty
        still takes part in the reduction (with zeros) instead of leaving the others waiting.
        """
        names = sorted(self.sums)
        if reduce is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            every: list[list[str]] = [[] for _ in range(dist.get_world_size())]
            dist.all_gather_object(every, names)
            names = sorted(set().union(*every))
        if not names:
            return {}, 0.0
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        flat = torch.stack([self.sums.get(k, zero) for k in names] + [zero if self.count is None else self.count])
        flat = flat.to(zero.device)
        if reduce is not None:
            flat = reduce(flat)
        count = flat[-1]
        return {k: flat[i] / count for i, k in enumerate(names)}, float(count)


class GenerativeModel(L.LightningModule):
    """Base class of all genlab models, and the one Lightning adapter: no family overrides the steps.

    The protocol (implement what the family has, and declare it in ``capabilities``, one of
    :data:`CAPABILITIES` each):

    * ``log_prob(x) -> (B,)``: log-likelihood in nats per example; ``nll_kind`` says whether it is
      ``"exact"``, a lower ``"bound"``, or ``"none"``. For ``spec.kind`` ``binary`` and ``levels`` it
      is a log mass, for ``dequantized`` a log density on ``[0, 1]^D``.
    * ``sample(n, condition=None) -> (n, *spec.shape)``: draws in the data's value space (the levels
      grid, ``{0, 1}``, token ids) for a model with a likelihood; a model without one (autoencoders,
      k-means) returns decodes, means in ``[0, 1]``.
    * ``encode(x) -> (B, latent_dim)``; ``decode(z) -> (B, *spec.shape)`` (the decoder's mean or mode), and
      ``sample_codes(n) -> (n, latent_dim)`` codes from the prior (capability ``decode``).
    * ``reconstruct(x) -> Tensor like x``.
    * ``generate(prompt, max_new_tokens, ...)`` and ``token_log_probs(ids) -> (N,)`` (capability ``generate``);
      ``assign(x) -> (B,)`` int64 cluster indices;
      ``component_vectors() -> (K, P)`` (capability ``components``; not ``loadings``, the ``(P, K)``
      buffer of PPCA and factor analysis); ``fit_tensor(x)`` (capability ``fit``).

    Scoring: a model implements :meth:`score`, per-example sums and counts. The adapter logs
    ``<stage>/<name>`` = (sum over the split) / (count over the split) for every returned term,
    synchronised across processes (:class:`SplitMeans`), derives ``bits_per_dim`` from ``nll_nats``,
    and in the test stage adds ``nll_nats = -log_prob(x)`` (when ``score`` did not return it) and
    ``recon_mse``. The test stage seeds its own random numbers from ``genlab_meta["seed"]`` (plus the
    rank), so a checkpoint tested again gives the same numbers, also for sampled bounds.

    Optimisation comes from config: ``optimizer`` is a Hydra ``_partial_`` config called with the
    parameter groups of :meth:`optimizer_groups` and ``lr`` / ``weight_decay``; ``scheduler`` (or
    ``None``) is one called with the optimiser (and ``total_steps``, when it takes one and the config
    leaves it ``null``: the run's optimiser steps); it steps every optimiser step.

    Args:
        data_spec: the :class:`DataSpec` (or its dict form) of the data the model is built for.
        lr: peak learning rate (``model.lr``; > 0).
        weight_decay: the optimiser's weight decay.
        optimizer: ``_partial_`` config of the optimiser class (default Adam).
        scheduler: ``_partial_`` config of a learning-rate schedule, or ``None``.
        compile: run the model's networks through ``torch.compile`` (``true``: the default ``inductor``
            backend; a string names another backend, e.g. ``eager``), compiled in place
            (``nn.Module.compile``), so checkpoint keys are the same compiled or not.

    Raises:
        ConfigError: for a non-positive ``lr``.
    """

    nll_kind: ClassVar[str] = "none"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: what a count in :meth:`score` counts, logged as ``<stage>/num_<count_unit>`` (``None``: examples, not logged)
    count_unit: ClassVar[str | None] = None

    def __init__(
        self,
        data_spec: DataSpec | dict[str, Any],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        compile: bool | str = False,
    ):
        super().__init__()
        self.spec = DataSpec.coerce(data_spec)
        self.lr, self.weight_decay = positive("model.lr", lr), float(weight_decay)
        self.optimizer_cfg = plain(optimizer) or dict(DEFAULT_OPTIMIZER)
        self.scheduler_cfg = plain(scheduler)
        self._optimizer_factory()  # a wrong _target_ fails here, not at fit time
        self._scheduler_factory()
        self.compile_backend = ("inductor" if compile is True else compile) or None
        self.genlab_meta: dict[str, Any] = {}  # set by train.py, stored in checkpoints
        self._means: SplitMeans | None = None
        self._compiled = False

    def refuse_tokens(self) -> None:
        """For models of values in ``[0, 1]``: refuse token data (a spec with a vocabulary).

        Raises:
            ConfigError: naming the model and the fix.
        """
        if self.spec.vocab is not None:
            raise ConfigError(f"{type(self).__name__} models values in [0, 1], not token ids; use image data "
                              "(e.g. data=digits), or model=gpt for text")  # fmt: skip

    def declare_conditional(self, conditional: bool) -> None:
        """Make this instance class-conditional (``P(x | y)``, capability ``conditional``) when ``conditional``.

        Sets ``conditional`` and ``num_classes`` (``None`` when unconditional). A conditional model's
        ``log_prob(x)`` without labels is the marginal under a uniform class prior.

        Raises:
            ConfigError: for ``conditional`` on data without classes.
        """
        if conditional and not self.spec.num_classes:
            raise ConfigError(f"model.conditional=true needs labelled data; these data have no classes "
                              f"({type(self).__name__})")  # fmt: skip
        self.conditional = bool(conditional)
        if self.conditional:
            self.capabilities = type(self).capabilities | {"conditional"}
        self.num_classes: int | None = self.spec.num_classes if self.conditional else None

    def labels(self, n: int, condition: torch.Tensor | None) -> torch.Tensor | None:
        """The labels ``(n,)`` int64 to condition on, or ``None`` for an unconditional model.

        A conditional model without ``condition`` cycles through the classes (``0, 1, ..., 0, 1, ...``).

        Raises:
            ConfigError: for a condition given to an unconditional model, or labels of the wrong
                shape or outside ``[0, num_classes)``.
        """
        if not getattr(self, "conditional", False):
            if condition is not None:
                raise ConfigError(f"{type(self).__name__} is unconditional; train it with model.conditional=true")
            return None
        if condition is None:
            return torch.arange(n, device=self.device) % self.num_classes
        y = torch.as_tensor(condition, device=self.device).long().flatten()
        if len(y) != n or (y < 0).any() or (y >= self.num_classes).any():
            raise ConfigError(f"condition must be {n} labels in [0, {self.num_classes}), got {condition!r}")
        return y

    def save_model_hparams(self) -> None:
        """Store the calling ``__init__``'s arguments as hparams, with ``data_spec`` as a plain dict.

        Call it from a subclass ``__init__`` after ``super().__init__``: checkpoints then rebuild the
        model with ``load_from_checkpoint(weights_only=True)`` (plain types only).
        """
        self.save_hyperparameters(ignore=["data_spec"], frame=inspect.currentframe().f_back)
        self.hparams["data_spec"] = self.spec.to_dict()
        for key in ("optimizer", "scheduler"):  # config nodes as plain dicts
            if key in self.hparams:
                self.hparams[key] = plain(self.hparams[key])

    # --- the protocol --------------------------------------------------------------------------
    def can(self, capability: str) -> bool:
        """Whether this model implements ``capability`` (one of :data:`CAPABILITIES`).

        Raises:
            ValueError: for a name that is not a capability (a typo would otherwise read as "no").
        """
        if capability not in CAPABILITIES:
            raise ValueError(f"unknown capability {capability!r}; one of {CAPABILITIES}")
        return capability in self.capabilities

    def _missing(self, capability: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not declare {capability!r}")

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise self._missing("log_prob")

    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        raise self._missing("sample")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise self._missing("encode")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise self._missing("decode")

    def sample_codes(self, n: int) -> torch.Tensor:
        """``n`` codes from the model's prior over codes, ``(n, latent_dim)`` on the model's device; part of ``decode``.

        The default is ``N(0, I)``: the prior of the VAE, probabilistic PCA and factor analysis. A deterministic
        autoencoder has no prior, and these are then "random darts" in its code space.
        """
        if not self.can("decode"):
            raise self._missing("decode")
        return torch.randn(n, self.latent_dim, device=self.device)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        raise self._missing("reconstruct")

    def generate(self, prompt: torch.Tensor, max_new_tokens: int, **kwargs: Any) -> torch.Tensor:
        raise self._missing("generate")

    def token_log_probs(self, ids: torch.Tensor) -> torch.Tensor:
        """``log P(x_t | x_<t)``, nats, of each token of one sequence ``(N,)`` int64: ``(N,)``; part of ``generate``."""
        raise self._missing("generate")

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        raise self._missing("assign")

    def component_vectors(self) -> torch.Tensor:
        raise self._missing("components")

    def describe(self) -> dict[str, Any]:
        """Constants that qualify the test numbers (e.g. ``nll_kind``, ``iwae_k``) for metrics.json."""
        out: dict[str, Any] = {"nll_kind": self.nll_kind}
        if hasattr(self, "conditional"):
            out["conditional"] = self.conditional
            if self.conditional:
                out["class_prior"] = "uniform"
        return out

    # --- scoring -------------------------------------------------------------------------------
    def score(self, x: torch.Tensor, y: torch.Tensor | None, stage: str) -> Scores:
        """Per-example scores of one batch: ``({name: (B,) sums}, counts (B,) or None)``.

        ``"loss"`` is required (minimised in training: sum of sums / sum of counts). ``counts`` says
        how many units each example's sums cover (tokens for text); ``None`` means one example each.
        ``stage`` is ``"train"``, ``"val"`` or ``"test"``.
        """
        raise NotImplementedError

    def _test_terms(self, x: torch.Tensor, y: torch.Tensor | None) -> Scores:
        sums, counts = self.score(x, y, "test")
        if self.can("log_prob") and "nll_nats" not in sums:
            sums["nll_nats"] = -self.log_prob(x)
        if self.can("reconstruct") and "recon_mse" not in sums:
            sums["recon_mse"] = (self.reconstruct(x) - x).pow(2).flatten(1).mean(1)
        return sums, counts

    # --- the Lightning steps (the only ones) ---------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        sums, counts = self.score(x, y, "train")
        loss = sums["loss"].sum() / (len(x) if counts is None else counts.sum().clamp(min=1))
        self.log("train/loss", loss.detach(), batch_size=len(x), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._means = SplitMeans(self.device)

    def on_test_epoch_start(self) -> None:
        self._means = SplitMeans(self.device)
        torch.manual_seed(int(self.genlab_meta.get("seed", 0)) + self.global_rank)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._means.add(*self.score(x, y, "val"))

    @torch.no_grad()
    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self._means.add(*self._test_terms(x, y))

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    def split_metrics(self, means: SplitMeans, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """``({name: float32 mean over the split}, count)`` from ``means`` (``reduce``: the sum across processes),
        with ``bits_per_dim`` derived from ``nll_nats`` (:func:`genlab.metrics.likelihood.bits_per_dim`)."""
        out, count = means.compute(reduce)
        if "nll_nats" in out:
            out["bits_per_dim"] = bits_per_dim(out["nll_nats"], self.spec)
        return {k: v.float() for k, v in out.items()}, count

    def _log_split(self, stage: str) -> None:
        means, count = self.split_metrics(self._means, lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        self._means = None
        for name, value in means.items():
            # already summed over processes; sync_dist averages equal values (and keeps Lightning's advice quiet)
            self.log(f"{stage}/{name}", value, prog_bar=name in ("loss", "bits_per_dim"), sync_dist=True)
        if means and self.count_unit:
            self.log(f"{stage}/num_{self.count_unit}", count, sync_dist=True)

    def setup(self, stage: str) -> None:
        """Refuse a DataModule whose :class:`DataSpec` differs from the model's (shapes, levels or token ids).

        Raises:
            ConfigError: naming both descriptions.
        """
        dm = self.trainer.datamodule
        if dm is not None and dm.spec != self.spec:
            fix = (
                "token ids would not match; use the text and data.splits the model was trained with"
                if self.spec.vocab is not None
                else "use the data settings the model was trained with"
            )
            raise ConfigError(f"the data ({dm.spec.summary()}) differ from the model's ({self.spec.summary()}): {fix}")

    # --- optimisation from config --------------------------------------------------------------
    def optimizer_groups(self) -> Iterable[Any]:
        """What the optimiser is built on: the trainable parameters (override for parameter groups)."""
        return [p for p in self.parameters() if p.requires_grad]

    def optimizer_options(self) -> dict[str, Any]:
        """Extra keyword arguments of the optimiser that depend on the run (e.g. ``fused``)."""
        return {}

    def _optimizer_factory(self) -> Callable[..., torch.optim.Optimizer]:
        return _partial(self.optimizer_cfg, "model.optimizer")

    def _scheduler_factory(self) -> Callable[..., Any] | None:
        return _partial(self.scheduler_cfg, "model.scheduler") if self.scheduler_cfg else None

    def configure_optimizers(self) -> Any:
        """The optimiser (and schedule) from ``model.optimizer`` / ``model.scheduler``.

        Raises:
            ConfigError: when either rejects its settings (e.g. a negative ``weight_decay``, or ``betas``
                left over for an optimiser that takes none: drop it with ``~model.optimizer.betas``).
        """
        make, key = self._optimizer_factory(), "model.optimizer"
        try:
            opt = make(self.optimizer_groups(), lr=self.lr, weight_decay=self.weight_decay, **self.optimizer_options())
            if not self.scheduler_cfg:
                return opt
            schedule, key = self._scheduler_factory(), "model.scheduler"
            kwargs = {}
            if "total_steps" in inspect.signature(schedule).parameters and schedule.keywords.get("total_steps") is None:
                kwargs["total_steps"] = int(self.trainer.estimated_stepping_batches)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule(opt, **kwargs), "interval": "step"}}
        except (TypeError, ValueError) as e:
            target = (self.optimizer_cfg if key == "model.optimizer" else self.scheduler_cfg)["_target_"]
            given = "model.lr, model.weight_decay and" if key == "model.optimizer" else "the optimiser and"
            raise ConfigError(f"{key} ({target}) refuses its arguments: {e}. It is called with {given} the keys of "
                              f"{key}; drop one with ~{key}.<key>") from e  # fmt: skip

    def configure_model(self) -> None:
        """``model.compile=true``: compile each network in place (``nn.Module.compile``): every direct child
        module, and the members of child ``ModuleList``/``ModuleDict`` containers (which are never called)."""
        if self.compile_backend is None or self._compiled:
            return
        todo = list(self.children())
        while todo:
            module = todo.pop()
            if isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict)):
                todo.extend(module.children())
            else:
                module.compile(backend=self.compile_backend)
        self._compiled = True

    # --- checkpoints carry what eval/sample need to rebuild the run ----------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["genlab"] = self.genlab_meta
        # the random state at the save, so a resumed run draws what the uninterrupted one would (a uint8 tensor:
        # weights_only loads it)
        checkpoint["genlab_rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            checkpoint["genlab_rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.genlab_meta = checkpoint.get("genlab", {})
        self._resume_rng = checkpoint.get("genlab_rng")  # set when training starts, after the sanity check

    def on_train_start(self) -> None:
        rng, self._resume_rng = getattr(self, "_resume_rng", None), None
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])
