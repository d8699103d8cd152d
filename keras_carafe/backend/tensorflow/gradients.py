"""Gradients of the compiled ops, to any order.

Both the reassembly (upsampling) and the downsampling are bilinear maps
`out = A(features, kernels)`, and each backward op returns the two adjoints
`(A_kernels^T dy, A_features^T dy)`, which are bilinear in `(dy, kernels)` and
`(dy, features)`. The derivatives of the backward op are therefore again
forward and backward calls: for upstream gradients `(u, v)` of its two outputs,

    d/d dy       = A(u, kernels) + A(features, v)
    d/d features = first output of backward(dy, ., v)
    d/d kernels  = second output of backward(dy, u, .)

and one backward call with `(dy, u, v)` yields the last two at once. Every op
used here has a registered gradient, so gradient penalties, Hessian-vector
products and forward-mode accumulators work through the compiled ops.
"""

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class BilinearOp:
    forward_type: str  # TF op type, e.g. "KerasCarafeReassemble"
    backward_type: str
    forward: object  # module function: forward(features, kernels, **attrs)
    backward: object  # module function: backward(grad_output, features, kernels, **attrs)
    attrs: tuple  # attribute names shared by both ops


def bilinear_ops(module):
    """The bilinear op pairs of `module` (the loaded op library)."""
    pairs = [("KerasCarafeReassemble", "keras_carafe_reassemble",
              ("scale_factor", "kernel_size", "group_size")),
             ("KerasCarafeDownsample", "keras_carafe_downsample",
              ("stride", "kernel_size", "group_size"))]
    return [
        BilinearOp(op_type, op_type + "Grad", getattr(module, name),
                   getattr(module, name + "_grad"), attrs)
        for op_type, name, attrs in pairs
    ]


def _attrs(op, names):
    return {name: op.get_attr(name) for name in names}


def _forward_gradient(spec):
    def gradient(op, grad):
        features, kernels = op.inputs
        return spec.backward(grad, features, kernels, **_attrs(op, spec.attrs))

    return gradient


def backward_gradient(spec):
    """The gradient function of `spec`'s backward op (see the module docstring)."""

    def gradient(op, grad_of_grad_features, grad_of_grad_kernels):
        grad_output, features, kernels = op.inputs
        u, v = grad_of_grad_features, grad_of_grad_kernels
        if u is None and v is None:
            return None, None, None
        attrs = _attrs(op, spec.attrs)
        terms = []
        if u is not None:
            terms.append(spec.forward(u, kernels, **attrs))
        if v is not None:
            terms.append(spec.forward(features, v, **attrs))
        grad_grad_output = tf.add_n(terms) if len(terms) > 1 else terms[0]
        # The features slot only feeds the kernels gradient and vice versa, so
        # zeros stand in for a missing upstream without changing the other output.
        cross_features, cross_kernels = spec.backward(
            grad_output,
            u if u is not None else tf.zeros_like(features),
            v if v is not None else tf.zeros_like(kernels),
            **attrs)
        return (grad_grad_output,
                cross_features if v is not None else None,
                cross_kernels if u is not None else None)

    return gradient


def register(module):
    """Registers the gradients of every op pair in `module`; returns their op types."""
    registered = []
    for spec in bilinear_ops(module):
        for op_type, function in ((spec.forward_type, _forward_gradient(spec)),
                                  (spec.backward_type, backward_gradient(spec))):
            try:
                tf.RegisterGradient(op_type)(function)
            except KeyError:
                pass  # Registered earlier in this process; that registration stands.
            registered.append(op_type)
    return registered
