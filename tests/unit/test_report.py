"""genlab.report on folders written by hand: incomplete and failed jobs, seeds, globs, the elbow rule."""

import json
import subprocess
import sys

import pytest

from genlab.errors import DataError
from genlab.report import report
from genlab.report.jobs import collect
from genlab.report.rules import elbow


def job(folder, overrides, status="ok", **metrics):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if status is not None:
        record = {"status": status, **metrics, "config": {"overrides": overrides, "resolved": {}}}
        (folder / "metrics.json").write_text(json.dumps(record))
    return folder


def test_elbow_picks_the_size_after_which_the_next_one_gains_at_most_x_percent():
    sizes, losses = [2, 4, 8, 16, 32], [100.0, 60.0, 40.0, 39.0, 38.9]
    assert elbow(sizes, losses, 5) == 8  # 40 -> 39 gains 2.5 %
    assert elbow(sizes, losses, 1) == 16  # 39 -> 38.9 gains 0.26 %; 40 -> 39 is more than 1 %
    assert elbow(sizes, losses, 50) == 2 and elbow(sizes, losses, 0.1) == 32  # every step pays: the largest
    assert elbow(list(reversed(sizes)), list(reversed(losses)), 5) == 8  # order does not matter


def test_seeds_aggregate_and_failed_and_incomplete_jobs_are_rows_that_say_why(tmp_path):
    sweep = tmp_path / "sweep"
    for n, (k, seed, loss) in enumerate([(2, 0, 10.0), (2, 1, 12.0), (4, 0, 7.0), (4, 1, 9.0)]):
        job(sweep / str(n), [f"model.latent_dim={k}", f"seed={seed}"], **{"test/recon_mse": loss})
    job(sweep / "4", ["model.latent_dim=8", "seed=0"], status="diverged", reason="train/loss is nan")
    job(sweep / "5", ["model.latent_dim=8", "seed=1"], status=None)
    (sweep / "5" / "train.log").write_text("[INFO] epoch 0\ngenlab: error: cannot read checkpoint x.ckpt\n")
    path = report([str(sweep)])
    assert path == sweep / "report.md"
    text = path.read_text()
    assert "| 2 | 2 | ok | 11 ± 1.4 |" in text and "| 4 | 2 | ok | 8 ± 1.4 |" in text
    assert "| 8 | 1 | diverged: train/loss is nan |" in text
    assert "| 8 | 1 | incomplete: genlab: error: cannot read checkpoint x.ckpt |" in text
    csv = (sweep / "report.csv").read_text().splitlines()
    assert csv[0].startswith("model.latent_dim,seeds,status,reason,test/recon_mse,test/recon_mse_std")
    assert csv[1].startswith("2,2,ok,,11.0,1.414")


