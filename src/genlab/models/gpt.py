"""Autoregressive GPT over token sequences (Radford et al. 2018, 2019): exact likelihood, sequential sampling.

``P(x) = prod_t P(x_t | x_<t)`` with every conditional given by a causal transformer
(:mod:`genlab.nn.transformer`). On character data (``data=shakespeare``) bits/dim are bits per
character.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F

from genlab.checks import positive_int, require
from genlab.data.spec import IGNORE, DataSpec
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel
from genlab.nn.transformer import Transformer, generate

log = logging.getLogger(__name__)
DEFAULT_START = "\n"


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

    Optimisation (declared here, configured in ``conf/model/gpt.yaml``): AdamW (Loshchilov & Hutter
    2019) with weight decay on parameters with two or more dimensions only (weights and embeddings; no
    decay on biases and LayerNorm gains), fused in full precision, and a per-step learning rate from
    :func:`genlab.models.schedules.warmup_cosine_schedule`. Clip gradients with the Trainer's
    ``gradient_clip_val``.

    Args:
        data_spec: the data description (1-D token sequences).
        n_layer, n_head, n_embd: transformer depth, heads and width.
        block_size: context length; must equal the data window ``spec.shape[0]`` (``None``: take it
            from the data).
        dropout: dropout rate during training.
        bias: biases in Linear layers and LayerNorms.
        weight_decay: decoupled weight decay on matrices.
        start_symbol: vocabulary symbol that precedes a window in ``log_prob``/``sample``. ``None``:
            a newline, or, when the vocabulary has none, its first symbol (logged, and stored in the
            hparams so the checkpoint keeps it); token id 0 for data without a vocabulary.
        sample_keep: context kept when a generation window jumps (``None``: ``block_size // 2``).
        train_matmul_dtype: e.g. ``"bfloat16"``: the blocks' Linear layers run in that precision while
            training (float32 master weights; see :class:`~genlab.nn.transformer.Transformer`); ``None``:
            float32 throughout.
        base: ``lr``, ``optimizer``, ``scheduler``, ``compile`` (:class:`GenerativeModel`); the
            defaults are AdamW with betas (0.9, 0.99) and the warm-up/cosine schedule to ``1e-4``.

    Raises:
        ConfigError: for data that are not 1-D token sequences, a ``block_size`` that differs from the
            data window, impossible sizes, or a ``start_symbol`` that is not in the vocabulary.
    """

    nll_kind = "exact"
    capabilities = frozenset({"log_prob", "sample", "generate"})
    count_unit = "tokens"

    def __init__(
        self,
        data_spec: DataSpec | dict[str, Any],
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        block_size: int | None = None,
        dropout: float = 0.0,
        bias: bool = False,
        weight_decay: float = 0.1,
        start_symbol: str | None = None,
        sample_keep: int | None = None,
        train_matmul_dtype: str | None = None,
        **base: Any,
    ) -> None:
        base.setdefault("optimizer", {"_target_": "torch.optim.AdamW", "_partial_": True, "betas": [0.9, 0.99]})
        base.setdefault("scheduler", {"_target_": "genlab.models.schedules.warmup_cosine_schedule", "_partial_": True})
        super().__init__(data_spec, weight_decay=weight_decay, **base)
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
        if sample_keep is not None:
            require(1 <= sample_keep <= window, "model.sample_keep", f"in [1, block_size={window}]", sample_keep)
        self.block_size, self.vocab_size = window, spec.levels
        self.sample_keep = sample_keep
        start_symbol = self._start_symbol(start_symbol)  # stored by save_model_hparams (it reads the locals)
        self.start_id = spec.vocab.index(start_symbol) if start_symbol is not None else 0
        self.save_model_hparams()
        self.net = Transformer(self.vocab_size, window, n_layer, n_head, n_embd, dropout, bias,
                               train_matmul_dtype=train_matmul_dtype)  # fmt: skip

    def _start_symbol(self, given: str | None) -> str | None:
        """The start symbol to use: ``given`` (which must be in the vocabulary), else the default."""
        vocab = self.spec.vocab
        if vocab is None:
            return None
        if given is not None:
            require(given in vocab, "model.start_symbol", f"a symbol of the vocabulary {vocab!r}", given)
            return given
        if DEFAULT_START in vocab:
            return DEFAULT_START
        log.warning("the vocabulary has no newline: windows start after %r (token 0) instead", vocab[0])
        return vocab[0]

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
    def token_log_probs(self, ids: torch.Tensor) -> torch.Tensor:
        """``log P(x_t | start, x_<t)`` in nats of every token of a sequence ``ids`` ``(N,)`` int64: ``(N,)``, exact.

        The sequence follows ``start_symbol`` and is scored in consecutive windows of ``block_size``
        tokens, each token's context being the tokens before it in its window (as the test split is).
        """
        seq = torch.cat([ids.new_tensor([self.start_id]), ids.long()]).to(self.device)
        n, t = len(ids), self.block_size
        num = -(-n // t)
        pad = num * t + 1 - len(seq)
        x = torch.cat([seq, seq.new_full((pad,), self.start_id)])[: num * t].view(num, t)
        y = torch.cat([seq[1:], seq.new_full((pad,), IGNORE)]).view(num, t)
        return -self.token_nll(x, y).flatten()[:n]

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
    def score(self, x: torch.Tensor, y: torch.Tensor, stage: str):
        """Next-token scores per window: nats summed over its scored tokens, and the token counts ``(B,)``.

        Averaged by the adapter over tokens (not windows): ``loss``/``nats_per_char`` in nats per token,
        ``bits_per_char`` in bits per token, ``nll_nats`` in nats per ``block_size`` tokens.
        """
        nats = self.token_nll(x, y).sum(1)
        tokens = (y != IGNORE).sum(1)
        if stage == "train":
            return {"loss": nats}, tokens
        sums = {"loss": nats, "nats_per_char": nats, "nll_nats": nats * self.block_size,
                "bits_per_char": nats / math.log(2.0)}  # fmt: skip
        return sums, tokens

    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Decay on matrices and embeddings (two or more dimensions), none on biases and gains."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if p.ndim >= 2]},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]

    def optimizer_options(self) -> dict[str, Any]:
        """``fused=True`` (one kernel per step, not ~10 per tensor) in full precision; mixed precision keeps
        the loop version, since Lightning cannot clip gradients with an optimizer that unscales itself."""
        attached = self._trainer is not None
        return {"fused": not attached or str(self.trainer.precision) in ("32-true", "32", "64-true", "64")}
