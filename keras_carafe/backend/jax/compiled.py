"""The compiled kernels on JAX: three bilinear primitives lowered to the XLA FFI handlers.

The reassembly `F(features, kernels)` is bilinear, and so are its two
adjoints, the features gradient `Bf(grad_output, kernels)` and the kernels
gradient `Bw(grad_output, features)`: all three are partial derivatives of
the trilinear form `T(d, f, w) = <d, F(f, w)>`. Each one's transposes are
therefore the other two (and itself):

    F:  d/df  -> Bf(ct, w),  d/dw -> Bw(ct, f)
    Bf: d/dd  -> F(ct, w),   d/dw -> Bw(d, ct)
    Bw: d/dd  -> F(f, ct),   d/df -> Bf(d, ct)

With `ad.defbilinear` (the JVP of a bilinear map is a sum of two calls of
the map) JAX differentiates them in both modes, to any order: `jax.grad`,
`jax.jvp`, `jax.jacfwd`/`jacrev`, Hessian-vector products. A batching rule
folds a `jax.vmap` axis into the batch, and each primitive lowers to the
handler of the platform it is compiled for (CPU, or CUDA where built). On
several devices the lowering partitions the call along the batch axis, so
that each device runs the kernels on its own shard (`_partitioned`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from keras_carafe.backend.jax import library

forward_p = Primitive("keras_carafe_forward")
features_grad_p = Primitive("keras_carafe_features_grad")
kernels_grad_p = Primitive("keras_carafe_kernels_grad")
# Each primitive lowers to the handlers of its map (library.MAPS).
_KIND_OF = {forward_p: "forward", features_grad_p: "features_grad",
            kernels_grad_p: "kernels_grad"}
_PRIMITIVES = {kind: primitive for primitive, kind in _KIND_OF.items()}

# Attributes of every primitive, as the handlers take them; `features_grad`
# also carries the features' height and width, which its inputs do not fix
# when downsampling.
ATTRIBUTES = ("scale", "stride", "kernel_size", "groups")


def attributes(geometry):
    """The primitives' attributes of a `keras_carafe.ops.geometry.Geometry`."""
    up = geometry.upsampling
    return dict(scale=geometry.factor if up else 1, stride=1 if up else geometry.factor,
                kernel_size=geometry.kernel_size, groups=geometry.group_size)


