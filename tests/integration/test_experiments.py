"""Every experiment composes, and runs end to end on a reduced grid (two values per swept key, `debug=fast`) into a
report with its verdict."""

import csv
from itertools import product
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from tests.conftest import QUIET, REPO

EXPERIMENTS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
REPORTED = [e for e in EXPERIMENTS if not e.endswith("_full") and e not in ("gpt_shakespeare_cpu", "vae_mnist")]


def composed(name: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", [f"experiment={name}"], return_hydra_config=True)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_the_reported_ones_say_what_to_report(name):
    cfg = composed(name)
    if name in REPORTED or name.endswith("_full"):
        assert cfg.report.title and cfg.report.verdict.startswith("genlab.report.verdicts.")
        assert dict(cfg.hydra.sweeper.params), "an experiment is a sweep"


def two_values(key: str, values: str) -> list[str]:
    """The first two values of a swept key; for ``glob(*)`` over a config group, its first two options."""
    if values.startswith("glob("):
        return sorted(p.stem for p in (REPO / "conf" / key.lstrip("+")).glob("*.yaml"))[:2]
    return values.split(",")[:2]


@pytest.mark.heavy
@pytest.mark.parametrize("name", REPORTED)
def test_each_experiment_runs_on_a_reduced_grid_into_a_report(cli, mnist_root, shakespeare_path, name):
    corpus = mnist_root / "tinyshakespeare"  # paths.data_dir holds every data set the experiments read
    if not corpus.exists():
        corpus.symlink_to(shakespeare_path.parent, target_is_directory=True)
    cfg = composed(name)
    params = {k: two_values(k, str(v)) for k, v in cfg.hydra.sweeper.params.items()}
    grid = [f"{k}={','.join(v)}" for k, v in params.items()] + ["data.eval_batch_size=100"]  # 2 test batches: 200
    if "samples" in cfg.evaluation.get("tests", []):  # FID/KID of 100 samples against a 1-epoch feature network
        grid += ["evaluation.samples.num_samples=100", "evaluation.features.epochs=1"]
    proc = cli("train", "-m", f"experiment={name}", "debug=fast", *QUIET, f"paths.data_dir={mnist_root}", *grid,
               timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (proc.log_dir / "train" / "multiruns").iterdir()
    made = cli("report", str(sweep))
    assert made.returncode == 0, made.stderr[-2000:]
    with open(sweep / "report.csv") as f:
        rows = list(csv.DictReader(f))
    expected = {tuple(c) for c in product(*params.values())}
    assert len(rows) == len(expected) and {r["status"] for r in rows} == {"ok"}
    if "keys" not in composed(name).report:  # the swept keys are the columns
        assert {tuple(r[k] for k in params) for r in rows} == expected
    text = Path(sweep / "report.md").read_text()
    assert "## Verdict" in text and "## Table" in text
