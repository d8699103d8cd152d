"""Calls into the compiled PyTorch operators (loaded by `library`, which `choose` did before
any call comes here).

Under `torch.compile` the reassembly is the `keras_carafe::forward` operator itself, one
node in the traced graph with the autograd formula registered on it. Run eagerly it goes
through `torch.autograd.Function`s over the same operators, which add forward-mode
derivatives (`torch.func.jvp`, `torch.autograd.forward_ad`): custom operators have no
forward-mode formula of their own, and would silently drop the tangents. The JVP of a
bilinear map is a sum of two calls of the map, and each Function's backward calls the
other Functions (`library.adjoints`), so both modes compose to any order.
"""

import types

import torch

from keras_carafe.backend.torch import library


def attributes(geometry):
    """(scale, stride, kernel_size, groups) of a `keras_carafe.ops.geometry.Geometry`."""
    up = geometry.upsampling
    return (geometry.factor if up else 1, 1 if up else geometry.factor, geometry.kernel_size,
            geometry.group_size)


def _operator(kind):
    return getattr(torch.ops.keras_carafe, kind).default


def _function(kind):
    """A torch.autograd.Function computing map `kind` with forward and reverse mode."""

    def forward(first, second, *attrs):
        return _operator(kind)(first, second, *attrs)

    def setup_context(ctx, inputs, output):
        first, second, *attrs = inputs
        ctx.save_for_backward(first, second)
        ctx.save_for_forward(first, second)
        ctx.attrs = attrs

    def backward(ctx, grad):
        first, second = ctx.saved_tensors
        return (*library.adjoints(FUNCTIONS, kind, first, second, ctx.attrs, grad,
                                  ctx.needs_input_grad), *([None] * len(ctx.attrs)))

    def jvp(ctx, tangent_first, tangent_second, *unused):
        first, second = ctx.saved_tensors
        terms = []
        if tangent_first is not None:
            terms.append(getattr(FUNCTIONS, kind)(tangent_first, second, *ctx.attrs))
        if tangent_second is not None:
            terms.append(getattr(FUNCTIONS, kind)(first, tangent_second, *ctx.attrs))
        return sum(terms[1:], terms[0]) if terms else None

    function = type(f"CarafeMap_{kind}", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
        "backward": staticmethod(backward), "jvp": staticmethod(jvp),
        # The operators' own vmap rules batch the forward pass.
        "generate_vmap_rule": True,
    })
    return function.apply


# The three maps as differentiable functions, for eager code.
FUNCTIONS = types.SimpleNamespace(**{kind: _function(kind) for kind in library.NAMES})


def reassemble(geometry, features, kernels):
    if torch.compiler.is_compiling():
        return _operator("forward")(features, kernels, *attributes(geometry))
    return FUNCTIONS.forward(features, kernels, *attributes(geometry))
