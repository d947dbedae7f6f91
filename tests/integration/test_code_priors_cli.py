"""Code priors fitted to the training codes work wherever samples are drawn: grids during training, the test."""

import json

from tests.conftest import QUIET, ok, run_dirs


def test_a_fitted_code_prior_samples_grids_during_training_and_is_refitted_for_the_evaluation(cli):
    proc = ok(cli("train", *QUIET, "model=ae_mlp", "model.code_prior=gmm", "model.code_mixtures=3",
                  "trainer.max_epochs=1", "callbacks.image_grids.every_n_epochs=1", "evaluation=default"))  # fmt: skip
    (run,) = run_dirs(proc.log_dir)
    record = json.loads((run / "metrics.json").read_text())
    assert record["status"] == "ok" and record["eval/fid"] > 0
    assert (run / "images" / "samples_epoch000.png").is_file()  # drawn during training, before the test stage
