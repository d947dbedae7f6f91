"""Gated PixelCNN: exact masks, causality in raster/channel order, and no blind spot."""

import pytest
import torch

from genlab.data.spec import DataSpec
from genlab.models.pixelcnn import PixelCNN
from genlab.nn.masked import MaskedConv2d, causal_mask, channel_groups


def dependencies(model, spec: DataSpec, y=None, batch: int = 8) -> torch.Tensor:
    """``(D, D)`` bool: ``[d, e]`` is True when the logits of sub-pixel ``d`` have a non-zero gradient
    with respect to input sub-pixel ``e`` (both in raster order, channels within a pixel) for at
    least one of ``batch`` random images (several, so that a ReLU that happens to be off for one
    image does not hide a connection)."""
    torch.manual_seed(0)
    c, h, w = spec.shape
    x = torch.randint(0, spec.levels, (batch, *spec.shape)).double() / (spec.levels - 1)
    y = None if y is None else y.expand(batch)
    proj = torch.randn(model.num_outputs, dtype=torch.double)[None, :, None, None, None]
    jac = torch.autograd.functional.jacobian(lambda t: (model.logits(t, y) * proj).sum((0, 1)), x, vectorize=True)
    d = c * h * w
    jac = jac.abs().sum(3)  # (C, H, W, C, H, W): summed over the batch of inputs
    return jac.reshape(c, h, w, c, h, w).permute(1, 2, 0, 4, 5, 3).reshape(d, d) != 0


def test_channel_groups_are_contiguous_blocks():
    assert channel_groups(8, 3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert channel_groups(3, 3).tolist() == [0, 1, 2]
    assert channel_groups(4, 1).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        channel_groups(2, 3)


def test_masks_A_B_V_exact_values():
    rgb = torch.arange(3)
    a = causal_mask((3, 3), "A", rgb, rgb)
    b = causal_mask((3, 3), "B", rgb, rgb)
    v = causal_mask((3, 3), "V", rgb, rgb)
    spatial = torch.tensor([[1.0, 1, 1], [1, 0, 0], [0, 0, 0]])  # every (out, in) pair, centre excluded
    for m in (a, b):
        off_centre = m.clone()
        off_centre[:, :, 1, 1] = 0
        assert torch.equal(off_centre, spatial.expand(3, 3, 3, 3))
    # centre tap, [out colour, in colour]: R sees nothing of its pixel under A, G sees R, B sees R and G
    assert a[:, :, 1, 1].tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert b[:, :, 1, 1].tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert torch.equal(v, torch.tensor([[1.0, 1, 1], [1, 1, 1], [0, 0, 0]]).expand(3, 3, 3, 3))
    horizontal = causal_mask((1, 5), "A", torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    assert horizontal.flatten().tolist() == [1, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="odd"):
        causal_mask((2, 3), "A", rgb, rgb)


def test_masked_conv_forward_window_matches_forward():
    torch.manual_seed(0)
    conv = MaskedConv2d(3, 6, 3, "B", torch.arange(3), channel_groups(6, 3))
    x = torch.randn(2, 3, 5, 5)
    full = conv(x)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    assert torch.allclose(conv.forward_window(padded[:, :, 2:5, 3:6]), full[:, :, 2:3, 3:4], atol=1e-6)
    assert torch.allclose(conv.forward_window(padded[:, :, 1:4, :]), full[:, :, 1:2, :], atol=1e-6)


@pytest.mark.parametrize(
    "spec, layers, kernel, conditional",
    [
        (DataSpec((3, 5, 5), "levels", 4, 10), 5, 3, False),  # RGB: channel order within a pixel
        (DataSpec((1, 7, 7), "levels", 17, 10), 6, 3, True),
        (DataSpec((1, 5, 5), "binary", 2, 10), 2, 5, False),
    ],
)
def test_gated_pixelcnn_is_causal_and_has_no_blind_spot(spec, layers, kernel, conditional):
    torch.manual_seed(0)
    model = PixelCNN(spec, hidden_channels=12, num_layers=layers, kernel_size=kernel, head_channels=30,
                     conditional=conditional).double()  # fmt: skip
    y = torch.tensor([3]) if conditional else None
    dep = dependencies(model, spec, y)
    d = spec.num_dims
    past = torch.ones(d, d, dtype=torch.bool).tril(-1)
    assert not dep[~past].any(), "a logit depends on its own sub-pixel or a later one"
    # after these many layers every earlier sub-pixel is inside the receptive field: none is blind
    assert dep[past].all(), f"blind spots: {(~dep & past).nonzero().tolist()[:10]}"


def test_receptive_field_grows_with_depth():
    # 3-kernels: each block adds one pixel to the left, and one row above and one column each side to
    # the vertical stack, which reaches the horizontal stack one row lower
    spec = DataSpec((1, 7, 7), "levels", 4)
    for layers in (1, 2):
        torch.manual_seed(0)
        model = PixelCNN(spec, hidden_channels=4, num_layers=layers, head_channels=16).double()
        seen = dependencies(model, spec)[4 * 7 + 3].reshape(7, 7)  # sub-pixel (i=4, j=3)
        expected = torch.zeros(7, 7, dtype=torch.bool)
        expected[3 - layers : 4, 3 - layers : 4 + layers] = True  # rows i-1-layers .. i-1
        expected[4, 3 - layers : 3] = True
        assert torch.equal(seen, expected), seen.int()
