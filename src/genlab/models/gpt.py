"""Autoregressive GPT over token sequences (Radford et al. 2018, 2019): exact likelihood, sequential sampling.

``P(x) = prod_t P(x_t | x_<t)`` with every conditional given by a causal transformer
(:mod:`genlab.nn.transformer`). On character data (``data=shakespeare``) bits/dim are bits per
character.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from genlab.data.spec import DataSpec
from genlab.data.text import IGNORE
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, positive_int
from genlab.nn.transformer import Transformer, generate


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate factor at optimizer step ``step`` (0-based): linear warm-up, then cosine decay.

    ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps (Goyal et al. 2017), then
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2`` with ``p = (step - warmup_steps) /
    (total_steps - warmup_steps)`` clipped to ``[0, 1]`` (Loshchilov & Hutter 2017, Eq. 5, one cycle),
    so the factor is 1 right after warm-up and ``min_ratio`` from ``total_steps`` on.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps <= warmup_steps:
        return min_ratio
    p = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


class GPT(GenerativeModel):
    """Decoder-only transformer language model over ``(block_size,)`` token sequences.

    Data: ``spec.shape == (block_size,)``, ``spec.kind == "levels"``, ``spec.levels`` token ids
    (``vocab_size``); batches are ``(x, y)`` with inputs ``x`` and next-token targets ``y``, each
    ``(B, T)`` int64 (``y == -1`` where nothing is scored), as served by
    :class:`genlab.data.text.TextDataModule`.

    Training minimises the mean next-token cross-entropy (nats per token). Validation and test
    score every target token of the split once and log, averaged over tokens (not windows):
    ``loss`` and ``nats_per_char`` (nats per token), ``bits_per_dim`` and ``bits_per_char`` (bits per
    token), ``nll_nats`` (nats per ``block_size`` tokens, the protocol's per-example unit) and
    ``num_tokens`` (tokens scored, summed).

    The protocol: an example is a window of ``block_size`` tokens that follows the token
    ``start_symbol`` (a newline for text): ``log_prob(x) = sum_t log P(x_t | start, x_<t)`` (exact,
    nats) and ``sample(n)`` draws from that same distribution, so the two agree.
    :meth:`generate` continues any prompt; see :func:`genlab.nn.transformer.generate` for the
    key/value cache and the context window beyond ``block_size``.

    Optimisation: AdamW (Loshchilov & Hutter 2019) with weight decay on parameters with two or more
    dimensions only (weights and embeddings; no decay on biases and LayerNorm gains), and a
    per-step learning rate from :func:`warmup_cosine` going from ``lr`` to ``min_lr``. Clip
    gradients with the Trainer's ``gradient_clip_val``.

    Args:
        data_spec: the data description (1-D token sequences).
        n_layer, n_head, n_embd: transformer depth, heads and width.
        block_size: context length; must equal the data window ``spec.shape[0]`` (``None``: take it
            from the data).
        dropout: dropout rate during training.
        bias: biases in Linear layers and LayerNorms.
        lr, min_lr: peak and final learning rate.
        warmup_steps: linear warm-up steps.
        lr_decay_steps: step at which the cosine reaches ``min_lr`` (``None``: the whole run,
            ``trainer.estimated_stepping_batches``).
        betas: AdamW betas.
        weight_decay: AdamW decoupled weight decay on matrices.
        start_symbol: vocabulary symbol that precedes a window in ``log_prob``/``sample``
            (token id 0 when the data have no vocabulary or it lacks the symbol).
        sample_keep: context kept when a generation window jumps (``None``: ``block_size // 2``).

    Raises:
        ConfigError: for data that are not 1-D token sequences, a ``block_size`` that differs from the
            data window, or impossible sizes or rates.
    """

    nll_kind = "exact"
    capabilities = frozenset({"log_prob", "sample"})

    def __init__(
        self,
        data_spec: DataSpec | dict[str, Any],
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        block_size: int | None = None,
        dropout: float = 0.0,
        bias: bool = False,
        lr: float = 1e-3,
        min_lr: float = 1e-4,
        warmup_steps: int = 100,
        lr_decay_steps: int | None = None,
        betas: Sequence[float] = (0.9, 0.99),
        weight_decay: float = 0.1,
        start_symbol: str = "\n",
        sample_keep: int | None = None,
    ) -> None:
        super().__init__(data_spec, lr=lr, weight_decay=weight_decay)
        spec = self.spec
        if len(spec.shape) != 1 or spec.kind != "levels":
            raise ConfigError(
                f"GPT models 1-D token sequences (DataSpec shape (block_size,), kind 'levels'), got shape "
                f"{spec.shape} kind {spec.kind!r}; use e.g. data=shakespeare"
            )
        window = spec.shape[0]
        if block_size is not None and positive_int("model.block_size", block_size) != window:
            raise ConfigError(
                f"model.block_size={block_size} differs from the data window data.block_size={window}; "
                "set one (data.block_size follows model.block_size by default)"
            )
        if not 0 <= min_lr <= lr:
            raise ConfigError(f"model.min_lr must be in [0, lr={lr}], got {min_lr}")
        if warmup_steps < 0 or (lr_decay_steps is not None and lr_decay_steps <= 0):
            raise ConfigError(f"model.warmup_steps must be >= 0 and lr_decay_steps > 0, got {warmup_steps}, "
                              f"{lr_decay_steps}")  # fmt: skip
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"model.betas must be two numbers in [0, 1), got {list(betas)}")
        if sample_keep is not None and not 1 <= sample_keep <= window:
            raise ConfigError(f"model.sample_keep must be in [1, block_size={window}], got {sample_keep}")
        self.block_size, self.vocab_size = window, spec.levels
        self.min_lr, self.warmup_steps, self.lr_decay_steps = float(min_lr), int(warmup_steps), lr_decay_steps
        self.betas = (float(betas[0]), float(betas[1]))
        self.sample_keep = sample_keep
        vocab = spec.vocab or ""
        self.start_id = vocab.index(start_symbol) if start_symbol and start_symbol in vocab else 0
        self.save_model_hparams()
        self.net = Transformer(self.vocab_size, window, n_layer, n_head, n_embd, dropout, bias)

    def describe(self) -> dict[str, Any]:
        n_params = sum(p.numel() for p in self.net.parameters())
        return {**super().describe(), "block_size": self.block_size, "vocab_size": self.vocab_size,
                "num_params": n_params}  # fmt: skip

    # --- pieces ----------------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Next-token logits ``(B, T, V)`` of token ids ``(B, T)``."""
        return self.net(idx)

    def token_nll(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``-log P(y_t | x_<=t)`` in nats per position: ``(B, T)``, 0 where ``y == -1``."""
        logits = self.net(x)
        return F.cross_entropy(logits.flatten(0, 1), y.reshape(-1), ignore_index=IGNORE, reduction="none").view_as(y)

    def _with_start(self, x: torch.Tensor) -> torch.Tensor:
        start = torch.full((len(x), 1), self.start_id, dtype=torch.long, device=x.device)
        return torch.cat([start, x[:, :-1]], 1)

    # --- the protocol ----------------------------------------------------------------------------
    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log P(x | start)`` of windows ``x`` ``(B, block_size)`` int64: ``(B,)`` nats, exact."""
        return -self.token_nll(self._with_start(x), x).sum(1)

    @torch.no_grad()
    def sample(self, n: int, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` windows drawn after ``start_symbol`` (the distribution of :meth:`log_prob`):
        ``(n, block_size)`` int64 token ids. The model is unconditional: ``condition`` must be ``None``."""
        start = torch.full((n, 1), self.start_id, dtype=torch.long, device=self.device)
        return self.generate(start, self.block_size, condition=condition)[:, 1:]

    @torch.no_grad()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt`` ``(B, P)`` by ``max_new_tokens``: ``(B, P + max_new_tokens)`` int64.

        See :func:`genlab.nn.transformer.generate` (``temperature <= 0`` is greedy; ``top_k`` is
        clamped to the vocabulary; ``top_p`` is nucleus sampling). Runs in eval mode and restores
        the training mode afterwards.
        """
        was_training = self.training
        self.eval()
        try:
            return generate(self.net, prompt.to(self.device), max_new_tokens, temperature, top_k, top_p,
                            generator, condition, use_cache, self.sample_keep)  # fmt: skip
        finally:
            self.train(was_training)

    # --- training and evaluation -----------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Refuse a DataModule whose vocabulary or window differs from the model's (ids would not match).

        Raises:
            ConfigError: naming both vocabularies' sizes and windows.
        """
        datamodule = getattr(self.trainer, "datamodule", None)  # setup is called by a Trainer
        spec = getattr(datamodule, "spec", None)
        if isinstance(spec, DataSpec) and (spec.vocab != self.spec.vocab or spec.shape != self.spec.shape):
            raise ConfigError(
                f"the data (vocabulary of {spec.levels}, window {spec.shape}) differ from the model's "
                f"(vocabulary of {self.spec.levels}, window {self.spec.shape}): token ids would not match; "
                "use the text and data.splits the model was trained with"
            )

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor, stage: str) -> dict[str, torch.Tensor]:
        """``{"loss": (B,)}``: mean next-token cross-entropy per window, nats per scored token."""
        nats = self.token_nll(x, y)
        scored = (y != IGNORE).sum(1).clamp(min=1)
        return {"loss": nats.sum(1) / scored}

    def _eval_step(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        n = int((y != IGNORE).sum())
        if n == 0:
            return
        per_token = self.token_nll(x, y).sum() / n
        terms = {"loss": per_token, "nats_per_char": per_token, "nll_nats": per_token * self.block_size,
                 "bits_per_char": per_token / math.log(2.0)}  # fmt: skip
        self._log_terms(stage, terms, n)  # weighted by tokens: exact averages over the split
        self.log(f"{stage}/num_tokens", float(n), reduce_fx="sum", on_step=False, on_epoch=True, sync_dist=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("val", batch)

    @torch.no_grad()
    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step("test", batch)

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        # the fused AdamW kernel (one call per step, not ~10 per tensor) in full precision; mixed precision
        # keeps the loop version, since Lightning cannot clip gradients with an optimizer that unscales itself
        attached = self._trainer is not None
        fused = not attached or str(self.trainer.precision) in ("32-true", "32", "64-true", "64")
        opt = torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, fused=fused)
        total = self.lr_decay_steps or int(self.trainer.estimated_stepping_batches)
        min_ratio, warmup = self.min_lr / self.lr, self.warmup_steps
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, warmup, total, min_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
