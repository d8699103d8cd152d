"""The rank-4 reassembly of exported graphs (`keras_carafe.ops.export_formulation`), on every
backend: each formulation and the local similarity against the NumPy reference, the pixel
shuffles and softmax, and the layers' exported path (CARAFE, CARAFEDownsample, FADE, SAPA)
against their usual one."""

import numpy as np
import pytest
from keras import ops

from carafe_reference import (carafe_downsample_reference, carafe_reference,
                              random_downsample_inputs, random_inputs)
from keras_carafe import CARAFE, FADE, SAPA, CARAFEDownsample
from keras_carafe.ops import export_formulation, force_portable, validation
from shape_grids import CASES, DOWNSAMPLE_CASES, case_id
from similarity_reference import local_similarity_reference, random_similarity_inputs

pytestmark = pytest.mark.all_backends

FORMULATIONS = export_formulation.FORMULATIONS


def _numpy_depth_to_space(x, s):
    n, h, w, channels = x.shape
    c = channels // (s * s)
    return x.reshape(n, h, w, s, s, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * s, w * s, c)


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_upsampling_matches_the_reference(rng, formulation, case):
    n, h, w, c, s, k, g = case
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g)
    geometry = validation.upsampling(s, k, g)
    out = export_formulation.reassemble(geometry, features, kernels, formulation)
    np.testing.assert_allclose(ops.convert_to_numpy(out),
                               carafe_reference(features, kernels, s, k, g), atol=1e-5)


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("case", DOWNSAMPLE_CASES, ids=case_id)
def test_downsampling_matches_the_reference(rng, formulation, case):
    n, h, w, c, stride, k, g = case
    features, kernels = random_downsample_inputs(rng, n, h, w, c, stride, k, g)
    geometry = validation.downsampling(stride, k, g)
    out = export_formulation.reassemble(geometry, features, kernels, formulation)
    np.testing.assert_allclose(ops.convert_to_numpy(out),
                               carafe_downsample_reference(features, kernels, stride, k, g),
                               atol=1e-5)


# Rows of many cells, in blocks that do and do not divide them, with one or several slabs of
# columns per block (the shape grids' widths all fit in one block of BAND_CELLS).
BAND_CASES = [
    (1, 3, 17, 3, 2, 5, 1),     # 17 cells: a last block of 1, 2 or 8
    (2, 4, 16, 4, 2, 3, 2),     # blocks that divide the width, 2 groups
    (1, 2, 9, 2, 3, 7, 1),      # 7 x 7 kernel: a block of 2 reads 4 slabs of 2 columns
    (1, 5, 12, 8, 4, 3, 4),     # scale 4, 4 groups
]
BAND_DOWNSAMPLE_CASES = [
    (1, 19, 37, 3, 2, 5, 1),    # odd sizes: 19 cells per row
    (1, 13, 29, 4, 3, 7, 2),    # stride 3, 7 x 7 kernel, 2 groups
    (2, 8, 20, 2, 2, 5, 1),     # even sizes, batch 2
]


@pytest.mark.parametrize("cells", [2, 3, 8])
@pytest.mark.parametrize("case", BAND_CASES, ids=case_id)
def test_band_blocks_of_any_width_upsample_like_the_reference(rng, monkeypatch, cells, case):
    monkeypatch.setattr(export_formulation, "BAND_CELLS", cells)
    n, h, w, c, s, k, g = case
    features, kernels = random_inputs(rng, n, h, w, c, s, k, g)
    out = export_formulation.reassemble(validation.upsampling(s, k, g), features, kernels,
                                        "band_matmul")
    np.testing.assert_allclose(ops.convert_to_numpy(out),
                               carafe_reference(features, kernels, s, k, g), atol=1e-5)


@pytest.mark.parametrize("cells", [2, 3, 8])
@pytest.mark.parametrize("case", BAND_DOWNSAMPLE_CASES, ids=case_id)
def test_band_blocks_of_any_width_downsample_like_the_reference(rng, monkeypatch, cells, case):
    monkeypatch.setattr(export_formulation, "BAND_CELLS", cells)
    n, h, w, c, stride, k, g = case
    features, kernels = random_downsample_inputs(rng, n, h, w, c, stride, k, g)
    out = export_formulation.reassemble(validation.downsampling(stride, k, g), features,
                                        kernels, "band_matmul")
    np.testing.assert_allclose(ops.convert_to_numpy(out),
                               carafe_downsample_reference(features, kernels, stride, k, g),
                               atol=1e-5)


@pytest.mark.parametrize("formulation", FORMULATIONS)
def test_an_infinite_weight_on_a_tap_outside_the_image_contributes_nothing(rng, formulation):
    features, kernels = random_inputs(rng, 1, 3, 3, 2, 2, 3, 1)
    kernels[0, 0, 0, 0] = np.inf  # tap (0, 0) of output pixel (0, 0) reads row -1
    out = ops.convert_to_numpy(export_formulation.reassemble(
        validation.upsampling(2, 3, 1), features, kernels, formulation))
    kernels[0, 0, 0, 0] = 0.0
    np.testing.assert_allclose(out, carafe_reference(features, kernels, 2, 3, 1), atol=1e-5)


@pytest.mark.parametrize("shape, block", [((2, 3, 4, 12), 2), ((1, 2, 5, 18), 3),
                                          ((1, 1, 1, 16), 4), ((2, 3, 3, 5), 1)])
def test_depth_to_space_is_tensorflows_order_and_space_to_depth_its_inverse(rng, shape, block):
    x = rng.standard_normal(shape).astype("float32")
    shuffled = export_formulation.depth_to_space(x, block)
    np.testing.assert_array_equal(ops.convert_to_numpy(shuffled),
                                  _numpy_depth_to_space(x, block))
    np.testing.assert_array_equal(
        ops.convert_to_numpy(export_formulation.space_to_depth(shuffled, block)), x)


