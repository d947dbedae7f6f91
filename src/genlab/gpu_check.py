"""GPU check: ``python -m genlab.gpu_check`` (``make gpu-check``), meant to finish well under two minutes.

Trains one tiny model of each family through the real CLI (``python -m genlab.train``, one subprocess per run):
``classical`` (``model=ppca``, fitted in one pass on Lightning Fabric), ``vae`` (``model=vae_mlp``), ``pixelcnn``
(``model=pixelcnn``) on scikit-learn's bundled digits, and ``gpt`` (``model=gpt_tiny``) on a small text written from
a fixed seed, so nothing is downloaded. Each family runs first on the CPU (``trainer=cpu``, the reference) and then in
three GPU modes: ``gpu`` (``trainer=gpu``, fp32), ``bf16`` (``trainer=gpu trainer.precision=bf16-mixed``) and
``ddp`` (``trainer=ddp`` on the visible GPUs; with several, each process gets ``data.batch_size / devices`` so the
global batch is the CPU run's). Every compared ``metrics.json`` number must lie within a relative tolerance of the
CPU's (:data:`FAMILIES`): tight for the closed-form fit, a few percent for the trained models, whose random numbers
(reparameterisation noise on the device, kernels in another order, TF32 matmuls) differ from the CPU's.

Prints a table (family, mode, metric, cpu, value, rel diff, tolerance, PASS/FAIL, seconds), writes it to a JSON file
(``--out``, default ``outputs/gpu_check/<timestamp>.json``) and exits 1 if any row fails or any run fails, else 0.
Without a GPU (``torch.cuda.is_available()`` false) it prints ``gpu-check skipped: no GPU`` and exits 0.
``--accelerator cpu`` runs the same modes with the CPU standing in for the GPU (gloo for DDP), to test this script
on a machine without one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MODES = ("gpu", "bf16", "ddp")  # compared with the CPU reference, "cpu"
QUIET = ("logger=csv", "callbacks.rich_progress_bar=null", "evaluation=none")


@dataclass(frozen=True)
class Family:
    """One tiny model: its Hydra overrides, the ``metrics.json`` keys compared, and a relative tolerance per mode.

    ``batch_size`` is ``data.batch_size``; DDP on ``n`` devices runs ``batch_size // n`` per process.
    ``text`` says the family trains on the generated text file (``data.path`` is added).
    """

    name: str
    overrides: tuple[str, ...]
    metrics: tuple[str, ...]
    rtol: dict[str, float]
    batch_size: int = 64
    text: bool = False


FAMILIES: dict[str, Family] = {
    # closed form from float64 moments: the same data gives the same fit up to rounding. Under DDP with several
    # processes each shard draws its own dequantization noise (1e-3 apart on 2 CPU processes), hence 3e-3.
    "classical": Family(
        "classical",
        ("model=ppca", "model.latent_dim=8", "data.representation=dequantized"),
        ("test/nll_nats", "test/recon_mse"),
        {"gpu": 1e-3, "bf16": 1e-3, "ddp": 3e-3},
    ),
    # trained from the same initial weights; the GPU's reparameterisation and IWAE noise differ from the CPU's.
    # Measured on the CPU with other seeds (other weights and noise): test NLLs 1.3% apart (vae, gpt), 3.8% (pixelcnn)
    "vae": Family(
        "vae",
        tuple(
            "model=vae_mlp model.encoder.hidden_dims=[64] model.decoder.hidden_dims=[64] model.latent_dim=8 "
            "model.iwae_k=10 trainer.max_epochs=5".split()
        ),
        ("test/nll_nats", "test/loss"),  # the IWAE bound and the negative ELBO, nats per image
        {"gpu": 0.05, "bf16": 0.08, "ddp": 0.05},
    ),
    "pixelcnn": Family(
        "pixelcnn",
        tuple(
            "model=pixelcnn model.hidden_channels=16 model.num_layers=3 model.head_channels=32 "
            "trainer.max_epochs=2".split()
        ),
        ("test/nll_nats",),  # exact, nats per image
        {"gpu": 0.03, "bf16": 0.05, "ddp": 0.03},
    ),
    "gpt": Family(
        "gpt",
        tuple(
            "model=gpt_tiny data=shakespeare data.download=false data.eval_batch_size=256 "
            "data.train_batches_per_epoch=50 trainer.max_steps=200 callbacks.early_stopping=null".split()
        ),
        ("test/nats_per_char",),
        {"gpu": 0.03, "bf16": 0.05, "ddp": 0.03},
        batch_size=16,
        text=True,
    ),
}


@dataclass
class Run:
    """One ``python -m genlab.train`` run: what it was given and what it wrote (``metrics`` is ``None`` on failure)."""

    family: str
    mode: str
    overrides: list[str]
    run_dir: Path
    seconds: float = 0.0
    returncode: int | None = None
    metrics: dict[str, Any] | None = None
    error: str = ""
    log_tail: str = field(default="", repr=False)


def write_text(path: Path, chars: int = 30_000, seed: int = 0) -> Path:
    """Write about ``chars`` characters of lower-case sentences drawn from a fixed word list by ``random.Random(seed)``
    (the same bytes on every machine) to ``path``; returns ``path``."""
    words = ("the", "a", "king", "queen", "sword", "crown", "night", "day", "speaks", "runs", "falls", "and", "of",
             "my", "lord", "sweet", "hath", "thou", "not", "love", "fair", "death", "comes", "here", "now")  # fmt: skip
    rng, lines, size = random.Random(seed), [], 0
    while size < chars:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + rng.choice((".", ",", "!", "?"))
        lines.append(line)
        size += len(line) + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def free_port() -> int:
    """A TCP port on localhost that is free now (for ``MASTER_PORT`` of one DDP run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mode_overrides(family: Family, mode: str, devices: int, accelerator: str = "gpu") -> list[str]:
    """The trainer and data overrides of ``mode`` (``cpu``, ``gpu``, ``bf16`` or ``ddp`` on ``devices`` processes).

    ``accelerator="cpu"`` keeps each mode's trainer config but runs it on the CPU (DDP then uses gloo).

    Raises:
        ValueError: for an unknown mode, or ``devices`` < 1.
    """
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    batch = [f"data.batch_size={family.batch_size}"]
    if mode == "cpu":
        return ["trainer=cpu", *batch]
    if mode == "gpu":
        out = ["trainer=gpu", *batch]
    elif mode == "bf16":
        out = ["trainer=gpu", "trainer.precision=bf16-mixed", *batch]
    elif mode == "ddp":
        out = ["trainer=ddp", f"trainer.devices={devices}", f"data.batch_size={max(1, family.batch_size // devices)}"]
    else:
        raise ValueError(f"unknown mode {mode!r}; choose cpu or one of {MODES}")
    return out + (["trainer.accelerator=cpu"] if accelerator == "cpu" else [])


def run_train(run: Run, root: Path, timeout: float, threads: int = 1) -> Run:
    """Run ``python -m genlab.train`` with ``run.overrides`` into ``run.run_dir`` (outputs under ``root``) and fill in
    ``seconds``, ``returncode``, ``metrics`` (the parsed ``metrics.json`` when the run exited 0 with status ``ok``)
    or ``error`` and ``log_tail``. ``threads`` is its ``OMP_NUM_THREADS`` (tiny models run as fast on one, and
    concurrent runs never oversubscribe the cores). Never raises for a failed run; returns ``run``."""
    env = {**os.environ, "GENLAB_ROOT": str(root), "GENLAB_DATA_DIR": str(root / "data"),
           "GENLAB_CACHE_DIR": str(root / "cache"), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(threads)}  # fmt: skip
    if run.mode == "ddp":  # concurrent DDP runs must not share a rendezvous port
        env["MASTER_PORT"] = str(free_port())
    cmd = [sys.executable, "-m", "genlab.train", *run.overrides, f"hydra.run.dir={run.run_dir}"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        run.returncode, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:  # its partial output may be bytes even with text=True
        parts = [p.decode(errors="replace") if isinstance(p, bytes) else p or "" for p in (e.stdout, e.stderr)]
        run.returncode, output, run.error = None, "".join(parts), f"timed out after {timeout:.0f} s"
    run.seconds = time.perf_counter() - start
    run.log_tail = output[-3000:]
    path = run.run_dir / "metrics.json"
    if run.returncode == 0 and path.is_file():
        record = json.loads(path.read_text())
        if record.get("status") == "ok":
            run.metrics = record
        else:
            run.error = f"status {record.get('status')}: {record.get('reason', '')}"
    elif not run.error:
        run.error = f"exit {run.returncode}" + ("" if path.is_file() else ", no metrics.json")
    return run


def compare(cpu: dict[str, Any], other: dict[str, Any], keys: tuple[str, ...] | list[str], rtol: float,
            atol: float = 1e-8) -> list[dict[str, Any]]:  # fmt: skip
    """One row per key: ``{"metric", "cpu", "value", "rel_diff", "rtol", "passed"}``.

    ``rel_diff = |value - cpu| / max(|cpu|, atol)``; a row passes when ``|value - cpu| <= atol + rtol * |cpu|`` and
    both numbers are finite. A key missing from either dict (or not a number) gives ``None`` values and fails.
    """
    rows = []
    for key in keys:
        a, b = cpu.get(key), other.get(key)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        if not numbers or not (math.isfinite(a) and math.isfinite(b)):
            rows.append({"metric": key, "cpu": a if numbers else None, "value": b if numbers else None,
                         "rel_diff": None, "rtol": rtol, "passed": False})  # fmt: skip
            continue
        diff = abs(b - a)
        rows.append({"metric": key, "cpu": float(a), "value": float(b), "rel_diff": diff / max(abs(a), atol),
                     "rtol": rtol, "passed": diff <= atol + rtol * abs(a)})  # fmt: skip
    return rows


def rows_of(family: Family, cpu: Run, other: Run) -> list[dict[str, Any]]:
    """The table rows of ``other`` (one GPU mode of ``family``) against the CPU reference ``cpu``: :func:`compare`'s
    rows, or one failing row ``metric="run"`` naming the run that failed."""
    base = {"family": family.name, "mode": other.mode, "seconds": round(other.seconds, 1)}
    failed = [r for r in (cpu, other) if r.metrics is None]
    if failed:
        why = "; ".join(f"{r.mode} run: {r.error}" for r in failed)
        return [{**base, "metric": "run", "cpu": None, "value": None, "rel_diff": None, "rtol": None, "passed": False,
                 "error": why}]  # fmt: skip
    return [{**base, **row} for row in compare(cpu.metrics, other.metrics, family.metrics, family.rtol[other.mode])]


def fmt(v: Any) -> str:
    """A table cell: floats with 6 significant digits, ``None`` as ``-``."""
    return "-" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)


def print_table(rows: list[dict[str, Any]], cpu_seconds: dict[str, float]) -> None:
    """Print ``rows`` (from :func:`rows_of`) as a rich table; ``cpu_seconds`` maps a family to its CPU run's time."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="genlab gpu-check: GPU runs against the CPU reference")
    for name in ("family", "mode", "metric", "cpu", "value", "rel diff", "tolerance", "result", "seconds"):
        table.add_column(name, justify="left" if name in ("family", "mode", "metric", "result") else "right")
    for r in rows:
        seconds = f"{r['seconds']:.1f} (cpu {cpu_seconds.get(r['family'], 0):.1f})"
        table.add_row(r["family"], r["mode"], r["metric"], fmt(r["cpu"]), fmt(r["value"]), fmt(r["rel_diff"]),
                      fmt(r["rtol"]), "PASS" if r["passed"] else "[bold red]FAIL[/]", seconds)  # fmt: skip
    console = Console(width=max(120, shutil.get_terminal_size().columns))
    console.print(table)
    for r in rows:
        if r.get("error"):
            console.print(f"{r['family']} {r['mode']}: {r['error']}", soft_wrap=True, markup=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; see ``python -m genlab.gpu_check --help``."""
    ap = argparse.ArgumentParser(prog="python -m genlab.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES), help="families to run")
    ap.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES), help="modes to compare with cpu")
    ap.add_argument("--ddp-devices", type=int, default=None, help="processes of the ddp mode (default: visible GPUs)")
    ap.add_argument("--jobs", type=int, default=None, help="runs at once (default: min(8, CPU cores))")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds each run may take")
    ap.add_argument("--out", default=None, help="JSON file to write (default: outputs/gpu_check/<timestamp>.json)")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (kept anyway when something fails)")
    ap.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu", help=argparse.SUPPRESS)  # tests only
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the check (see the module doc); returns the exit status: 0 all passed (or no GPU), 1 otherwise."""
    a = parse_args(argv)
    import torch

    if a.accelerator == "gpu" and not torch.cuda.is_available():
        print("gpu-check skipped: no GPU (torch.cuda.is_available() is False)")
        return 0
    gpus = torch.cuda.device_count() if a.accelerator == "gpu" else 0
    devices = a.ddp_devices or (gpus if a.accelerator == "gpu" else 2)
    jobs = a.jobs or max(1, min(8, os.cpu_count() or 1))
    families = [FAMILIES[name] for name in a.families]
    root = Path(tempfile.mkdtemp(prefix="genlab-gpu-check-"))
    text = write_text(root / "text" / "input.txt") if any(f.text for f in families) else None
    runs: dict[tuple[str, str], Run] = {}
    for fam in families:
        extra = [f"data.path={text}"] if fam.text else []
        for mode in ("cpu", *a.modes):
            overrides = [*QUIET, "seed=0", *fam.overrides, *extra, *mode_overrides(fam, mode, devices, a.accelerator)]
            runs[fam.name, mode] = Run(fam.name, mode, overrides, root / "runs" / f"{fam.name}-{mode}")
    print(f"gpu-check: {len(runs)} runs ({', '.join(a.families)} x cpu, {', '.join(a.modes)}; ddp on {devices} "
          f"device(s)), {jobs} at a time, in {root}", flush=True)  # fmt: skip
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # the CPU references run beside the GPU runs
        list(pool.map(lambda r: run_train(r, root, a.timeout), sorted(runs.values(), key=lambda r: r.mode != "cpu")))
    wall = time.perf_counter() - start
    rows = [row for f in families for mode in a.modes for row in rows_of(f, runs[f.name, "cpu"], runs[f.name, mode])]
    passed = all(r["passed"] for r in rows)
    print_table(rows, {fam.name: runs[fam.name, "cpu"].seconds for fam in families})
    record = {
        "timestamp": datetime.now().isoformat(timespec="seconds"),
        "passed": passed,
        "wall_seconds": round(wall, 1),
        "machine": {"platform": platform.platform(), "accelerator": a.accelerator, "cuda_devices": gpus,
                    "gpu": torch.cuda.get_device_name(0) if gpus else None, "torch": torch.__version__},
        "ddp_devices": devices,
        "rows": rows,
        "runs": [{"family": r.family, "mode": r.mode, "overrides": r.overrides, "seconds": round(r.seconds, 1),
                  "returncode": r.returncode, "error": r.error, "run_dir": str(r.run_dir),
                  **({"log_tail": r.log_tail} if r.metrics is None else {})} for r in runs.values()],
    }  # fmt: skip
    out = Path(a.out) if a.out else Path("outputs/gpu_check") / f"{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    if passed and not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"run folders kept in {root}")
    failed = sum(not r["passed"] for r in rows)
    print(f"gpu-check {'passed' if passed else f'FAILED ({failed} of {len(rows)} rows)'} in {wall:.0f} s; wrote {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
