"""`genlab.report` on a real multirun folder, as Hydra leaves it."""

import csv
import json
import subprocess
import sys

from tests.conftest import QUIET, REPO


def test_a_sweep_with_seeds_and_a_failed_value_reports_one_row_per_setting(cli):
    proc = cli("train", "-m", *QUIET, "model=pca", "model.latent_dim=2,0,4", "seed=0,1")
    assert proc.returncode == 1  # latent_dim=0 fails, twice; the sweep goes on
    (sweep,) = (proc.log_dir / "train" / "multiruns").iterdir()
    made = subprocess.run([sys.executable, "-m", "genlab.report", str(sweep)], cwd=REPO, env=cli.env,
                          capture_output=True, text=True)  # fmt: skip
    assert made.returncode == 0, made.stderr
    with open(sweep / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model.latent_dim"], r["seeds"], r["status"]) for r in rows] == [
        ("2", "2", "ok"), ("4", "2", "ok"), ("0", "1", "failed"), ("0", "1", "failed")]  # fmt: skip
    assert "latent_dim" in rows[2]["reason"]
    mse = [json.loads((sweep / str(j) / "metrics.json").read_text())["test/recon_mse"] for j in (4, 5)]  # K=4
    assert abs(float(rows[1]["test/recon_mse"]) - sum(mse) / 2) < 1e-12
    text = (sweep / "report.md").read_text()
    assert "| model.latent_dim | seeds | status |" in text and "| 4 | 2 | ok |" in text and " ± " in text
