"""The reassembly on the JAX backend: the portable path's tap sum, compiled as one XLA
function.

JAX runs everything through XLA, which fuses the tap sum. Called eagerly, it
would dispatch (and compile) its ~100 operations one at a time; one
`jax.jit` per geometry compiles them together once per input shape. Inside a
caller's own `jax.jit` it is inlined.
"""

import functools

import jax

from keras_carafe.ops import portable


@functools.lru_cache(maxsize=None)
def _compiled(geometry):
    return jax.jit(functools.partial(portable.reassemble, geometry, fused=True))


def reassemble(geometry, features, kernels):
    return _compiled(geometry)(features, kernels)
