"""The real CLI on the real tiny-shakespeare text: train a tiny GPT, then sample it from the checkpoint alone."""

import csv
import json

import pytest
import torch
from tests.conftest import QUIET, ok, run_dirs

from genlab.data.text import TextDataModule

TRAIN = [
    "model=gpt_tiny", "data=shakespeare", "trainer=cpu", "trainer.max_steps=30", "data.batch_size=16",
    "data.eval_batch_size=512", "data.train_batches_per_epoch=15", "callbacks.early_stopping=null", *QUIET,
]  # fmt: skip


@pytest.mark.heavy
def test_train_then_sample_from_the_checkpoint_alone(cli, shakespeare_path):
    proc = ok(cli("train", *TRAIN, f"data.path={shakespeare_path}", "evaluation=default"))
    (run,) = run_dirs(proc.log_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    # the evaluator on text: density and the text measures of samples; no code to probe
    assert metrics["eval/density"] == metrics["eval/samples"] == "ok"
    assert metrics["eval/representation"].startswith("n/a: no latent code")
    assert 0.0 <= metrics["eval/valid_word_rate"] <= 1.0 and 0.0 <= metrics["eval/copy_rate"] <= 1.0
    assert metrics["eval/text_num_chars"] == 2000
    assert metrics["test/nll_kind"] == "exact" and metrics["test/block_size"] == 32
    assert metrics["test/num_tokens"] == 55770  # the whole last 5% of the file, each character once
    assert metrics["test/bits_per_dim"] == pytest.approx(metrics["test/loss"] / 0.6931471805599453, rel=1e-5)
    assert metrics["test/bits_per_dim"] < 6.0  # log2(65) = 6.02 for a uniform guess
    texts = (run / "samples.txt").read_text(encoding="utf-8")  # written by the text-samples callback
    assert len(texts) > 4 * 32 and list((run / "text").glob("samples_step*.txt"))

    ckpt = metrics["artifacts"]["checkpoint"]
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]["data_spec"]
    expected = TextDataModule(path=str(shakespeare_path), block_size=32).spec
    assert stored["vocab"] == expected.vocab and stored["levels"] == 65

    sample = ["sample", f"ckpt_path={ckpt}", "prompt=ROMEO:", "max_new_tokens=80", "seed=3", "top_k=1000"]
    first = ok(cli(*sample))
    second = ok(cli(*sample))
    outs = [(d / "samples.txt").read_text(encoding="utf-8") for d in run_dirs(first.log_dir, "sample")]
    assert len(outs) == 2 and outs[0] == outs[1]  # same seed, same text
    text = outs[0].rstrip("\n")
    assert text.startswith("ROMEO:") and len(text) == 6 + 80  # longer than block_size=32
    assert set(text) <= set(expected.vocab) and text in second.stdout

    # how likely is this text: nats, bits per character, the percentile among test windows, and per-character surprisal
    scored = ok(cli("score", f"ckpt_path={ckpt}", "text=ROMEO: What say you?", "surprisal=true"))
    (sc,) = run_dirs(scored.log_dir, "score")
    with open(sc / "surprisal.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert "".join(r["char"] for r in rows) == "ROMEO: What say you?"
    with open(sc / "scores.csv") as f:
        (row,) = list(csv.DictReader(f))
    total_bits = sum(float(r["surprisal_bits"]) for r in rows)
    assert -float(row["log_p_nats"]) / 0.6931471805599453 == pytest.approx(total_bits, rel=1e-5)
    assert 0.0 <= float(row["percentile_in_test"]) <= 100.0
    refused = cli("score", f"ckpt_path={ckpt}", "text='naïve'")
    assert refused.returncode == 2 and "characters outside the model's vocabulary: 'ï'" in refused.stderr

    bad = cli("sample", f"ckpt_path={ckpt}", "prompt='ROMEO%é'")
    assert bad.returncode == 2
    assert "not in the model's vocabulary: '%', 'é'." in bad.stderr


def test_missing_corpus_offline_fails_with_one_clear_line(cli, tmp_path):
    proc = cli("train", "model=gpt_tiny", "data=shakespeare", "data.download=false", *QUIET)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    expected = tmp_path / "data" / "tinyshakespeare" / "input.txt"  # under GENLAB_DATA_DIR
    assert f"tiny-shakespeare not found: expected {expected}." in proc.stderr
