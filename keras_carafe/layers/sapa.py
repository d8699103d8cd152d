"""The SAPA guided upsampling layer."""

import keras
from keras import ops

from keras_carafe import backend
from keras_carafe.family_cost import sapa_cost
from keras_carafe.layers import upsampler_support as support
from keras_carafe.ops import export_formulation as exported
from keras_carafe.ops import implementation as impl
from keras_carafe.ops import validation
from keras_carafe.ops.reassembly import carafe
from keras_carafe.ops.similarity import local_similarity


@keras.saving.register_keras_serializable(package="keras_carafe")
class SAPA(keras.layers.Layer):
    """Similarity-Aware Point Affiliation (Lu et al., NeurIPS 2022).

    Upsamples a low-resolution decoder feature with the guidance of the
    high-resolution encoder feature of the same stage. Both are layer
    normalized over their channels and projected linearly to
    `embedding_channels`: the encoder feature gives one query per output
    pixel, the decoder feature one key per input pixel. Each output pixel's
    kernel is the softmax of its query's dot products with the
    `kernel_size x kernel_size` keys around its source pixel
    (`keras_carafe.ops.local_similarity`; keys outside the image count as
    zero), and the output is CARAFE's reassembly of the (unnormalized)
    decoder feature with those kernels. With `group_size` G > 1 the
    embedding and the decoder channels are split into G groups, each with
    its own similarity and kernels.

    Defaults are those of the `SAPA` module of the official `SAPA.py`
    (`poppinace/sapa`): `kernel_size` 5 (`up_kernel_size`),
    `embedding_channels` 64 (`embedding_dim`), one group, biased
    projections (`qkv_bias=True`), `LayerNorm` with PyTorch's epsilon 1e-5
    and unit gain, zero bias; projection kernels normal with standard
    deviation 0.02 (its `trunc_normal_(std=.02)` truncates at +-2, a
    hundred deviations out: a plain normal) and zero biases.

    Args:
        scale_factor: int >= 1, the upsampling factor `s`.
        kernel_size: odd int, the reassembly kernel size.
        embedding_channels: int, channels of the queries and keys; divisible
            by `group_size`.
        group_size: int >= 1, the number of groups; divides
            `embedding_channels` and the decoder feature's channels.
        use_bias: bool, whether the projections have biases.
        epsilon: float > 0, the layer normalizations' epsilon.
        data_format: `"channels_last"`, `"channels_first"` or `None` (the
            Keras `image_data_format()`), for both inputs and the output.
        implementation: `"auto"`, `"op"`, `"fallback"` or `"portable"`, for
            the similarity and the reassembly, as in
            `keras_carafe.ops.carafe` (the same XLA behaviour as `CARAFE`).
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint: for both
            projections (`None` kernel initializer: the official normal).
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, ...).

    Call arguments:
        encoder_feature: `(batch, height * s, width * s, encoder_channels)`
            for `channels_last` (or the `channels_first` equivalent).
        decoder_feature: `(batch, height, width, channels)`; sizes may be
            unknown, channels must be known.

    Output shape:
        `(batch, height * s, width * s, channels)`: the decoder feature's
        channels at the encoder feature's size.

    Example:

    >>> import numpy as np
    >>> from keras_carafe import SAPA
    >>> encoder = np.random.rand(2, 32, 32, 8).astype("float32")
    >>> decoder = np.random.rand(2, 16, 16, 16).astype("float32")
    >>> tuple(SAPA(embedding_channels=8)(encoder, decoder).shape)
    (2, 32, 32, 16)
    """

    def __init__(
        self,
        scale_factor=2,
        kernel_size=5,
        embedding_channels=64,
        group_size=1,
        use_bias=True,
        epsilon=1e-5,
        data_format=None,
        implementation="auto",
        kernel_initializer=None,
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.scale_factor = validation.check_int_argument("scale_factor", scale_factor, 1)
        self.kernel_size = validation.check_int_argument("kernel_size", kernel_size, 1, odd=True)
        self.embedding_channels = validation.check_int_argument(
            "embedding_channels", embedding_channels, 1)
        self.group_size = validation.check_int_argument("group_size", group_size, 1)
        if self.embedding_channels % self.group_size:
            raise ValueError(
                f"`embedding_channels` ({self.embedding_channels}) must be divisible by "
                f"`group_size` ({self.group_size}): each group compares its own share of the "
                f"query and key channels")
        if not isinstance(use_bias, bool):
            raise TypeError(f"`use_bias` must be a bool, got {use_bias!r}")
        self.use_bias = use_bias
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(f"`epsilon` must be a number > 0, got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.data_format = support.standardize_data_format(data_format)
        impl.check_implementation(implementation)
        module = backend.current()
        impl.check_backend(implementation, module)
        self.implementation = implementation
        self.supports_jit = module.supports_jit(implementation)

        if kernel_initializer is None:
            kernel_initializer = keras.initializers.RandomNormal(stddev=0.02)
        self._settings = support.conv_settings(kernel_initializer, bias_initializer,
                                               kernel_regularizer, bias_regularizer,
                                               kernel_constraint, bias_constraint)

    def build(self, encoder_feature_shape, decoder_feature_shape):
        encoder = support.check_rank_and_channels(self, "encoder_feature", encoder_feature_shape)
        decoder = support.check_rank_and_channels(self, "decoder_feature", decoder_feature_shape)
        if decoder[3] % self.group_size:
            raise ValueError(
                f"`decoder_feature` channels ({decoder[3]}) must be divisible by `group_size` "
                f"({self.group_size}): each group of channels is reassembled with its own "
                f"kernels")
        support.check_pair_shapes(self, encoder, decoder, self.scale_factor)
        e, settings = self.embedding_channels, self._settings

        def weight(name, shape, kind):
            if kind == "gain" or kind == "shift":
                return self.add_weight(name=name, shape=shape,
                                       initializer="ones" if kind == "gain" else "zeros")
            return self.add_weight(name=name, shape=shape,
                                   initializer=settings[f"{kind}_initializer"],
                                   regularizer=settings[f"{kind}_regularizer"],
                                   constraint=settings[f"{kind}_constraint"])

        # The official LayerNorm gains and biases, and the linear projections.
        self.encoder_gamma = weight("encoder_gamma", (encoder[3],), "gain")
        self.encoder_beta = weight("encoder_beta", (encoder[3],), "shift")
        self.decoder_gamma = weight("decoder_gamma", (decoder[3],), "gain")
        self.decoder_beta = weight("decoder_beta", (decoder[3],), "shift")
        self.query_kernel = weight("query_kernel", (encoder[3], e), "kernel")
        self.key_kernel = weight("key_kernel", (decoder[3], e), "kernel")
        self.query_bias = weight("query_bias", (e,), "bias") if self.use_bias else None
        self.key_bias = weight("key_bias", (e,), "bias") if self.use_bias else None

    def _inputs(self, encoder_feature, decoder_feature):
        encoder = support.to_channels_last(encoder_feature, self.data_format)
        decoder = support.to_channels_last(decoder_feature, self.data_format)
        return support.checked_pair(self, encoder, decoder, self.scale_factor)

    def _normalize(self, x, gamma, beta):
        """LayerNorm over the channels, in float32 for 16-bit inputs. Written out with sums:
        Keras's LayerNormalization and `ops.mean` compute float64 in float32 on JAX and
        PyTorch."""
        dtype = validation.dtype_name(x)
        x = ops.cast(x, "float64" if dtype == "float64" else "float32")
        channels = x.shape[-1]
        centred = x - ops.sum(x, axis=-1, keepdims=True) / channels
        variance = ops.sum(ops.square(centred), axis=-1, keepdims=True) / channels
        normed = centred * ops.rsqrt(variance + self.epsilon)
        return ops.cast(normed * ops.cast(gamma, x.dtype) + ops.cast(beta, x.dtype), dtype)

    def _project(self, x, kernel, bias):
        """The linear projection over the channels (an einsum: Keras's matmul computes
        float64 in float32 on PyTorch)."""
        out = ops.einsum("nhwc,ce->nhwe", x, ops.cast(kernel, x.dtype))
        return out if bias is None else out + ops.cast(bias, x.dtype)

    def _kernels(self, encoder, decoder):
        """Normalized kernels (N, H*s, W*s, G*k*k) in the compute dtype."""
        queries, keys = self._queries_and_keys(encoder, decoder)
        similarity = local_similarity(queries, keys, self.scale_factor, self.kernel_size,
                                      self.group_size, implementation=self.implementation)
        return support.softmax_logits(similarity, self.group_size, self.kernel_size ** 2,
                                      validation.dtype_name(decoder))

    def _queries_and_keys(self, encoder, decoder):
        queries = self._project(self._normalize(encoder, self.encoder_gamma, self.encoder_beta),
                                self.query_kernel, self.query_bias)
        keys = self._project(self._normalize(decoder, self.decoder_gamma, self.decoder_beta),
                             self.key_kernel, self.key_bias)
        return queries, keys

    def _exported_reassembly(self, encoder, decoder, formulation):
        """The output for exported graphs (`keras_carafe.ops.export_formulation`): rank 4,
        the similarities normalized and used at cell resolution."""
        geometry = validation.upsampling(self.scale_factor, self.kernel_size, self.group_size)
        queries, keys = self._queries_and_keys(encoder, decoder)
        # Keys outside the image are zero padding: their similarity is 0, as the op's.
        logits = exported.similarity_cells(geometry, queries, keys, mask=False)
        return exported.reassemble_logits(geometry, decoder, logits, formulation)

    def call(self, encoder_feature, decoder_feature):
        support.check_export_format(self)
        encoder, decoder = self._inputs(encoder_feature, decoder_feature)
        # One call that torch.compile keeps as a constant (no graph break).
        formulation = backend.current().exported_formulation()
        if formulation:
            out = self._exported_reassembly(encoder, decoder, formulation)
        else:
            out = carafe(decoder, self._kernels(encoder, decoder),
                         scale_factor=self.scale_factor, kernel_size=self.kernel_size,
                         group_size=self.group_size, implementation=self.implementation)
        return support.from_channels_last(out, self.data_format)

    def compute_kernels(self, encoder_feature, decoder_feature):
        """The normalized kernels as (N, H*s, W*s, G, k, k), for inspection.

        Index `[n, oh, ow, g, ky, kx]` is the weight that output pixel
        `(oh, ow)` gives to decoder pixel
        `(oh // s + ky - (k - 1) // 2, ow // s + kx - (k - 1) // 2)` in group
        `g`; the spatial axes come first for either data format.
        """
        encoder_feature = ops.convert_to_tensor(encoder_feature)
        decoder_feature = ops.convert_to_tensor(decoder_feature)
        if not self.built:
            self.build(tuple(encoder_feature.shape), tuple(decoder_feature.shape))
        encoder, decoder = self._inputs(ops.cast(encoder_feature, self.compute_dtype),
                                        ops.cast(decoder_feature, self.compute_dtype))
        kernels = self._kernels(encoder, decoder)
        n, h, w, _ = ops.shape(kernels)
        k = self.kernel_size
        return ops.reshape(kernels, (n, h, w, self.group_size, k, k))

    def compute_output_shape(self, encoder_feature_shape, decoder_feature_shape):
        encoder = support.channels_last_shape(encoder_feature_shape, self.data_format)
        decoder = support.channels_last_shape(decoder_feature_shape, self.data_format)
        return support.in_data_format(encoder[:3] + decoder[3:], self.data_format)

    def cost(self, height, width, channels, encoder_channels=None):
        """Parameters and FLOPs on a decoder feature of (height, width, channels) and an
        encoder feature of (height * s, width * s, encoder_channels), by default with the
        decoder's channels."""
        return sapa_cost(height, width, channels, encoder_channels,
                         scale_factor=self.scale_factor, kernel_size=self.kernel_size,
                         embedding_channels=self.embedding_channels,
                         group_size=self.group_size, use_bias=self.use_bias)

    def get_config(self):
        config = super().get_config()
        config.update(
            scale_factor=self.scale_factor,
            kernel_size=self.kernel_size,
            embedding_channels=self.embedding_channels,
            group_size=self.group_size,
            use_bias=self.use_bias,
            epsilon=self.epsilon,
            data_format=self.data_format,
            implementation=self.implementation,
        )
        for arg, value in self._settings.items():
            config[arg] = support.SERIALIZERS[arg.rsplit("_", 1)[1]].serialize(value)
        return config
