"""``SplitMeans``: the adapter's split averages are sum over the split / count over the split."""

import torch

from genlab.models.base import SplitMeans


def test_token_weighted_and_example_weighted_means_are_exact_whatever_the_batching():
    nats = torch.tensor([3.0, 5.0, 7.0, 1.0, 2.0])
    tokens = torch.tensor([3, 5, 7, 1, 0])  # the last example scores no token
    for split in ([5], [2, 3], [1, 1, 1, 1, 1]):
        per_token, per_example = SplitMeans(), SplitMeans()
        for n, t in zip(nats.split(split), tokens.split(split)):
            per_token.add({"loss": n}, t)
            per_example.add({"loss": n}, None)
        means, count = per_token.compute()
        assert count == 16 and means["loss"].item() == 18.0 / 16
        means, count = per_example.compute()
        assert count == 5 and means["loss"].item() == 18.0 / 5


def test_reduce_sums_every_total_and_an_empty_split_gives_nothing():
    m = SplitMeans()
    m.add({"loss": torch.tensor([1.0, 3.0]), "nll_nats": torch.tensor([2.0, 2.0])}, None)
    means, count = m.compute(lambda t: 2 * t)  # as if a second process held the same sums
    assert count == 4 and means["loss"].item() == 2.0 and means["nll_nats"].item() == 2.0
    assert SplitMeans().compute() == ({}, 0.0)
