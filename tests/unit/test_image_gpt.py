"""ImageGPT: causal over sub-pixels in raster/channel order, with no blind spot, through the shared transformer."""

import pytest
import torch

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models.image_gpt import ImageGPT
from genlab.nn.transformer import Transformer


def position_dependencies(model: ImageGPT, spec: DataSpec, y=None) -> torch.Tensor:
    """``(D, D)`` bool: ``[d, e]`` is True when the logits of sub-pixel ``d`` have a non-zero gradient
    with respect to the input at sequence position ``e + 1``, the one that carries sub-pixel ``e``.

    Tokens are discrete, so the gradient is taken with respect to the position embedding of each
    input position: it reaches the logits exactly through the paths the token at that position does.
    """
    torch.manual_seed(0)
    x = torch.randint(0, spec.levels, (1, *spec.shape)).float() / (spec.levels - 1)
    logits = model.logits(x, y)  # (1, K, C, H, W)
    seq = logits.permute(0, 3, 4, 2, 1).reshape(spec.num_dims, -1)  # (D, K) in raster order
    proj = torch.randn(seq.shape[1])
    table = model.net.pos_emb.weight
    rows = []
    for d in range(spec.num_dims):
        (grad,) = torch.autograd.grad((seq[d] * proj).sum(), table, retain_graph=True)
        rows.append(grad.abs().sum(1)[1:] != 0)  # position e + 1 holds sub-pixel e
    # the last sub-pixel is never an input: no logit can depend on it
    return torch.nn.functional.pad(torch.stack(rows), (0, 1), value=False)


@pytest.mark.parametrize(
    "spec, conditional",
    [(DataSpec((3, 4, 4), "levels", 256, 10), False), (DataSpec((1, 6, 6), "binary", 2, 10), True)],
)
def test_image_gpt_is_causal_without_blind_spot(spec, conditional):
    torch.manual_seed(0)
    model = ImageGPT(spec.to_dict(), n_layer=2, n_head=2, n_embd=16, conditional=conditional)
    dep = position_dependencies(model, spec, torch.tensor([4]) if conditional else None)
    d = spec.num_dims
    past = torch.ones(d, d, dtype=torch.bool).tril(-1)
    assert not dep[~past].any(), "a logit depends on its own sub-pixel or a later one"
    assert dep[past].all(), "attention reaches every earlier sub-pixel"


def test_raster_order_of_tokens():
    model = ImageGPT(DataSpec((3, 2, 2), "levels", 256).to_dict(), n_layer=1, n_head=1, n_embd=8)
    x = torch.arange(12).float().view(1, 3, 2, 2) / 255  # channel-major layout
    # pixel (0,0): R G B = 0 4 8, pixel (0,1): 1 5 9, ...
    assert model.tokens(x).tolist() == [[0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]]


def test_reuses_the_shared_transformer_and_checks_its_sizes():
    model = ImageGPT(DataSpec((1, 8, 8), "levels", 17).to_dict(), n_layer=1, n_head=2, n_embd=8)
    assert type(model.net) is Transformer and model.net.block_size == 64 and model.net.vocab_size == 18
    with pytest.raises(ConfigError, match="multiple of n_head"):
        ImageGPT(DataSpec((1, 8, 8), "levels", 17).to_dict(), n_head=3, n_embd=8)


def test_changing_a_sub_pixel_changes_only_later_logits():
    # complements the gradient test above, which assumes that position e + 1 carries sub-pixel e
    spec = DataSpec((3, 3, 3), "levels", 8)
    torch.manual_seed(0)
    model = ImageGPT(spec.to_dict(), n_layer=2, n_head=2, n_embd=16)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    d = spec.num_dims
    k = torch.randint(0, 8, (d,))
    batch = k.repeat(d + 1, 1)
    batch[torch.arange(1, d + 1), torch.arange(d)] = (k + 1) % 8  # row e + 1 changes sub-pixel e
    x = batch.view(d + 1, 3, 3, 3).permute(0, 3, 1, 2).float() / 7  # raster (H, W, C) -> (C, H, W)
    with torch.no_grad():
        z = model.logits(x).permute(0, 3, 4, 2, 1).reshape(d + 1, d, -1)  # (image, sub-pixel, K)
    change = (z[1:] - z[:1]).abs().amax(-1)  # [e, d]: how much the logits of d move when e changes
    later = torch.ones(d, d, dtype=torch.bool).triu(1)
    assert change[~later].max() < 1e-5 and change[later].min() > 1e-3