def _output_size(size, scale, stride):
    return size * scale if stride == 1 else -(-size // stride)


def forward(features, kernels, **attrs):
    return forward_p.bind(features, kernels, **attrs)


def features_grad(grad_output, kernels, height, width, **attrs):
    return features_grad_p.bind(grad_output, kernels, height=height, width=width, **attrs)


def kernels_grad(grad_output, features, **attrs):
    return kernels_grad_p.bind(grad_output, features, **attrs)


# --- shapes ---------------------------------------------------------------------------


def _forward_abstract(features, kernels, *, scale, stride, kernel_size, groups):
    n, h, w, c = features.shape
    return jax.core.ShapedArray(
        (n, _output_size(h, scale, stride), _output_size(w, scale, stride), c), features.dtype)


def _features_grad_abstract(grad_output, kernels, *, height, width, scale, stride,
                            kernel_size, groups):
    n, _, _, c = grad_output.shape
    return jax.core.ShapedArray((n, height, width, c), grad_output.dtype)


def _kernels_grad_abstract(grad_output, features, *, scale, stride, kernel_size, groups):
    n, h, w, _ = features.shape
    return jax.core.ShapedArray(
        (n, _output_size(h, scale, stride), _output_size(w, scale, stride),
         groups * kernel_size * kernel_size), grad_output.dtype)


forward_p.def_abstract_eval(_forward_abstract)
features_grad_p.def_abstract_eval(_features_grad_abstract)
kernels_grad_p.def_abstract_eval(_kernels_grad_abstract)


# --- eager calls: each primitive compiled on its own, once per parameter set ------------


@functools.lru_cache(maxsize=None)
def _compiled_alone(primitive, params):
    return jax.jit(lambda *args: primitive.bind(*args, **dict(params)))


for _primitive in (forward_p, features_grad_p, kernels_grad_p):
    _primitive.def_impl(functools.partial(
        lambda primitive, *args, **params: _compiled_alone(
            primitive, tuple(sorted(params.items())))(*args), _primitive))


# --- derivatives ----------------------------------------------------------------------


def _attrs_only(params):
    return {name: params[name] for name in ATTRIBUTES}


def _size_of(features):
    """(height, width) of a features operand: a value, or the stand-in of the one being
    transposed for (both carry an abstract value)."""
    aval = getattr(features, "aval", None)
    shape = aval.shape if aval is not None else features.shape
    return shape[1], shape[2]


ad.defbilinear(
    forward_p,
    lambda ct, f, w, **p: features_grad(ct, w, *_size_of(f), **p),
    lambda ct, f, w, **p: kernels_grad(ct, f, **p))
ad.defbilinear(
    features_grad_p,
    lambda ct, d, w, **p: forward(ct, w, **_attrs_only(p)),
    lambda ct, d, w, **p: kernels_grad(d, ct, **_attrs_only(p)))
ad.defbilinear(
    kernels_grad_p,
    lambda ct, d, f, **p: forward(f, ct, **p),
    lambda ct, d, f, **p: features_grad(d, ct, *_size_of(f), **p))


# --- vmap -----------------------------------------------------------------------------


def _batch(primitive, args, dims, **params):
    """Folds the mapped axis into the batch axis: (B, N, ...) -> (B*N, ...)."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    moved = [jnp.moveaxis(a, d, 0) if d is not None
             else jnp.broadcast_to(a, (size, *a.shape)) for a, d in zip(args, dims)]
    n = moved[0].shape[1]
    out = primitive.bind(*(m.reshape((size * n, *m.shape[2:])) for m in moved), **params)
    return out.reshape((size, n, *out.shape[1:])), 0


for _primitive in (forward_p, features_grad_p, kernels_grad_p):
    batching.primitive_batchers[_primitive] = functools.partial(_batch, _primitive)

# The lowering partitions calls on several devices with `custom_partitioning`,
# which needs the device assignment while lowering; JAX's own primitives that
# do the same (its cuDNN attention) declare it in this set. Where a JAX
# release lacks it, sharded programs still compute the right values, with the
# operands gathered onto every device.
try:
    from jax._src import dispatch as _dispatch

    _dispatch.prim_requires_devices_during_lowering.update(
        (forward_p, features_grad_p, kernels_grad_p))
except (ImportError, AttributeError):  # pragma: no cover - other JAX releases
    pass


# --- lowering -------------------------------------------------------------------------


def _handler_call(kind, platform):
    """A lowering rule calling the FFI handler of `kind` on `platform`."""
    rule = jax.ffi.ffi_lowering(library.target_name(kind, platform))
    primitive = _PRIMITIVES[kind]

    def lower(ctx, *operands, **params):
        if getattr(ctx.module_context.axis_context, "num_devices", 1) > 1:
            # A program partitioned over several devices (jit with shardings):
            # without a rule XLA would gather whole operands onto every device.
            partitioned = _partitioned(primitive, tuple(sorted(params.items())))
            return mlir.lower_fun(partitioned, multiple_results=False)(ctx, *operands)
        return rule(ctx, *operands, **{name: np.int64(params[name]) for name in ATTRIBUTES})

    return lower


# Einsum-like sharding rules of the three maps; only the batch factor `n`
# may stay sharded (the kernels read neighbouring rows and every channel of a
# group shares one kernel), the others are gathered first if they are.
_SHARDING_RULES = {
    "forward": "n h w c, n i j q -> n i j c",
    "features_grad": "n i j c, n i j q -> n h w c",
    "kernels_grad": "n i j c, n h w c -> n i j q",
}


def _replicated_factors(rule):
    """Every factor of `rule` but the batch, in order of appearance (as Shardy wants)."""
    factors = []
    for letter in rule.replace("->", ",").replace(",", " ").split():
        if letter != "n" and letter not in factors:
            factors.append(letter)
    return tuple(factors)


@functools.lru_cache(maxsize=None)
def _partitioned(primitive, params):
    """`primitive` with `params`, partitioned along the batch axis: each device calls the
    handler on its own shard of the batch, with no communication."""
    from jax.experimental.custom_partitioning import custom_partitioning
    from jax.sharding import NamedSharding, PartitionSpec

    params = dict(params)

    def bind(first, second):
        return primitive.bind(first, second, **params)

    def batch_sharding(mesh, arg_shapes):
        spec = getattr(arg_shapes[0].sharding, "spec", ())
        return NamedSharding(mesh, PartitionSpec(spec[0] if len(spec) else None))

    def infer_sharding_from_operands(mesh, arg_shapes, result_shape):
        return batch_sharding(mesh, arg_shapes)

    def partition(mesh, arg_shapes, result_shape):
        # On each device the same call, on its shard.
        sharding = batch_sharding(mesh, arg_shapes)
        return mesh, bind, sharding, (sharding, sharding)

    call = custom_partitioning(bind)
    rule = _SHARDING_RULES[_KIND_OF[primitive]]
    call.def_partition(partition=partition,
                       infer_sharding_from_operands=infer_sharding_from_operands,
                       sharding_rule=rule, need_replication_factors=_replicated_factors(rule))
    return call


def register_lowerings(platforms):
    """Lowers the primitives to the handlers of `platforms` ("cpu", "cuda")."""
    for primitive, kind in _KIND_OF.items():
        for platform in platforms:
            mlir.register_lowering(primitive, _handler_call(kind, platform), platform=platform)


# --- the reassembly -------------------------------------------------------------------


def reassemble(geometry, features, kernels):
    """The reassembly of `geometry` with the compiled kernels (inputs already validated)."""
    loaded = library.load()
    _register_once(loaded.module.platforms)
    return forward(features, kernels, **attributes(geometry))


@functools.lru_cache(maxsize=None)
def _register_once(platforms):
    register_lowerings(platforms)