def test_several_folders_and_globs_write_to_a_new_report_folder(tmp_path, monkeypatch):
    for name, k in (("a", 2), ("b", 3)):
        job(tmp_path / "runs" / name, [f"model.latent_dim={k}"], **{"test/loss": float(k)})
    monkeypatch.setenv("GENLAB_ROOT", str(tmp_path))
    path = report([str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "[b]")])
    assert path.parent.parent == tmp_path / "outputs" / "report"
    assert [j.overrides for j in collect([str(tmp_path / "runs")])] == [
        {"model.latent_dim": "2"},
        {"model.latent_dim": "3"},
    ]
    with pytest.raises(DataError, match="is not a run or sweep folder"):
        report([str(tmp_path / "nothing-*")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no runs under"):
        report([str(tmp_path / "empty")])


def test_the_command_needs_only_the_files_it_never_imports_wandb_or_torch(tmp_path):
    job(tmp_path / "run", ["model=pca"], **{"test/loss": 1.0})
    code = "\n".join([
        "import sys, runpy",
        "sys.argv = ['genlab.report', sys.argv[1]]",
        "try:",
        "    runpy.run_module('genlab.report', run_name='__main__')",
        "except SystemExit as e:",
        "    assert e.code == 0",
        "assert 'wandb' not in sys.modules and 'torch' not in sys.modules, 'imported'",
    ])  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "report:" in proc.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "genlab.report", str(tmp_path / "no")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "genlab: error: report:" in missing.stderr


def test_rows_sort_by_the_given_keys_numbers_as_numbers_failed_rows_last(tmp_path):
    sweep = tmp_path / "sweep"
    order = [("b", 16), ("a", 64), ("b", 2), ("a", 8)]
    for n, (model, k) in enumerate(order):
        job(sweep / str(n), [f"model={model}", f"model.latent_dim={k}"], **{"test/loss": float(k)})
    job(sweep / "4", ["model=a", "model.latent_dim=1"], status="failed", reason="boom")
    text = report([str(sweep)], overrides={"sort": ["model", "model.latent_dim"]}).read_text()
    rows = [line.split(" | ")[:2] for line in text.splitlines() if line.startswith("| a") or line.startswith("| b")]
    assert rows == [["| a", "8"], ["| a", "64"], ["| b", "2"], ["| b", "16"], ["| a", "1"]]
    unsorted = report([str(sweep)]).read_text()  # no sort: the jobs' order, failed rows last
    assert [line.split(" | ")[1] for line in unsorted.splitlines() if line.startswith(("| a", "| b"))] == [
        "16", "64", "2", "8", "1"
    ]  # fmt: skip


def test_the_sampling_cost_verdict_gives_the_slopes_and_the_ratios_it_was_given(tmp_path):
    sweep = tmp_path / "sweep"
    cases = [("vae_mlp", 64, 1e-4), ("vae_mlp", 1024, 4e-4), ("pixelcnn", 64, 1e-2), ("pixelcnn", 1024, 0.16),
             ("pixelcnn_naive", 64, 0.1), ("pixelcnn_naive", 1024, 25.6)]  # fmt: skip
    for n, (model, dims, seconds) in enumerate(cases):
        job(sweep / str(n), [f"+sampling_case={model}_{dims}", f"case_model={model}"],
            **{"sample/num_dims": dims, "sample/seconds_per_sample": seconds})  # fmt: skip
    spec = {
        "keys": ["case_model", "sample/num_dims"],
        "columns": ["sample/seconds_per_sample", "sample/num_dims"],
        "verdict": "genlab.report.verdicts.sampling_cost",
    }
    text = report([str(sweep)], overrides=spec).read_text()
    assert "- vae_mlp: 0.0001 s at 64 dims, 0.0004 s at 1024 dims; seconds grow as dims^0.50." in text
    assert "- pixelcnn: 0.01 s at 64 dims, 0.16 s at 1024 dims; seconds grow as dims^1.00." in text
    assert "- PixelCNN, naive / cached sampler: 10.0x at 64 dims, 160.0x at 1024 dims." in text
    assert "at 1024 dims: pixelcnn 400x, pixelcnn_naive 64000x slower per sample." in text


def test_readme_block_gets_the_table_the_budget_and_the_verdict_and_nothing_else_changes(tmp_path):
    sweep = tmp_path / "sweep"
    for n, k in enumerate((2, 4)):
        folder = job(sweep / str(n), [f"model.latent_dim={k}", "paths.data_dir=/somewhere"], **{"test/loss": float(k)})
        record = json.loads((folder / "metrics.json").read_text())
        record["config"]["resolved"] = {"tags": ["bottleneck"], "trainer": {"max_epochs": 8, "max_time": None}}
        (folder / "metrics.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bottleneck:begin -->\nold\n<!-- bottleneck:end -->\nrest\n")
    report([str(sweep)], readme=str(readme), overrides={"verdict": "genlab.report.verdicts.bottleneck",
                                                        "columns": ["val/best_loss"]})  # fmt: skip
    text = readme.read_text()
    assert text.startswith("intro\n<!-- bottleneck:begin -->\nMeasured ") and text.endswith(
        "<!-- bottleneck:end -->\nrest\n"
    )
    assert "by `make sweep EXP=bottleneck` (2 jobs); settings: `the defaults`; training budget per job: " in text
    assert "`trainer.max_epochs=8`." in text and "max_time" not in text and "/somewhere" not in text
    assert "| model.latent_dim | seeds | status |" in text and "old" not in text
    with pytest.raises(DataError, match="has no '<!-- bottleneck:begin -->'"):
        report([str(sweep)], readme=str(tmp_path / "OTHER.md"))
