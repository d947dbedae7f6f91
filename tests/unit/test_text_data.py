import math
from pathlib import Path

import lightning as L
import pytest
import torch

from genlab.data.base import TensorBatchLoader
from genlab.data.spec import DataSpec
from genlab.data.text import (
    IGNORE,
    TINY_SHAKESPEARE_SHA256,
    UNKNOWN,
    CharVocab,
    RandomWindowLoader,
    TextDataModule,
    eval_windows,
    split_bounds,
)
from genlab.errors import ConfigError, DataError
from genlab.models.gpt import GPT


def write(tmp_path: Path, text: str, name: str = "corpus.txt") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_vocab_round_trip_and_refusal():
    vocab = CharVocab.from_text("hello world\n")
    assert vocab.symbols == "\n dehlorw"
    ids = vocab.encode("hello\nworld")
    assert ids.dtype == torch.int64 and vocab.decode(ids) == "hello\nworld"
    assert vocab.unknown("hex!") == ["!", "x"]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.encode("hex")


def test_vocab_comes_from_the_training_split_and_unseen_characters_share_one_token(tmp_path):
    # train = first 80 chars (only a/b), val = next 10 (x, y unseen), test = last 10 (z unseen)
    text = "ab" * 40 + "axbyaaaaaa" + "bbbbzbbbbb"
    dm = TextDataModule(path=write(tmp_path, text), block_size=4, batch_size=2, splits=[0.8, 0.1, 0.1])
    spec = dm.spec  # available before setup
    assert spec == DataSpec((4,), "levels", 3, None, "ab" + UNKNOWN)
    unk = spec.vocab.index(UNKNOWN)
    assert dm.split_ids("val").tolist() == [0, unk, 1, unk, 0, 0, 0, 0, 0, 0]
    assert dm.split_ids("test").tolist() == [1, 1, 1, 1, unk, 1, 1, 1, 1, 1]
    assert unk not in dm.split_ids("train").tolist()
    # without unseen characters no extra token is added
    plain = TextDataModule(path=write(tmp_path, "ab" * 50, "plain.txt"), block_size=4, splits=[0.8, 0.1, 0.1])
    assert plain.spec.vocab == "ab"


def test_real_shakespeare_spec_and_positional_splits(shakespeare_path):
    dm = TextDataModule(path=str(shakespeare_path), block_size=64, splits=[0.9, 0.05, 0.05])
    spec = dm.spec
    assert spec.shape == (64,) and spec.levels == 65 and UNKNOWN not in spec.vocab
    assert DataSpec.coerce(spec.to_dict()) == spec
    assert dm.bounds == {"train": (0, 1003854), "val": (1003854, 1059624), "test": (1059624, 1115394)}
    text = shakespeare_path.read_text(encoding="utf-8")
    assert dm.vocab.decode(dm.split_ids("val")) == text[1003854:1059624]
    assert split_bounds(len(text), [0.9, 0.1, 0.0]) == (1003854, 1115394)


@pytest.mark.parametrize("start,end", [(5, 5 + 32), (5, 5 + 33), (5, 5 + 3), (0, 20), (37, 37)])
def test_eval_windows_score_every_token_of_the_split_exactly_once(start, end):
    ids = torch.randint(0, 9, (100,), generator=torch.Generator().manual_seed(0))
    T = 8
    x, y = eval_windows(ids, start, end, T)
    first = max(start, 1)
    valid = y != IGNORE
    assert valid.sum().item() == end - first
    assert y[valid].tolist() == ids[first:end].tolist()  # each target once, in order
    # inputs are the targets shifted right by one: the token just before each target
    pos = first + torch.arange(y.numel()).view_as(y)
    assert x[valid].tolist() == ids[pos[valid] - 1].tolist()
    if not len(x):
        return
    # two processes share the windows: together they cover each exactly once
    shards = [list(TensorBatchLoader(x, y, 3, lambda t: t, rank=r, world_size=2)) for r in range(2)]
    got = torch.cat([b[1] for s in shards for b in s])
    assert sorted(got[got != IGNORE].tolist()) == sorted(ids[first:end].tolist())


def test_random_windows_are_contiguous_slices_of_the_training_split(tmp_path):
    text = "".join(chr(97 + i % 26) for i in range(2000))
    dm = TextDataModule(path=write(tmp_path, text), block_size=16, batch_size=5, splits=[0.9, 0.05, 0.05], seed=3)
    dm.setup("fit")
    loader = dm.train_dataloader()
    train = dm.split_ids("train")
    assert len(loader) == 1800 // (5 * 16)
    batches = list(loader)
    x, y = batches[0]
    assert x.shape == y.shape == (5, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    n = len(train)
    for xb, yb in batches:  # every window is ids[s : s + 17] for a start s inside the training split
        w = torch.cat([xb, yb[:, -1:]], 1)
        starts = (w[:, :1] - train[0]) % 26  # the text is periodic: the first id fixes the start mod 26
        assert all(
            any(torch.equal(row, train[s : s + 17]) for s in range(int(s0), n - 16, 26)) for row, s0 in zip(w, starts)
        )
    # the same seed draws the same windows; another rank draws others
    same = list(dm.train_dataloader())
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, same))
    other = RandomWindowLoader(train, 16, 5, len(loader), seed=3, rank=1, world_size=2)
    assert not torch.equal(next(iter(other))[0], batches[0][0])


