"""GPT recipe check: validation loss of ``experiment=gpt_shakespeare_cpu`` against an independent reference.

The recipe: ``gpt_cpu`` (4 layers, 4 heads, 128 wide, context 64, no biases, no dropout), 2,000 steps
of batch 12, AdamW (betas (0.9, 0.99), weight decay 0.1 on matrices), learning rate 1e-3 with 100
warm-up steps and cosine decay to 1e-4, gradient clipping at 1.0, the first 90% of tiny-shakespeare
for training and the last 10% for validation. Side by side, on the same training batches:

* ``genlab``: :class:`~genlab.models.gpt.GPT` trained by ``lightning.Trainer.fit`` as the CLI runs the
  recipe: the whole validation split scored every 250 steps (8 times), a checkpoint kept, text samples
  after each validation; :class:`~genlab.bench.timing.PhaseTimer` splits its wall time into optimizer
  steps, validations and the rest;
* ``genlab_bf16_matmuls``: the same with the blocks' Linear layers in bfloat16 during training
  (``Transformer.set_train_matmul_dtype``; float32 master weights, evaluation in float32);
* ``reference``: the same architecture assembled from ``torch.nn.TransformerEncoderLayer``
  (pre-norm, causal mask, no biases, tied output layer, GPT-2 initialisation, exact rather than tanh
  GELU) in a plain loop.

Both are scored in nats per character over the **whole** validation split (every character once,
:meth:`~genlab.data.text.TextDataModule.eval_batches`). For comparison with figures published for
this recipe, the genlab model is also scored the way small training scripts often report it: the mean
over 20 random batches of 12 windows, drawn ``draws`` times, giving that estimate's mean and spread.
"""

from __future__ import annotations

import math
import tempfile
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from genlab.bench.data import SHARED
from genlab.bench.timing import PhaseTimer
from genlab.callbacks.text import TextSamples
from genlab.data.text import IGNORE, TextDataModule
from genlab.models.gpt import GPT
from genlab.models.schedules import warmup_cosine

RECIPE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0, "bias": False,
          "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 100, "betas": (0.9, 0.99), "weight_decay": 0.1}  # fmt: skip
BATCH, CLIP, PUBLISHED, VAL_EVERY = 12, 1.0, 1.886, 250


def genlab_gpt(spec: dict, steps: int, recipe: dict = RECIPE) -> GPT:
    """The recipe's :class:`GPT` (AdamW, warm-up then cosine to ``min_lr`` at ``steps``)."""
    r = recipe
    return GPT(
        spec, n_layer=r["n_layer"], n_head=r["n_head"], n_embd=r["n_embd"], block_size=r["block_size"],
        dropout=r["dropout"], bias=r["bias"], lr=r["lr"], weight_decay=r["weight_decay"],
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "betas": list(r["betas"])},
        scheduler={"_target_": "genlab.models.schedules.warmup_cosine_schedule", "_partial_": True,
                   "warmup_steps": r["warmup_steps"], "min_lr": r["min_lr"], "total_steps": steps},
    )  # fmt: skip


class ReferenceGPT(nn.Module):
    """The ``gpt_cpu`` architecture from torch's own layers: token ids ``(B, T)`` to logits ``(B, T, V)``."""

    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, n_embd: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        layer = nn.TransformerEncoderLayer(n_embd, n_head, 4 * n_embd, 0.0, activation="gelu", batch_first=True,
                                           norm_first=True, bias=False)  # fmt: skip
        self.blocks = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(n_embd, bias=False)
        self.out = nn.Linear(n_embd, vocab_size, bias=False)
        for name, p in self.named_parameters():  # GPT-2: N(0, 0.02^2), residual projections / sqrt(2 L)
            if p.ndim >= 2:
                residual = name.endswith(("out_proj.weight", "linear2.weight"))
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer) if residual else 0.02)
        self.out.weight = self.tok.weight
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(block_size), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        h = self.tok(idx) + self.pos.weight[:T]
        return self.out(self.norm(self.blocks(h, mask=self.mask[:T, :T], is_causal=True)))


@torch.no_grad()
def split_nats(logits_fn, x: torch.Tensor, y: torch.Tensor, chunk: int = 512) -> float:
    """Mean next-token NLL in nats over every scored target of ``(x, y)`` ``(N, T)`` (``y == -1`` skipped)."""
    total, count = 0.0, int((y != IGNORE).sum())
    for i in range(0, len(x), chunk):
        logits = logits_fn(x[i : i + chunk])
        total += float(F.cross_entropy(logits.flatten(0, 1), y[i : i + chunk].reshape(-1), ignore_index=IGNORE,
                                       reduction="sum"))  # fmt: skip
    return total / count


def _train_reference(dm: TextDataModule, steps: int, seed: int) -> ReferenceGPT:
    torch.manual_seed(seed)
    r = RECIPE
    model = ReferenceGPT(dm.spec.levels, r["block_size"], r["n_layer"], r["n_head"], r["n_embd"])
    params = list(model.parameters())  # tied weights appear once
    opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": r["weight_decay"]},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
        lr=r["lr"], betas=r["betas"],
    )  # fmt: skip
    loader = dm.train_dataloader()  # one loader, iterated once per epoch as the Trainer does: the same batches
    batches = (batch for _ in iter(int, 1) for batch in loader)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = r["lr"] * warmup_cosine(step, r["warmup_steps"], steps, r["min_lr"] / r["lr"])
        x, y = next(batches)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
    return model.eval()


