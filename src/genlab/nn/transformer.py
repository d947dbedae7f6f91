"""Decoder-only transformer over token ids (GPT: Radford et al. 2018, 2019), with a key/value cache.

Nothing here knows about text: :class:`Transformer` maps token ids ``(B, T)`` to next-token logits
``(B, T, vocab_size)``, and :func:`generate` extends token sequences one element at a time. Models
(character GPT, ImageGPT-style pixel models) decide what the tokens mean.

Architecture (GPT-2, Radford et al. 2019, Sec. 2.3): token plus learned position embeddings, a stack of
pre-norm blocks ``x + Attn(LN(x))`` then ``x + MLP(LN(x))`` with causal multi-head self-attention
(Vaswani et al. 2017, Eq. 1) through ``torch.nn.functional.scaled_dot_product_attention``, a final
LayerNorm and an output layer tied to the token embedding (Press & Wolf 2017). Weights start from
``N(0, 0.02^2)``; the two projections that write into the residual stream in each block are scaled
by ``1 / sqrt(2 n_layer)`` (GPT-2's residual scaling).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genlab.checks import positive_int
from genlab.errors import ConfigError

INIT_STD = 0.02
# CPU attention in these precisions (bf16 autocast, or a half-precision model) runs in float32: torch's
# CPU flash-attention backward is ~7x slower in bfloat16 than in float32 at gpt_cpu's sizes (measured).
LOW_PRECISION = (torch.bfloat16, torch.float16)
NOISE_ELEMENTS = 2**20  # most Gumbel draws generate() makes at once (4 MB in float32)


class KVCache:
    """Keys and values of the positions seen so far, preallocated for ``capacity`` positions.

    ``kv`` is ``(n_layer, 2, B, n_head, capacity, head_dim)`` (keys, then values); ``length`` counts the positions
    filled. :meth:`Transformer.forward` writes the keys/values of its input at positions
    ``length .. length + T - 1`` and then advances ``length``; it attends over ``0 .. length + T - 1``.

    One-position steps (``T == 1`` without gradients, the decoding loop) go through a lean path
    that reuses views of this buffer and of the weights, made at the first such step and kept
    across :meth:`reset` (``plan``); it follows in-place weight updates, and is rebuilt when the
    weights move to another tensor (``.to(...)``).

    Args:
        n_layer, batch, n_head, capacity, head_dim: the sizes above.
        device, dtype: where and in which precision the cache lives (the model's).
    """

    def __init__(
        self, n_layer: int, batch: int, n_head: int, capacity: int, head_dim: int,
        device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    ) -> None:  # fmt: skip
        self.kv = torch.zeros(n_layer, 2, batch, n_head, capacity, head_dim, device=device, dtype=dtype)
        self.capacity = capacity
        self.length = 0
        self.plan: _StepPlan | None = None

    def reset(self) -> None:
        """Forget every position (the buffers are reused; stale entries are never attended to)."""
        self.length = 0


class _StepPlan:
    """Views and buffers for one-position steps of ``net`` on ``cache`` (see :meth:`Transformer._step`).

    Per layer: the weights as ``(in, out)`` views (``x @ W^T`` without a transpose per call), the
    biases, an output buffer for the fused q/k/v projection with views of its key/value part and
    its queries as ``(B * n_head, 1, head_dim)``, and, per position ``t``, the cache slot of ``t`` and
    the keys (transposed) and values of positions ``0 .. t``. Building it costs a few hundred views,
    about a millisecond, once per cache.
    """

    def __init__(self, net: Transformer, cache: KVCache) -> None:
        C, nh = net.n_embd, net.n_head
        d, B, cap = C // nh, cache.kv.shape[2], cache.capacity
        kv = cache.kv
        self.weight = net.tok_emb.weight  # to notice weights that moved (``.to``); a plan is per cache
        self.data_ptr = net.tok_emb.weight.data_ptr()
        self.batch, self.width, self.scale = B, C, 1.0 / math.sqrt(d)
        w = lambda t: None if t is None else t.detach()  # noqa: E731
        self.tok_w = w(net.tok_emb.weight)
        self.pos_rows = [w(net.pos_emb.weight)[i : i + 1] for i in range(cap)]
        self.cls_w = w(net.cls_emb.weight) if net.cls_emb is not None else None
        self.ln_f = (w(net.ln_f.weight), w(net.ln_f.bias), net.ln_f.eps)
        self.head_t = w(net.head.weight).t()
        scores = kv.new_zeros(B * nh, 1, cap)  # shapes baddbmm's output; beta=0 ignores its values
        self.scores = [scores[:, :, : t + 1] for t in range(cap)]
        self.layers = []
        for i, blk in enumerate(net.blocks):
            qkv = kv.new_empty(B, 3 * C)
            keys, values = kv[i, 0].view(B * nh, cap, d), kv[i, 1].view(B * nh, cap, d)
            q_src = qkv[:, :C].view(B, nh, d)
            q = q_src.view(B * nh, 1, d) if B == 1 else kv.new_empty(B * nh, 1, d)
            y = kv.new_empty(B * nh, 1, d)
            self.layers.append((
                w(blk.ln_1.weight), w(blk.ln_1.bias), blk.ln_1.eps,
                w(blk.attn.qkv.weight).t(), w(blk.attn.qkv.bias), qkv,
                [kv[i, :, :, :, t] for t in range(cap)],  # (2, B, h, d) slot of position t
                qkv[:, C:].view(B, 2, nh, d).transpose(0, 1),  # this step's keys/values, shaped like a slot
                None if B == 1 else q_src, q,
                [keys[:, : t + 1].transpose(1, 2) for t in range(cap)],  # (B h, d, t + 1)
                [values[:, : t + 1] for t in range(cap)],  # (B h, t + 1, d)
                y, y.view(B, C), w(blk.attn.proj.weight).t(), w(blk.attn.proj.bias),
                w(blk.ln_2.weight), w(blk.ln_2.bias), blk.ln_2.eps,
                w(blk.fc.weight).t(), w(blk.fc.bias), w(blk.fc_out.weight).t(), w(blk.fc_out.bias),
            ))  # fmt: skip

    def valid_for(self, net: Transformer) -> bool:
        return net.tok_emb.weight is self.weight and net.tok_emb.weight.data_ptr() == self.data_ptr


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: position ``t`` attends to positions ``<= t`` only.

    Args:
        n_embd: model width ``C`` (a multiple of ``n_head``).
        n_head: number of heads; each has ``C / n_head`` dimensions.
        dropout: dropout on the attention weights and on the output.
        bias: whether the projections have biases.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.n_head, self.head_dim, self.dropout = n_head, n_embd // n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.train_matmul_dtype: torch.dtype | None = None  # see Transformer

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """``(B, T, C) -> (B, T, C)``. With ``cache``, also attend to the ``cache.length`` positions
        before ``x`` and store this input's keys/values for layer ``layer``."""
        B, T, C = x.shape
        dtype = self.train_matmul_dtype if self.training else None
        qkv = _linear(x.view(B * T, C), self.qkv, dtype)  # 2-D: one GEMM call, no reshapes
        qkv = qkv.view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, T, d)
        q, k, v = qkv.unbind(0)
        mask, causal = None, True
        if cache is not None:
            start = cache.length
            end = start + T
            kv = cache.kv[layer]
            kv[:, :, :, start:end] = qkv[1:]
            k, v = kv[:, :, :, :end].unbind(0)
            if start > 0:  # queries at positions start..end-1 against keys 0..end-1
                causal = False
                if T > 1:
                    mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=start)
        p = self.dropout if self.training else 0.0
        if q.dtype in LOW_PRECISION and q.device.type == "cpu":  # see LOW_PRECISION
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                                   is_causal=causal, dropout_p=p).to(q.dtype)  # fmt: skip
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=p)
        y = _linear(y.transpose(1, 2).reshape(B * T, C), self.proj, dtype).view(B, T, C)
        return F.dropout(y, p, True) if p > 0 else y


