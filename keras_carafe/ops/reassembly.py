"""The public CARAFE reassembly functions: validate once, then hand over to the backend."""

from keras import ops

from keras_carafe import backend
from keras_carafe.ops import implementation as impl
from keras_carafe.ops import validation


def _reassemble(geometry, features, kernels, implementation):
    impl.check_implementation(implementation)
    module = backend.current()
    impl.check_backend(implementation, module)
    features = ops.convert_to_tensor(features)
    kernels = ops.convert_to_tensor(kernels)
    shapes_known = validation.check_static(geometry, features, kernels)
    return module.reassemble(module.choose(implementation), geometry, features, kernels,
                             shapes_known)


def carafe(features, kernels, scale_factor=2, kernel_size=5, group_size=1,
           implementation="auto"):
    """Reassembles `features` with per-pixel kernels (the CARAFE upsampling step).

    Each output pixel `(oh, ow)` is the weighted sum of the
    `kernel_size x kernel_size` neighbourhood of its source pixel
    `(oh // scale_factor, ow // scale_factor)`, with its own weights; all
    channels of a group share one kernel; features outside the image count
    as zero. Kernels are used as given (the `CARAFE` layer normalizes them).

    Args:
        features: tensor of shape `(N, H, W, C)`, float16, bfloat16, float32
            or float64.
        kernels: tensor of shape `(N, H*s, W*s, G*k*k)` and the dtype of
            `features`, channel `g*k*k + ky*k + kx` holding the weight of
            tap `(ky, kx)` for group `g` (the order of mmcv's CARAFE).
        scale_factor: int `s >= 1`.
        kernel_size: odd int `k >= 1`.
        group_size: int `G >= 1` dividing `C`.
        implementation: `"auto"`, `"op"` (the compiled CPU/CUDA kernels: a
            TensorFlow op, XLA FFI handlers on JAX, a `torch.library` op on
            PyTorch; raises if they cannot be built, loaded or run here),
            `"fallback"` (pure TensorFlow; TensorFlow backend only) or
            `"portable"` (`keras.ops` only: every backend and export format).
            `"auto"` uses the compiled kernels where they build and can run
            on the device, and the portable path while a model is exported
            (and inside `keras_carafe.ops.force_portable()`); elsewhere, with
            one warning per process saying why, the portable path on JAX and
            PyTorch, and on TensorFlow the portable path under XLA and the
            fallback otherwise. `KERAS_CARAFE_FORCE_FALLBACK=1` turns `"op"`
            and `"auto"` into the fallback on TensorFlow.

    Returns:
        Tensor of shape `(N, H*s, W*s, C)` in the dtype of `features`.
        16-bit inputs are accumulated in float32.
    """
    geometry = validation.upsampling(scale_factor, kernel_size, group_size)
    return _reassemble(geometry, features, kernels, implementation)


def carafe_downsample(features, kernels, stride=2, kernel_size=5, group_size=1,
                      implementation="auto"):
    """Reassembles `features` with per-pixel kernels at a stride (CARAFE++ downsampling).

    Each output pixel `(oh, ow)` is the weighted sum of the
    `kernel_size x kernel_size` neighbourhood centred on input pixel
    `(oh * stride, ow * stride)`, with its own weights; all channels of a
    group share one kernel; features outside the image count as zero:

        out[n, oh, ow, c] = sum over ky, kx in [0, k) of
            kernels[n, oh, ow, g*k*k + ky*k + kx]
            * features[n, oh*stride + ky - r, ow*stride + kx - r, c]

    with `g = c // (C / G)` and `r = (k - 1) / 2`.

    Args:
        features: tensor of shape `(N, H, W, C)`, float16, bfloat16, float32
            or float64.
        kernels: tensor of shape `(N, ceil(H/stride), ceil(W/stride), G*k*k)`
            and the dtype of `features`, in the channel order of `carafe`.
        stride: int `>= 1`.
        kernel_size: odd int `k >= 1`.
        group_size: int `G >= 1` dividing `C`.
        implementation: as in `carafe`.

    Returns:
        Tensor of shape `(N, ceil(H/stride), ceil(W/stride), C)` in the dtype
        of `features`. 16-bit inputs are accumulated in float32.
    """
    geometry = validation.downsampling(stride, kernel_size, group_size)
    return _reassemble(geometry, features, kernels, implementation)
