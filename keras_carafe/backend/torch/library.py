"""The compiled PyTorch operators: built by `keras_carafe.library`, loaded with
`torch.ops.load_library`, and completed here with what PyTorch asks of custom operators.

The library defines `keras_carafe::forward` (the reassembly), and its two
adjoints `keras_carafe::features_grad` and `keras_carafe::kernels_grad`, with
CPU and (where built) CUDA kernels. This module registers for each one:

- a fake kernel (shapes only), which `torch.compile` and `torch.export` trace;
- an autograd formula. The three maps are bilinear, and each one's
  derivatives are calls of the others (see `keras_carafe.backend.jax.compiled`
  for the algebra), so gradients of gradients work through them too;
- a `torch.func.vmap` rule that folds the mapped axis into the batch.
"""

import torch

from keras_carafe.library import load as loader

OpUnavailableError = loader.OpUnavailableError

NAMES = ("forward", "features_grad", "kernels_grad")


def adjoints(maps, kind, first, second, attrs, grad, needs=(True, True)):
    """The vector-Jacobian products of map `kind` at (first, second) with cotangent `grad`,
    written with `maps` (an object with the three maps as attributes), None where
    `needs` says a derivative is not wanted.

    The maps are bilinear, each the partial derivative of `<d, forward(f, w)>` in one of
    its three arguments, so each one's adjoints are the other two maps.
    """
    d_first = d_second = None
    if kind == "forward":  # (features, kernels)
        if needs[0]:
            d_first = maps.features_grad(grad, second, first.shape[1], first.shape[2], *attrs)
        if needs[1]:
            d_second = maps.kernels_grad(grad, first, *attrs)
    elif kind == "features_grad":  # (grad_output, kernels); attrs start with height, width
        attrs = attrs[2:]
        if needs[0]:
            d_first = maps.forward(grad, second, *attrs)
        if needs[1]:
            d_second = maps.kernels_grad(first, grad, *attrs)
    else:  # kernels_grad: (grad_output, features)
        if needs[0]:
            d_first = maps.forward(second, grad, *attrs)
        if needs[1]:
            d_second = maps.features_grad(first, grad, second.shape[1], second.shape[2],
                                          *attrs)
    return d_first, d_second


def output_size(size, scale, stride):
    """Output rows (or columns) for `size` input ones (works on SymInts too)."""
    return size * scale if stride == 1 else (size + stride - 1) // stride


class Operators:
    """The loaded operators (`forward`, `features_grad`, `kernels_grad`) and the devices
    they have kernels for."""

    def __init__(self, report):
        torch.ops.load_library(report.library)
        namespace = torch.ops.keras_carafe
        self.forward = namespace.forward.default
        self.features_grad = namespace.features_grad.default
        self.kernels_grad = namespace.kernels_grad.default
        self.platforms = ("cpu",) + (("cuda",) if report.cuda_architectures else ())
        _register(self)


def _register(ops):
    forward, features_grad, kernels_grad = ops.forward, ops.features_grad, ops.kernels_grad

    # --- shapes ---
    def forward_fake(features, kernels, scale, stride, kernel_size, groups):
        n, h, w, c = features.shape
        return features.new_empty(
            (n, output_size(h, scale, stride), output_size(w, scale, stride), c))

    def features_grad_fake(grad_output, kernels, height, width, scale, stride, kernel_size,
                           groups):
        n, _, _, c = grad_output.shape
        return grad_output.new_empty((n, height, width, c))

    def kernels_grad_fake(grad_output, features, scale, stride, kernel_size, groups):
        n, h, w, _ = features.shape
        return grad_output.new_empty((n, output_size(h, scale, stride),
                                      output_size(w, scale, stride),
                                      groups * kernel_size * kernel_size))

    for op, fake in ((forward, forward_fake), (features_grad, features_grad_fake),
                     (kernels_grad, kernels_grad_fake)):
        torch.library.register_fake(op, fake)

    # --- derivatives: each map's adjoints are the other maps ---
    def save_inputs(ctx, inputs, output):
        first, second, *attrs = inputs
        ctx.save_for_backward(first, second)
        ctx.attrs = attrs

    def autograd_formula(kind):
        def backward(ctx, grad):
            first, second = ctx.saved_tensors
            return (*adjoints(ops, kind, first, second, ctx.attrs, grad, ctx.needs_input_grad),
                    *([None] * len(ctx.attrs)))
        return backward

    for kind in NAMES:
        torch.library.register_autograd(getattr(ops, kind), autograd_formula(kind),
                                        setup_context=save_inputs)

    # --- vmap: the mapped axis joins the batch axis ---
    def vmap_rule(op):
        def rule(info, in_dims, first, second, *attrs):
            moved = []
            for tensor, dim in zip((first, second), in_dims[:2]):
                if dim is None:
                    tensor = tensor.unsqueeze(0).expand(info.batch_size, *tensor.shape)
                else:
                    tensor = tensor.movedim(dim, 0)
                moved.append(tensor)
            n = moved[0].shape[1]
            out = op(*(m.reshape(info.batch_size * n, *m.shape[2:]) for m in moved), *attrs)
            return out.reshape(info.batch_size, n, *out.shape[1:]), 0
        return rule

    for op in (forward, features_grad, kernels_grad):
        torch.library.register_vmap(op, vmap_rule(op))


def load():
    """The LoadedLibrary of the operators (its `module` an `Operators`); raises
    OpUnavailableError with the reason."""
    return loader.load("torch", Operators)