@pytest.mark.parametrize("phases, groups, kernel_size", [(4, 1, 5), (9, 2, 3), (1, 4, 5),
                                                         (4, 1, 1)])
def test_normalize_is_a_softmax_over_each_groups_taps(rng, phases, groups, kernel_size):
    taps = kernel_size * kernel_size
    geometry = validation.upsampling(int(np.sqrt(phases)), kernel_size, groups)
    logits = rng.standard_normal((2, 3, 4, phases * groups * taps)).astype("float32")
    grouped = logits.reshape(2, 3, 4, phases * groups, taps)
    expected = np.exp(grouped - grouped.max(-1, keepdims=True))
    expected = (expected / expected.sum(-1, keepdims=True)).reshape(logits.shape)
    np.testing.assert_allclose(
        ops.convert_to_numpy(export_formulation.normalize(logits, geometry)), expected,
        rtol=1e-6, atol=1e-7)


def test_an_unknown_formulation_is_refused_by_name():
    with pytest.raises(ValueError, match="`formulation` must be one of"):
        with export_formulation.using("gather"):
            pass


LAYERS = {
    "up-s2-k5-g1": (CARAFE, dict(scale_factor=2, kernel_size=5, group_size=1)),
    "up-s3-k3-g4": (CARAFE, dict(scale_factor=3, kernel_size=3, group_size=4)),
    "up-s2-k5-g2-channels_first": (CARAFE, dict(scale_factor=2, kernel_size=5, group_size=2,
                                                data_format="channels_first")),
    "down-s2-k5-g2": (CARAFEDownsample, dict(stride=2, kernel_size=5, group_size=2)),
    "down-s3-k3-g1": (CARAFEDownsample, dict(stride=3, kernel_size=3, group_size=1)),
}


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("layer", LAYERS)
def test_the_layers_exported_path_gives_their_usual_output(rng, formulation, layer):
    cls, config = LAYERS[layer]
    model = cls(compressed_channels=4, encoder_kernel_initializer="glorot_uniform",
                implementation="portable", **config)
    shape = (2, 8, 7, 5) if config.get("data_format") == "channels_first" else (2, 7, 5, 8)
    x = rng.standard_normal(shape).astype("float32")
    expected = ops.convert_to_numpy(model(x))
    with force_portable(), export_formulation.using(formulation):
        exported = ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(exported, expected, atol=1e-5)


def test_the_default_formulation_of_every_format_is_a_known_one():
    for target in ("onnx", "litert", "openvino", "tf_saved_model", None):
        assert export_formulation.formulation_for(target) in FORMULATIONS
    with export_formulation.using("tap_sum"):
        assert export_formulation.formulation_for("onnx") == "tap_sum"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_local_similarity_matches_the_reference(rng, case):
    n, h, w, c, s, k, g = case
    queries, keys = random_similarity_inputs(rng, n, h, w, c, s)
    out = export_formulation.local_similarity(validation.upsampling(s, k, g), queries, keys)
    np.testing.assert_allclose(ops.convert_to_numpy(out),
                               local_similarity_reference(queries, keys, s, k, g), atol=1e-5)


def test_a_tap_outside_the_image_has_similarity_zero_whatever_the_query(rng):
    queries, keys = random_similarity_inputs(rng, 1, 3, 3, 2, 2)
    queries[0, 0, 0, 0] = np.inf  # output pixel (0, 0): its taps of row and column -1 are out
    out = ops.convert_to_numpy(export_formulation.local_similarity(
        validation.upsampling(2, 3, 1), queries, keys))
    outside = [0, 1, 2, 3, 6]  # taps (ky, kx) with ky = 0 or kx = 0
    np.testing.assert_array_equal(out[0, 0, 0, outside], 0.0)
    queries[0, 0, 0, 0] = 0.0
    expected = local_similarity_reference(queries, keys, 2, 3, 1)
    np.testing.assert_allclose(out[0, 1:], expected[0, 1:], atol=1e-5)


GUIDED = {
    "fade-s2-k5": (FADE, dict(embedding_channels=4)),
    "fade-s3-k3-ungated": (FADE, dict(scale_factor=3, kernel_size=3, embedding_channels=4,
                                      gated=False)),
    "fade-channels_first": (FADE, dict(embedding_channels=4, data_format="channels_first")),
    "sapa-s2-k5-g2": (SAPA, dict(embedding_channels=4, group_size=2)),
    "sapa-s3-k3-g1": (SAPA, dict(scale_factor=3, kernel_size=3, embedding_channels=6)),
}


@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("layer", GUIDED)
def test_the_guided_layers_exported_path_gives_their_usual_output(rng, formulation, layer):
    cls, config = GUIDED[layer]
    model = cls(implementation="portable", **config)
    s, channels_first = config.get("scale_factor", 2), config.get("data_format") == "channels_first"
    # SAPA's default projections (standard deviation 0.02) give near-uniform kernels.
    decoder = rng.standard_normal((2, 5, 4, 8)).astype("float32")
    encoder = rng.standard_normal((2, 5 * s, 4 * s, 8)).astype("float32")
    if channels_first:
        decoder, encoder = decoder.transpose(0, 3, 1, 2), encoder.transpose(0, 3, 1, 2)
    model.build(encoder.shape, decoder.shape)
    for weight in model.weights:
        weight.assign(rng.uniform(-0.5, 0.5, weight.shape).astype("float32"))
    expected = ops.convert_to_numpy(model(encoder, decoder))
    with force_portable(), export_formulation.using(formulation):
        exported = ops.convert_to_numpy(model(encoder, decoder))
    np.testing.assert_allclose(exported, expected, atol=1e-5)