def _train_genlab(dm: TextDataModule, steps: int, seed: int, matmul_dtype: str | None = None) -> tuple[GPT, dict]:
    """Train as the CLI does (validation every ``VAL_EVERY`` steps, a checkpoint, text samples); returns the
    model and :meth:`PhaseTimer.split` of the run (from building the model to the end of the fit)."""
    start = time.perf_counter()
    L.seed_everything(seed, verbose=False)
    model = genlab_gpt(dm.spec.to_dict(), steps)
    model.net.set_train_matmul_dtype(matmul_dtype)
    timer = PhaseTimer()
    with tempfile.TemporaryDirectory() as tmp:
        callbacks = [timer, L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp, monitor="val/loss", save_last=True),
                     TextSamples(tmp, num_samples=4, every_n_val=1, seed=seed)]  # fmt: skip
        trainer = L.Trainer(
            max_steps=steps, max_epochs=-1, val_check_interval=min(VAL_EVERY, steps), check_val_every_n_epoch=None,
            num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
            accelerator="cpu", devices=1, gradient_clip_val=CLIP, callbacks=callbacks, log_every_n_steps=50,
        )  # fmt: skip
        trainer.fit(model, datamodule=dm)
    return model.eval(), timer.split(time.perf_counter() - start)


@torch.no_grad()
def random_batch_estimates(model: GPT, val: torch.Tensor, draws: int, seed: int = 0) -> torch.Tensor:
    """``(draws,)`` estimates of the validation loss, each the mean over 20 random batches of 12 windows."""
    g = torch.Generator().manual_seed(seed)
    T = model.block_size
    offsets = torch.arange(T + 1)
    out = []
    for _ in range(draws):
        starts = torch.randint(0, len(val) - T, (20 * BATCH,), generator=g)
        w = val[starts[:, None] + offsets]
        nll = model.token_nll(w[:, :-1], w[:, 1:]).view(20, BATCH * T).mean(1)  # per-batch losses
        out.append(float(nll.mean()))
    return torch.tensor(out)


def run(quick: bool = False) -> dict:
    """Train both sides for 2,000 steps (100 with ``quick``) and return their whole-split validation losses."""
    path = SHARED / "data" / "tinyshakespeare" / "input.txt"
    if not path.is_file():
        return {"skipped": f"{path} is missing (set GENLAB_SHARED to the folder holding data/tinyshakespeare)"}
    steps, seed, draws = (100, 0, 20) if quick else (2000, 0, 200)
    dm = TextDataModule(path=str(path), block_size=RECIPE["block_size"], batch_size=BATCH, splits=[0.9, 0.1, 0.0],
                        seed=seed)  # fmt: skip
    dm.setup("fit")
    x, y = dm.eval_batches("val")
    results: dict[str, dict] = {}
    contenders = (("genlab", lambda: _train_genlab(dm, steps, seed)),
                  ("genlab_bf16_matmuls", lambda: _train_genlab(dm, steps, seed, "bfloat16")),
                  ("reference", lambda: (_train_reference(dm, steps, seed), None)))  # fmt: skip
    for name, train in contenders:
        start = time.perf_counter()
        model, split = train()
        seconds = time.perf_counter() - start
        logits_fn = model.forward if isinstance(model, GPT) else model
        results[name] = {"val_nats_per_char": round(split_nats(logits_fn, x, y), 4), "train_seconds": round(seconds, 1)}
        if split is not None:
            results[name]["time_split"] = split
        if name == "genlab":
            est = random_batch_estimates(model, dm.split_ids("val"), draws)
            results[name]["random_20_batch_estimate"] = {
                "draws": draws, "mean": round(float(est.mean()), 4), "std": round(float(est.std()), 4),
                f"fraction_at_or_below_{PUBLISHED}": round(float((est <= PUBLISHED).float().mean()), 3),
            }  # fmt: skip
    val = {k: v["val_nats_per_char"] for k, v in results.items()}
    ms = {k: results[k]["time_split"]["ms_per_step"] for k in ("genlab", "genlab_bf16_matmuls")}
    split = results["genlab"]["time_split"]
    return {
        "headline": {
            "val_nats_per_char": val,
            "ms_per_step": ms,
            "step_speedup_bf16_matmuls": round(ms["genlab"] / ms["genlab_bf16_matmuls"], 3),
            "time_split_fraction_genlab": split["fraction"],
            "seconds_per_validation_genlab": split["seconds_per_validation"],
        },
        "data": "tiny-shakespeare, first 90% train, last 10% validation (whole split scored)",
        "steps": steps,
        "seed": seed,
        "torch_threads": torch.get_num_threads(),
        "val_nats_per_char": val,
        "difference_genlab_minus_reference": round(val["genlab"] - val["reference"], 4),
        "difference_bf16_matmuls_minus_genlab": round(val["genlab_bf16_matmuls"] - val["genlab"], 4),
        "ms_per_step": ms,
        "step_speedup_bf16_matmuls": round(ms["genlab"] / ms["genlab_bf16_matmuls"], 3),
        "time_split_fraction": {k: results[k]["time_split"]["fraction"] for k in ("genlab", "genlab_bf16_matmuls")},
        "details": results,
    }
