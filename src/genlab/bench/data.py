"""Real data for benchmarks: the MNIST subset built from ``../shared`` (beside the repository)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("GENLAB_SHARED", REPO.parent / "shared"))


def mnist_root() -> Path | None:
    """A torchvision-layout MNIST root: ``$GENLAB_MNIST_ROOT``, or one written once under
    ``outputs/bench/data`` by ``../shared/scripts/mnist_subset.py`` (8,000 train / 2,000 test real
    MNIST digits); ``None`` when neither is available."""
    env = os.environ.get("GENLAB_MNIST_ROOT")
    if env:
        return Path(env)
    root = REPO / "outputs" / "bench" / "data"
    if (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file():
        return root
    script = SHARED / "scripts" / "mnist_subset.py"
    if not script.is_file():
        return None
    subprocess.run([sys.executable, str(script), str(root)], check=True, capture_output=True)
    return root
