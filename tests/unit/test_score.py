"""genlab.score's pieces: pixels to the data's levels, exact units on a uniform model, refusals, percentiles."""

import math

import pytest
import torch
from torchvision.io import write_png

from genlab.data.spec import DataSpec
from genlab.errors import DataError
from genlab.metrics.likelihood import bits_per_dim
from genlab.models.base import GenerativeModel
from genlab.score import image_inputs, percentile, pixels_to_values, text_ids


class Uniform(GenerativeModel):
    """The uniform model over the data's levels (a mass of L^-D), or the uniform density on [0, 1]^D."""

    nll_kind = "exact"
    capabilities = frozenset({"log_prob"})

    def log_prob(self, x):
        per_dim = 0.0 if self.spec.kind == "dequantized" else -math.log(self.spec.levels)
        return torch.full((len(x),), per_dim * self.spec.num_dims, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["levels", "dequantized"])
def test_a_uniform_model_scores_exactly_log2_levels_bits_per_dim(tmp_path, kind):
    spec = DataSpec((1, 8, 8), kind, 17)
    for i in range(3):
        write_png(torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8), str(tmp_path / f"img{i}.png"))
    names, x, _ = image_inputs(str(tmp_path / "img*.png"), spec)
    assert len(names) == 3 and x.shape == (3, 1, 8, 8)
    bpd = bits_per_dim(-Uniform(spec).log_prob(x), spec)
    assert torch.allclose(bpd, torch.full((3,), math.log2(17), dtype=torch.float64), rtol=1e-15, atol=0)  # to 1 ulp


def test_pixels_map_to_levels_and_dequantized_data_to_bin_midpoints():
    v = torch.tensor([0, 8, 128, 247, 255], dtype=torch.uint8).view(5, 1, 1, 1)
    x, note = pixels_to_values(v, DataSpec((1, 1, 1), "levels", 17))
    assert torch.equal(x.flatten() * 16, torch.tensor([0.0, 1, 8, 15, 16]))  # round(v / 255 * 16)
    x, note = pixels_to_values(v, DataSpec((1, 1, 1), "dequantized", 17))
    assert torch.allclose(x.flatten(), (torch.tensor([0.0, 1, 8, 15, 16]) + 0.5) / 17) and "midpoints" in note
    x, _ = pixels_to_values(v, DataSpec((1, 1, 1), "binary", 2))
    assert torch.equal(x.flatten(), torch.tensor([0.0, 0, 1, 1, 1]))


def test_inputs_the_model_cannot_score_are_refused_with_what_it_expects(tmp_path):
    spec = DataSpec((1, 8, 8), "levels", 17)
    write_png(torch.zeros(3, 8, 12, dtype=torch.uint8), str(tmp_path / "wide.png"))
    with pytest.raises(DataError, match="wide.png is 12x8 pixels; the model scores grayscale images of 8x8 pixels"):
        image_inputs(str(tmp_path / "wide.png"), spec)
    torch.save(torch.rand(2, 3, 8, 8), tmp_path / "rgb.pt")
    with pytest.raises(DataError, match=r"shape \(2, 3, 8, 8\); the model scores \(N, \*\(1, 8, 8\)\)"):
        image_inputs(str(tmp_path / "rgb.pt"), spec)
    with pytest.raises(DataError, match="input not found"):
        image_inputs(str(tmp_path / "none*.png"), spec)
    with pytest.raises(DataError, match="outside the model's vocabulary: 'z'"):
        text_ids("abz", DataSpec((4,), "levels", 2, vocab="ab"))


def test_percentile_counts_the_reference_at_or_below():
    ref = torch.tensor([-3.0, -2.0, -1.0, 0.0])
    assert [percentile(v, ref) for v in (-5.0, -2.0, 0.0)] == [0.0, 50.0, 100.0]