def _linear(x: torch.Tensor, layer: nn.Linear, dtype: torch.dtype | None) -> torch.Tensor:
    """``layer(x)``, with input, weight and bias cast to ``dtype`` first unless it is ``None``."""
    if dtype is None:
        return F.linear(x, layer.weight, layer.bias)
    b = layer.bias
    return F.linear(x.to(dtype), layer.weight.to(dtype), None if b is None else b.to(dtype))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))`` with a 4x GELU MLP.

    Args: see :class:`CausalSelfAttention`; ``bias`` also applies to the LayerNorms and the MLP.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.fc_out = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.train_matmul_dtype: torch.dtype | None = None  # see Transformer

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """``(B, T, C) -> (B, T, C)``."""
        # functional calls on the submodules' parameters: the same maths, less per-call overhead
        attn = self.attn if cache is None else self.attn.forward  # see Transformer.forward_embeddings
        C = x.shape[-1]
        x = x + attn(F.layer_norm(x, (C,), self.ln_1.weight, self.ln_1.bias, self.ln_1.eps), cache, layer)
        h = F.layer_norm(x.view(-1, C), (C,), self.ln_2.weight, self.ln_2.bias, self.ln_2.eps)
        dtype = self.train_matmul_dtype if self.training else None
        h = _linear(F.gelu(_linear(h, self.fc, dtype), approximate="tanh"), self.fc_out, dtype).view_as(x)
        p = self.dropout if self.training else 0.0
        return x + (F.dropout(h, p, True) if p > 0 else h)


