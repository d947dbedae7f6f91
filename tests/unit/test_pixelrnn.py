"""PixelRNN (Row LSTM): causality in raster/channel order and the row-by-row recurrence."""

import pytest
import torch
from tests.unit.test_pixelcnn import dependencies

from genlab.data.spec import DataSpec
from genlab.models.pixelrnn import PixelRNN


@pytest.mark.parametrize(
    "spec, conditional",
    [(DataSpec((3, 4, 4), "levels", 4, 10), False), (DataSpec((1, 5, 5), "binary", 2, 10), True)],
)
def test_row_lstm_is_causal(spec, conditional):
    torch.manual_seed(0)
    model = PixelRNN(spec, hidden_channels=12, num_layers=2, input_kernel_size=3, head_channels=30,
                     conditional=conditional).double()  # fmt: skip
    dep = dependencies(model, spec, torch.tensor([3]) if conditional else None)
    c, h, w = spec.shape
    d = spec.num_dims
    past = torch.ones(d, d, dtype=torch.bool).tril(-1)
    assert not dep[~past].any(), "a logit depends on its own sub-pixel or a later one"

    def index(i, j, ch=0):
        return (i * w + j) * c + ch

    for i in range(h):
        for j in range(w):
            for ch in range(c):
                out = index(i, j, ch)
                # earlier colours of the same pixel, the whole pixel to the left, the three pixels above
                expected = [index(i, j, e) for e in range(ch)]
                expected += [index(i, j - 1, e) for e in range(c)] if j > 0 else []
                expected += [index(i - 1, jj, e) for jj in (j - 1, j, j + 1) if i > 0 and 0 <= jj < w for e in range(c)]
                # the LSTM state carries the top row down the whole column
                expected += [index(0, j, e) for e in range(c)] if i > 0 else []
                assert dep[out, expected].all(), (i, j, ch)


def test_row_lstm_has_the_triangular_receptive_field_of_one_layer():
    # a 3x3 mask-A input convolution f(i, j) sees x at (i-1, j-1..j+1) and (i, j-1); the Row LSTM state
    # S(i, j) = f(i, j-1..j) + S(i-1, j-1..j+1), so the logits at (i, j) see columns j-2..j-1 of row i and
    # columns j-r-2 .. j+r of row i-r: a triangle, with a blind spot to its upper right (Sec. 3.2)
    spec = DataSpec((1, 5, 7), "levels", 4)
    torch.manual_seed(0)
    model = PixelRNN(spec, hidden_channels=8, num_layers=1, input_kernel_size=3, head_channels=16).double()
    seen = dependencies(model, spec)[3 * 7 + 3].reshape(5, 7)  # sub-pixel (i=3, j=3)
    expected = torch.zeros(5, 7, dtype=torch.bool)
    expected[3, 1:3] = True
    for r in (1, 2, 3):
        expected[3 - r, max(0, 3 - r - 2) : 3 + r + 1] = True
    assert torch.equal(seen, expected), seen.int()
