"""The family in the comparisons' upsampler factory (`keras_carafe.demo.upsamplers`)."""

import keras
import numpy as np
import pytest

from keras_carafe import SAPA, DySample, FADE
from keras_carafe.demo.upsamplers import FAMILY_UPSAMPLERS, GUIDED_UPSAMPLERS, make_upsampler


@pytest.mark.parametrize("name, kind", [("fade", FADE), ("sapa", SAPA), ("dysample", DySample)])
def test_family_upsamplers_map_a_stage_to_the_next_finer_one(rng, name, kind):
    layer = make_upsampler(name, 2, 16, seed=3, name_prefix="up1_")
    assert isinstance(layer, kind) and layer.name == "up1_upsampler"
    x = rng.standard_normal((2, 4, 5, 16)).astype("float32")
    guide = rng.standard_normal((2, 8, 10, 16)).astype("float32")
    y = layer(guide, x) if name in GUIDED_UPSAMPLERS else layer(x)
    assert tuple(y.shape) == (2, 8, 10, 16)


@pytest.mark.parametrize("name", FAMILY_UPSAMPLERS)
def test_the_seed_fixes_the_initial_weights(name):
    def weights(seed):
        layer = make_upsampler(name, 2, 16, seed=seed)
        shape = (None, None, None, 16)
        layer.build(*((shape, shape) if name in GUIDED_UPSAMPLERS else (shape,)))
        return [keras.ops.convert_to_numpy(w) for w in layer.weights]

    same, other = weights(1), weights(2)
    assert all(np.array_equal(a, b) for a, b in zip(same, weights(1)))
    assert not all(np.array_equal(a, b) for a, b in zip(same, other))

