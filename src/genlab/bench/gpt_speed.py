"""GPT speed: training tokens/s of ``gpt_cpu`` and generation tokens/s with and without the key/value cache.

One process, side by side (twice each, interleaved, best kept), on tiny-shakespeare from
``../shared`` (a synthetic text when it is missing):

* training, batch 12 x block 64, fused AdamW + warm-up/cosine schedule + gradient clipping at 1.0:
  ``lightning`` (``Trainer.fit`` on :class:`~genlab.data.text.TextDataModule`) against ``plain`` (a
  hand-written loop over the same batches, the baseline), each in float32 and with the blocks' Linear
  layers in bfloat16 during training (``*_bf16_matmuls``, ``Transformer.set_train_matmul_dtype``);
  reported as ms per step and the speed-up of each over ``plain`` (float32);
* generation of 500 new tokens for one sequence from a newline: ``kv_cache`` (one position per
  token, the window jumps back to ``block_size // 2`` tokens when full), ``no_cache_same_window``
  (full recompute on the same window schedule: the same tokens, checked) and
  ``no_cache_sliding_window`` (full recompute of the last ``block_size`` tokens per token, the
  classic sampler).

Reported: tokens/s, ms per training iteration, and the ratios.
"""

from __future__ import annotations

import time

import lightning as L
import torch

from genlab.bench.data import SHARED
from genlab.bench.gpt_recipe import RECIPE, genlab_gpt
from genlab.bench.timing import StepTimer
from genlab.data.text import TextDataModule
from genlab.models.gpt import GPT

BATCH, BLOCK, NEW_TOKENS = 12, 64, 500
GPT_CPU = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": BLOCK, "dropout": 0.0, "bias": False}


def _datamodule(tmp: str) -> tuple[TextDataModule, str]:
    path = SHARED / "data" / "tinyshakespeare" / "input.txt"
    name = "tiny-shakespeare"
    if not path.is_file():
        g = torch.Generator().manual_seed(0)
        letters = "abcdefghij \n"
        text = "".join(letters[i] for i in torch.randint(0, len(letters), (200_000,), generator=g).tolist())
        path = f"{tmp}/synthetic.txt"
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        name = "synthetic"
    dm = TextDataModule(path=str(path), block_size=BLOCK, batch_size=BATCH, splits=[0.9, 0.1, 0.0])
    dm.setup("fit")
    return dm, name


def _model(dm: TextDataModule, matmul_dtype: str | None = None) -> GPT:
    torch.manual_seed(0)
    model = genlab_gpt(dm.spec.to_dict(), 2000, {**RECIPE, **GPT_CPU})
    model.net.set_train_matmul_dtype(matmul_dtype)
    return model


def _lightning(dm: TextDataModule, steps: int, warmup: int, matmul_dtype: str | None = None) -> float:
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_steps=steps + warmup, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", devices=1, gradient_clip_val=1.0, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(_model(dm, matmul_dtype), datamodule=dm)
    return steps * BATCH * BLOCK / (timer.end - timer.start)


def _plain(dm: TextDataModule, steps: int, warmup: int, matmul_dtype: str | None = None) -> float:
    model = _model(dm, matmul_dtype)
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    model.train()
    it = iter(dm.train_dataloader())
    start = 0.0
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        x, y = next(it)
        sums, counts = model.score(x, y, "train")
        loss = sums["loss"].sum() / counts.sum().clamp(min=1)  # as GenerativeModel.training_step
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return steps * BATCH * BLOCK / (time.perf_counter() - start)


def _generate(model: GPT, n: int, **kw) -> tuple[float, torch.Tensor]:
    prompt = torch.full((1, 1), model.start_id, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    out = model.generate(prompt, n, generator=g, **kw)
    return n / (time.perf_counter() - start), out


def run(quick: bool = False) -> dict:
    """Measure and return ``{"train_tokens_per_s": {...}, "generate_tokens_per_s": {...}, ...}``."""
    import tempfile

    steps, warmup = (20, 5) if quick else (100, 10)
    n_new = 100 if quick else NEW_TOKENS
    with tempfile.TemporaryDirectory() as tmp:
        dm, data_name = _datamodule(tmp)
        train: dict[str, float] = {}
        contenders = (
            ("lightning", _lightning, None),
            ("plain", _plain, None),
            ("lightning_bf16_matmuls", _lightning, "bfloat16"),
            ("plain_bf16_matmuls", _plain, "bfloat16"),
        )
        for _ in range(2):
            for name, fn, dtype in contenders:
                train[name] = max(train.get(name, 0.0), fn(dm, steps, warmup, dtype))
        model = _model(dm).eval()
    gen: dict[str, float] = {}
    outs: dict[str, torch.Tensor] = {}
    contenders = {
        "kv_cache": {"use_cache": True},
        "no_cache_same_window": {"use_cache": False},
        "no_cache_sliding_window": {"use_cache": False},
    }
    for _ in range(2):
        for name, kw in contenders.items():
            if name == "no_cache_sliding_window":
                model.sample_keep = BLOCK
            rate, outs[name] = _generate(model, n_new, **kw)
            model.sample_keep = None
            gen[name] = max(gen.get(name, 0.0), rate)
    tokens_per_step = BATCH * BLOCK
    ms = {k: round(1000 * tokens_per_step / v, 2) for k, v in train.items()}
    return {
        "headline": {
            "sampler_speedup_kv_cache_vs_sliding_window": round(gen["kv_cache"] / gen["no_cache_sliding_window"], 2),
            "train_ms_per_step": {k: ms[k] for k in ("plain", "lightning", "lightning_bf16_matmuls")},
            "train_step_speedup_bf16_matmuls_lightning": round(train["lightning_bf16_matmuls"] / train["lightning"], 3),
        },
        "data": data_name,
        "model": "gpt_cpu: 4 layers, 4 heads, 128 wide, block 64, no biases",
        "num_params": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
        "train": {
            "batch": f"{BATCH} x {BLOCK} tokens",
            "timed_steps": steps,
            "tokens_per_s": {k: round(v, 1) for k, v in train.items()},
            "ms_per_iter": ms,
            "ratio_vs_plain": {k: round(v / train["plain"], 3) for k, v in train.items()},
            "step_speedup_bf16_matmuls": {
                "lightning": round(train["lightning_bf16_matmuls"] / train["lightning"], 3),
                "plain": round(train["plain_bf16_matmuls"] / train["plain"], 3),
            },
        },
        "generate": {
            "new_tokens": n_new,
            "batch": 1,
            "tokens_per_s": {k: round(v, 1) for k, v in gen.items()},
            "cache_speedup_vs_same_window": round(gen["kv_cache"] / gen["no_cache_same_window"], 2),
            "cache_speedup_vs_sliding_window": round(gen["kv_cache"] / gen["no_cache_sliding_window"], 2),
            "same_tokens_with_and_without_cache": bool(torch.equal(outs["kv_cache"], outs["no_cache_same_window"])),
        },
    }