def test_whole_split_evaluation_counts_each_token_once_and_averages_over_tokens(tmp_path):
    text = "".join(chr(97 + (i * 7) % 13) for i in range(1000)) + "\n"
    dm = TextDataModule(path=write(tmp_path, text), block_size=16, batch_size=4, eval_batch_size=5,
                        splits=[0.7, 0.2, 0.1])  # fmt: skip
    model = GPT(dm.spec.to_dict(), n_layer=1, n_head=1, n_embd=8)
    with torch.no_grad():
        model.net.tok_emb.weight.zero_()  # all logits equal
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    (val,) = trainer.validate(model, datamodule=dm, verbose=False)
    (test,) = trainer.test(model, datamodule=dm, verbose=False)
    b1, b2 = dm.bounds["val"]
    assert val["val/num_tokens"] == b2 - b1 == 200
    assert test["test/num_tokens"] == len(text) - b2 == 101
    v = len(dm.vocab)
    assert v == 14
    for m, stage in ((val, "val"), (test, "test")):
        assert m[f"{stage}/bits_per_dim"] == pytest.approx(math.log2(v), rel=1e-6)
        assert m[f"{stage}/bits_per_char"] == pytest.approx(math.log2(v), rel=1e-6)
        assert m[f"{stage}/loss"] == pytest.approx(math.log(v), rel=1e-6)
        assert m[f"{stage}/nll_nats"] == pytest.approx(16 * math.log(v), rel=1e-6)
    # a model whose losses differ between tokens: the logged loss is the mean over every scored token
    # (the last window holds 8 of 16 and the last batch 3 of 5 windows, so a mean over windows differs)
    torch.manual_seed(1)
    model = GPT(dm.spec.to_dict(), n_layer=1, n_head=1, n_embd=8)
    (varied,) = trainer.validate(model, datamodule=dm, verbose=False)
    x, y = dm.eval_batches("val")
    assert len(x) == 13 and (y[-1] != IGNORE).sum() == 8
    with torch.no_grad():
        expected = (model.token_nll(x, y).sum() / (y != IGNORE).sum()).item()
    assert varied["val/loss"] == pytest.approx(expected, rel=1e-6)
    assert varied["val/bits_per_dim"] == pytest.approx(expected / math.log(2), rel=1e-6)


def test_a_model_refuses_data_with_another_vocabulary(tmp_path):
    dm = TextDataModule(path=write(tmp_path, "abc" * 100), block_size=8, splits=[0.8, 0.2, 0.0])
    model = GPT(DataSpec((8,), "levels", 2, None, "ab").to_dict(), n_layer=1, n_head=1, n_embd=8)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ConfigError, match="token ids would not match"):
        trainer.validate(model, datamodule=dm, verbose=False)


def test_missing_text_file_offline_is_a_clear_data_error(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DataError, match="nope.txt"):
        _ = TextDataModule(path=str(missing)).spec
    root = tmp_path / "data"
    expected = root / "tinyshakespeare" / "input.txt"
    with pytest.raises(DataError, match="download=false") as e:
        _ = TextDataModule(data_dir=str(root), download=False).spec
    assert str(expected) in str(e.value)
    offline = TextDataModule(data_dir=str(root), download=True, url="http://127.0.0.1:9/input.txt")
    with pytest.raises(DataError, match="download .* failed") as e:
        offline.prepare_data()
    assert str(expected) in str(e.value) and not expected.exists()


def test_download_is_checksummed_and_lands_at_the_expected_path(tmp_path, shakespeare_path):
    root = tmp_path / "data"
    url = shakespeare_path.resolve().as_uri()  # a real fetch through urllib, without network
    bad = TextDataModule(data_dir=str(root), url=url, sha256="0" * 64)
    with pytest.raises(DataError, match="SHA-256"):
        bad.prepare_data()
    dm = TextDataModule(data_dir=str(root), url=url, sha256=TINY_SHAKESPEARE_SHA256, block_size=8)
    assert dm.spec.levels == 65  # the spec downloads on first use
    assert (root / "tinyshakespeare" / "input.txt").read_bytes() == shakespeare_path.read_bytes()


def test_bad_files_and_settings(tmp_path):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(DataError, match="not UTF-8"):
        _ = TextDataModule(path=str(latin1), block_size=4).spec
    with pytest.raises(DataError, match="fewer than block_size"):
        _ = TextDataModule(path=write(tmp_path, "abc" * 10), block_size=64).spec
    with pytest.raises(ConfigError, match="splits"):
        TextDataModule(path="x.txt", splits=[0.9, 0.2, 0.0])
    with pytest.raises(ConfigError, match="no validation"):
        _ = TextDataModule(path=write(tmp_path, "ab" * 100), block_size=4, splits=[1.0, 0.0, 0.0]).spec
    with pytest.raises(ConfigError, match="block_size"):
        TextDataModule(path="x.txt", block_size=0)