class Transformer(nn.Module):
    """GPT-style decoder-only transformer: token ids ``(B, T)`` to next-token logits ``(B, T, vocab_size)``.

    ``logits[:, t]`` parametrises ``P(x_{t+1} | x_{<=t})`` and depends on ``idx[:, :t+1]`` only.

    Args:
        vocab_size: number of token ids ``V``.
        block_size: most positions the model can attend over (size of the position table).
        n_layer, n_head, n_embd: depth, heads per layer and width ``C`` (``C % n_head == 0``).
        dropout: dropout on embeddings, attention weights and residual branches (0 at evaluation).
        bias: biases in the Linear layers and LayerNorms (``False`` drops them all).
        num_classes: when set, a learned class embedding is added at every position, so
            ``forward(idx, condition=y)`` models ``P(x | y)``.
        tie_weights: share the output layer's weight with the token embedding.
        train_matmul_dtype: in training mode, run the blocks' Linear layers in this precision (e.g.
            ``torch.bfloat16``: inputs, weights and biases cast, float32 master weights and gradients
            kept; LayerNorms, the residual stream, attention on CPU, the output layer and the loss stay
            in the model's precision). ``None``: the model's precision. Evaluation, scoring and sampling
            are unaffected. On a CPU with AMX, bfloat16 products are 3-7x faster than float32 ones at
            gpt_cpu's sizes (measured), without the casts and the slow bf16 attention of autocast.

    Raises:
        ConfigError: for non-positive sizes, ``n_embd`` not divisible by ``n_head``, or dropout
            outside ``[0, 1)``.
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        bias: bool = True,
        num_classes: int | None = None,
        tie_weights: bool = True,
        train_matmul_dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("block_size", block_size), ("n_layer", n_layer),
                            ("n_head", n_head), ("n_embd", n_embd)):  # fmt: skip
            positive_int(name, value)
        if n_embd % n_head:
            raise ConfigError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size, self.block_size = vocab_size, block_size
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.cls_emb = nn.Embedding(num_classes, n_embd) if num_classes else None
        self.dropout = dropout
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(self._init)
        for block in self.blocks:
            for proj in (block.attn.proj, block.fc_out):
                nn.init.normal_(proj.weight, 0.0, INIT_STD / math.sqrt(2 * n_layer))
        if tie_weights:
            self.head.weight = self.tok_emb.weight
        self.set_train_matmul_dtype(train_matmul_dtype)

    def set_train_matmul_dtype(self, dtype: torch.dtype | str | None) -> None:
        """Set ``train_matmul_dtype`` (a dtype, its name such as ``"bfloat16"``, or ``None``).

        Raises:
            ConfigError: for a name that is not a torch dtype.
        """
        if isinstance(dtype, str):
            name, dtype = dtype, getattr(torch, dtype, None)
            if not isinstance(dtype, torch.dtype):
                raise ConfigError(f"train_matmul_dtype must name a torch dtype (e.g. bfloat16), got {name!r}")
        self.train_matmul_dtype = dtype
        for block in self.blocks:
            block.train_matmul_dtype = block.attn.train_matmul_dtype = dtype

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, INIT_STD)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def new_cache(self, batch: int) -> KVCache:
        """An empty :class:`KVCache` for ``batch`` sequences of up to ``block_size`` positions."""
        p = self.tok_emb.weight
        head_dim = self.n_embd // self.n_head
        return KVCache(self.n_layer, batch, self.n_head, self.block_size, head_dim, p.device, p.dtype)

    def embed(self, idx: torch.Tensor, start: int = 0, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings ``(B, T, C)`` of token ids ``idx`` ``(B, T)`` at positions ``start .. start+T-1``.

        Raises:
            ConfigError: if the positions run past ``block_size``, or ``condition`` is given to an
                unconditional model (or missing from a conditional one).
        """
        T = idx.shape[1]
        if start + T > self.block_size:
            raise ConfigError(f"{start + T} positions exceed block_size={self.block_size}")
        h = F.embedding(idx, self.tok_emb.weight) + self.pos_emb.weight[start : start + T]
        bias = self.condition_bias(condition, idx.shape[0])
        return h if bias is None else h + bias[:, None, :]

    def condition_bias(self, condition: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The class embeddings ``(B, C)`` of ``condition`` ``(B,)``, or ``None`` for an unconditional model.

        Raises:
            ConfigError: if ``condition`` is given to an unconditional model or missing from a
                conditional one.
        """
        if self.cls_emb is not None:
            if condition is None:
                raise ConfigError("this transformer is class-conditional: pass condition (B,) class ids")
            return F.embedding(condition.view(batch), self.cls_emb.weight)
        if condition is not None:
            raise ConfigError("this transformer is unconditional; condition must be None")
        return None

    def forward_embeddings(
        self, h: torch.Tensor, cache: KVCache | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """Run the blocks on input embeddings ``h`` ``(B, T, C)``; returns logits ``(B, T, V)``
        (``(B, 1, V)`` for the last position only with ``last_only``). Advances ``cache.length`` by ``T``."""
        if self.training and self.dropout > 0:
            h = F.dropout(h, self.dropout, True)
        for i, block in enumerate(self.blocks):
            # a cached decoding step (one position) is bound by per-call overhead: there, call forward
            # directly and skip nn.Module's hook dispatch (module hooks do not run while decoding)
            h = block.forward(h, cache, i) if cache is not None else block(h)
        if cache is not None:
            cache.length += h.shape[1]
        if last_only:
            h = h[:, -1:]
        h = F.layer_norm(h, (self.n_embd,), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)
        return F.linear(h, self.head.weight)

    def forward(
        self,
        idx: torch.Tensor,
        condition: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Next-token logits for token ids ``idx`` ``(B, T)`` (int64 in ``[0, V)``): ``(B, T, V)``.

        With ``cache``, ``idx`` continues the cached positions (it sits at positions
        ``cache.length ..``); without, it starts at position 0.
        """
        if cache is not None and idx.shape[1] == 1 and not self.training and not torch.is_grad_enabled():
            return self._step(idx, condition, cache)
        start = cache.length if cache is not None else 0
        return self.forward_embeddings(self.embed(idx, start, condition), cache, last_only)

    def _step(self, idx: torch.Tensor, condition: torch.Tensor | None, cache: KVCache) -> torch.Tensor:
        """:meth:`forward` for one new position ``idx`` ``(B, 1)`` with ``cache``, in eval mode without
        gradients: logits ``(B, 1, V)``, the same maths as the general path (up to float rounding).

        A decoding step of a small model is bound by per-call overhead, not arithmetic: here each
        layer is eleven tensor calls on views made once per cache (:class:`_StepPlan`), with no
        masks, reshapes, transposes or ``nn.Module`` dispatch, and the residual additions fused
        into the output projections (``x.addmm_``).
        """
        pos = cache.length
        if pos + 1 > self.block_size:
            raise ConfigError(f"{pos + 1} positions exceed block_size={self.block_size}")
        plan = cache.plan
        if plan is None or not plan.valid_for(self):
            plan = cache.plan = _StepPlan(self, cache)
        B, C = plan.batch, plan.width
        if B == 1:
            x = torch.add(plan.tok_w.narrow(0, int(idx), 1), plan.pos_rows[pos])
        else:
            x = torch.index_select(plan.tok_w, 0, idx.view(B)).add_(plan.pos_rows[pos])
        bias = self.condition_bias(condition, B)
        if bias is not None:
            x.add_(bias)
        shape, scale, scores = (C,), plan.scale, plan.scores[pos]
        for (w1, b1, e1, wqkv, bqkv, qkv, slots, kv_new, q_src, q, keys, values, y, y2, wp, bp,
             w2, b2, e2, wfc, bfc, wo, bo) in plan.layers:  # fmt: skip
            h = torch.layer_norm(x, shape, w1, b1, e1)
            if bqkv is None:
                torch.mm(h, wqkv, out=qkv)
            else:
                torch.addmm(bqkv, h, wqkv, out=qkv)
            slots[pos].copy_(kv_new)
            if q_src is not None:
                q.view_as(q_src).copy_(q_src)
            att = torch.softmax(torch.baddbmm(scores, q, keys[pos], beta=0.0, alpha=scale), -1)
            torch.bmm(att, values[pos], out=y)
            x.addmm_(y2, wp)
            if bp is not None:
                x.add_(bp)
            h = torch.layer_norm(x, shape, w2, b2, e2)
            h = torch.mm(h, wfc) if bfc is None else torch.addmm(bfc, h, wfc)
            x.addmm_(F.gelu(h, approximate="tanh"), wo)
            if bo is not None:
                x.add_(bo)
        cache.length = pos + 1
        wf, bf, ef = plan.ln_f
        return torch.mm(torch.layer_norm(x, shape, wf, bf, ef), plan.head_t).view(B, 1, -1)


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Keep the ``top_k`` largest logits and/or the nucleus of mass ``top_p``; set the rest to ``-inf``.

    ``logits`` is ``(B, V)``. ``top_k`` larger than ``V`` is clamped to ``V``. The nucleus
    (Holtzman et al. 2020, Eq. 2) is the smallest set of most likely tokens whose probability sum
    reaches ``top_p``; the most likely token is always kept.

    Raises:
        ConfigError: for ``top_k < 1`` or ``top_p`` outside ``(0, 1]``.
    """
    if top_k is not None:
        if top_k < 1:
            raise ConfigError(f"top_k must be >= 1 (or null), got {top_k}")
        k = min(int(top_k), logits.shape[-1])
        if k < logits.shape[-1]:
            kth = torch.topk(logits, k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        if not 0.0 < top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1] (or null), got {top_p}")
        if top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
            probs = sorted_logits.softmax(-1)
            drop = probs.cumsum(-1) - probs >= top_p  # mass before this token already reaches top_p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def gumbel_noise(
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Standard Gumbel draws ``-log E``, ``E ~ Exp(1)`` clamped to the smallest normal float (so finite)."""
    e = torch.empty(shape, device=device, dtype=dtype).exponential_(generator=generator)
    return e.clamp_(min=torch.finfo(e.dtype).tiny).log_().neg_()


def next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one token per row from ``softmax(logits / temperature)`` after :func:`filter_logits`.

    ``logits`` is ``(B, V)``; returns ``(B,)`` int64. ``temperature <= 0`` is greedy (the argmax,
    no randomness). The draw is the Gumbel-max trick (Gumbel 1954; Maddison et al. 2014):
    ``argmax_i (l_i + G_i)`` with ``G_i`` independent standard Gumbel draws is ``i`` with probability
    ``softmax(l)_i``; a filtered logit (``-inf``) is never drawn. ``noise`` ``(B, V)`` gives the
    ``G`` (:func:`gumbel_noise`), else they are drawn from ``generator``.
    """
    return _pick(logits, temperature, top_k, top_p, noise, generator)[:, 0]


def _pick(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    noise: torch.Tensor | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`next_token` as ``(B, 1)`` (the next step's input)."""
    if temperature <= 0:
        return logits.argmax(-1, keepdim=True)
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None or top_p is not None:
        logits = filter_logits(logits, top_k, top_p)
    if noise is None:
        noise = gumbel_noise(logits.shape, generator, logits.device, logits.dtype)
    return torch.add(logits, noise).argmax(-1, keepdim=True)


@torch.inference_mode()
def generate(
    net: Transformer,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    condition: torch.Tensor | None = None,
    use_cache: bool = True,
    keep: int | None = None,
) -> torch.Tensor:
    """Extend ``idx`` ``(B, P)`` by ``max_new_tokens`` tokens drawn one at a time: ``(B, P + max_new_tokens)``.

    Each token is drawn from ``P(x_t | context)`` (:func:`next_token`), where the context is the
    most recent tokens, at most ``block_size`` of them, at positions ``0, 1, ...``.

    The context window: it starts with the last ``min(P, block_size)`` prompt tokens and grows by
    one token per step. With the key/value cache (``use_cache=True``), a step costs one position.
    When the window would exceed ``block_size``, it jumps: it restarts from the last ``keep``
    tokens (default ``block_size // 2``), which are encoded again in one pass (positions move, so
    the cached keys/values are stale); then it grows again. So contexts hold between ``keep`` and
    ``block_size`` tokens and a re-encode happens once every ``block_size - keep + 1`` tokens.
    ``keep = block_size`` is the classic sliding window (always the last ``block_size`` tokens, a
    full re-encode per token). ``use_cache=False`` recomputes the whole window for every token,
    following the same window schedule: for the same ``generator`` state both give the same tokens.

    Args:
        net: the transformer (put it in ``eval()`` mode first).
        idx: ``(B, P)`` int64 prompt, ``P >= 1``.
        max_new_tokens: tokens to add (``>= 0``).
        temperature, top_k, top_p: see :func:`next_token` and :func:`filter_logits`.
        generator: random source of the draws (``None``: the global one).
        condition: ``(B,)`` class ids for a class-conditional transformer.
        use_cache: use the key/value cache.
        keep: window length after a jump, in ``[1, block_size]``.

    Raises:
        ConfigError: for an empty prompt, negative ``max_new_tokens`` or ``keep`` out of range.
    """
    T = net.block_size
    keep = max(1, T // 2) if keep is None else keep
    if not 1 <= keep <= T:
        raise ConfigError(f"keep must be in [1, block_size={T}], got {keep}")
    if idx.ndim != 2 or idx.shape[1] < 1:
        raise ConfigError(f"generate needs a (B, P) prompt with P >= 1 tokens, got shape {tuple(idx.shape)}")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    B, P = idx.shape
    out = torch.empty(B, P + max_new_tokens, dtype=torch.long, device=idx.device)
    out[:, :P] = idx
    if max_new_tokens == 0:
        return out
    V, sample = net.vocab_size, temperature > 0
    per_draw = max(1, min(max_new_tokens, NOISE_ELEMENTS // (B * V)))  # steps of noise drawn at once
    noise: tuple[torch.Tensor, ...] = ()
    start, cur = max(0, P - T), P  # the window is out[:, start:cur]
    cache = net.new_cache(B) if use_cache else None
    logits = net(out[:, start:cur], condition, cache, last_only=True)
    pending: list[torch.Tensor] = []  # cached path: tokens drawn, not yet written to out (they end at cur)
    for step in range(max_new_tokens):
        if sample and step % per_draw == 0:
            shape = (min(per_draw, max_new_tokens - step), B, V)
            noise = gumbel_noise(shape, generator, logits.device, logits.dtype).unbind(0)
        tok = _pick(logits[:, -1], temperature, top_k, top_p, noise[step % per_draw] if sample else None)
        cur += 1
        if cache is None:
            out[:, cur - 1 : cur] = tok
        else:
            pending.append(tok)
        if step == max_new_tokens - 1:
            break
        jump = cur - start > T  # the newest token does not fit: restart the window from the last `keep`
        if jump:
            start = cur - keep
        if cache is None:
            logits = net(out[:, start:cur], condition, last_only=True)
        elif jump:  # positions move, so the cached keys/values are stale: encode the new window
            out[:, cur - len(pending) : cur] = torch.cat(pending, 1)
            pending.clear()
            cache.reset()
            logits = net(out[:, start:cur], condition, cache, last_only=True)
        else:
            logits = net.forward(tok, condition, cache)  # one position (Transformer._step)
    if pending:
        out[:, cur - len(pending) : cur] = torch.cat(pending, 1)
    return out
