"""Shared fixtures: real data from ../shared (a failure under CI=true, a skip elsewhere) and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GENLAB_SHARED", REPO.parent / "shared"))  # ../shared beside the repository
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need_shared(path: Path) -> Path:
    """Return ``path`` if it exists; otherwise fail under CI and skip elsewhere."""
    if path.exists():
        return path
    message = f"shared test data missing: {path} (expected ../shared beside the repository, or set GENLAB_SHARED)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision-layout MNIST root with 8,000 train / 2,000 test real digits (from ../shared)."""
    script = need_shared(SHARED / "scripts" / "mnist_subset.py")
    need_shared(SHARED / "data" / "mnist-t10k")
    root = tmp_path_factory.mktemp("mnist")
    subprocess.run([sys.executable, str(script), str(root)], check=True, capture_output=True)
    return root


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    """The real tiny-shakespeare text."""
    return need_shared(SHARED / "data" / "tinyshakespeare" / "input.txt")


CLI_ENV = {
    "OMP_NUM_THREADS": "1",  # small models: one thread is as fast, and never oversubscribes 2 cores
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "HYDRA_FULL_ERROR": "0",
    "PYTHONWARNINGS": "ignore",
}
QUIET = ["logger=csv", "callbacks.rich_progress_bar=null"]


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for the whole test session, so each dataset's feature network trains once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cli(tmp_path: Path, feature_cache: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``python -m genlab.<module> <overrides>`` with outputs under ``tmp_path/outputs``.

    Downloads go to ``tmp_path/data`` (never the user's cache); feature networks to one cache per test
    session. ``train`` and ``eval`` run with ``evaluation=none`` unless an ``evaluation`` or ``experiment`` override
    is given.
    Returns the completed process; its ``.log_dir`` attribute is the outputs folder.
    """
    log_dir = tmp_path / "outputs"
    # GENLAB_ROOT puts outputs/ in tmp_path through the default paths config, as a user's run would
    env = {**os.environ, **CLI_ENV, "GENLAB_ROOT": str(tmp_path), "GENLAB_DATA_DIR": str(tmp_path / "data"),
           "GENLAB_CACHE_DIR": str(feature_cache)}  # fmt: skip

    def command(module: str, overrides: tuple[str, ...]) -> list[str]:
        flags = [o for o in overrides if o.startswith("-")]  # e.g. -m (multirun) goes before the overrides
        rest = [o for o in overrides if not o.startswith("-")]
        if module in ("train", "eval") and not any(o.startswith(("evaluation", "experiment")) for o in rest):
            rest.append("evaluation=none")  # evaluation has its own tests (experiments choose their own)
        return [sys.executable, "-m", f"genlab.{module}", *flags, *rest]

    def run(module: str, *overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
        cmd = command(module, overrides)
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        proc.log_dir = log_dir
        return proc

    def start(module: str, *overrides: str) -> subprocess.Popen:
        """The same command, started in the background (``cli.start``), its output in pipes."""
        cmd = command(module, overrides)
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    run.start, run.env, run.log_dir = start, env, log_dir
    return run


def run_dirs(log_dir: Path, task: str = "train") -> list[Path]:
    """The single-run folders of ``task`` under ``log_dir``."""
    folder = log_dir / task / "runs"
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.exists() else []


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """Assert the process succeeded, showing its output if not."""
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    return proc
