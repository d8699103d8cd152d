"""The NumPy versions of the official forward passes checked piece by piece: against the
PyTorch functions the official modules call (where PyTorch is installed), and against the
other NumPy references of this suite."""

import numpy as np
import pytest

from official_reference import (grid_sample_border, layer_norm_channels, nearest,
                                pixel_unshuffle, query_key_similarity)
from mmcv_reference import pixel_shuffle
from similarity_reference import local_similarity_reference

torch = pytest.importorskip("torch")
functional = torch.nn.functional


@pytest.mark.parametrize("spread", [0.5, 2.0], ids=["inside", "past-the-border"])
@pytest.mark.parametrize("size", [(3, 4), (1, 5), (4, 1), (1, 1)], ids=str)
def test_grid_sample_is_pytorchs_bilinear_border_sampling(rng, size, spread):
    h, w = size
    x = rng.standard_normal((2, 3, h, w))
    grid = rng.uniform(-spread, spread, (2, 5, 6, 2))
    grid[0, 0, :3] = [[-1, -1], [1, 1], [0, 1]]  # corners and edges exactly
    expected = functional.grid_sample(torch.from_numpy(x), torch.from_numpy(grid),
                                      mode="bilinear", padding_mode="border",
                                      align_corners=False).numpy()
    np.testing.assert_allclose(grid_sample_border(x, grid), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("factor", [2, 3])
def test_pixel_shuffles_are_pytorchs(rng, factor):
    x = rng.standard_normal((2, 2 * factor ** 2, 3, 4))
    np.testing.assert_array_equal(pixel_shuffle(x, factor),
                                  functional.pixel_shuffle(torch.from_numpy(x), factor).numpy())
    y = rng.standard_normal((2, 3, 2 * factor, 3 * factor))
    np.testing.assert_array_equal(pixel_unshuffle(y, factor),
                                  functional.pixel_unshuffle(torch.from_numpy(y), factor).numpy())


def test_layer_norm_over_channels_is_pytorchs_layer_norm_of_channels_last_pixels(rng):
    x = rng.standard_normal((2, 5, 3, 4)) * 3 + 1
    weight, bias = rng.standard_normal(5), rng.standard_normal(5)
    expected = functional.layer_norm(torch.from_numpy(x).permute(0, 2, 3, 1), (5,),
                                     torch.from_numpy(weight), torch.from_numpy(bias),
                                     eps=1e-5).permute(0, 3, 1, 2).numpy()
    np.testing.assert_allclose(layer_norm_channels(x, weight, bias, 1e-5), expected, rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("scale", [2, 3])
def test_nearest_is_pytorchs_nearest_interpolation(rng, scale):
    x = rng.standard_normal((1, 2, 3, 4))
    expected = functional.interpolate(torch.from_numpy(x), scale_factor=scale).numpy()
    np.testing.assert_array_equal(nearest(x, scale), expected)


@pytest.mark.parametrize("scale, kernel_size, groups", [(2, 5, 1), (3, 3, 2), (1, 3, 4)])
def test_sapa_similarity_is_the_local_similarity(rng, scale, kernel_size, groups):
    q = rng.standard_normal((2, 8, 3 * scale, 2 * scale))
    k = rng.standard_normal((2, 8, 3, 2))
    expected = local_similarity_reference(q.transpose(0, 2, 3, 1), k.transpose(0, 2, 3, 1),
                                          scale, kernel_size, groups)
    np.testing.assert_allclose(query_key_similarity(q, k, kernel_size, scale, groups),
                               expected.transpose(0, 3, 1, 2), rtol=1e-13, atol=1e-13)
