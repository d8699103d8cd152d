"""The portable path on JAX: its tap sum compiled as one XLA function.

JAX runs everything through XLA, which fuses the tap sum. Called eagerly, it
would dispatch (and compile) its ~100 operations one at a time; one
`jax.jit` per geometry compiles them together once per input shape. Inside a
caller's own `jax.jit` it is inlined.

The function is rematerialized (`jax.checkpoint`): its backward pass slices
the features again instead of keeping the k*k shifted windows of the forward
pass, which XLA would otherwise write out in full. Forward plus backward at
the benchmark shape takes about 60% of the time that way (README,
performance).
"""

import functools

import jax

from keras_carafe.ops import portable


@functools.lru_cache(maxsize=None)
def _compiled(geometry):
    return jax.jit(jax.checkpoint(functools.partial(portable.reassemble, geometry, fused=True)))


def reassemble(geometry, features, kernels):
    return _compiled(geometry)(features, kernels)
