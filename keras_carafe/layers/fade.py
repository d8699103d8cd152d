"""The FADE guided upsampling layer."""

import keras
from keras import ops

from keras_carafe import backend
from keras_carafe.family_cost import fade_cost
from keras_carafe.layers import upsampler_support as support
from keras_carafe.ops import export_formulation as exported
from keras_carafe.ops import implementation as impl
from keras_carafe.ops import validation
from keras_carafe.ops.reassembly import carafe


@keras.saving.register_keras_serializable(package="keras_carafe")
class FADE(keras.layers.Layer):
    """Fusing the Assets of Decoder and Encoder (Lu et al., ECCV 2022; IJCV 2024).

    Upsamples a low-resolution decoder feature with the guidance of the
    high-resolution encoder feature of the same stage. CARAFE's reassembly of
    the decoder feature, with kernels predicted from both features by the
    "semi-shift" convolution: each feature is compressed to
    `embedding_channels` by a 1x1 convolution (the decoder's without bias),
    one `encoder_kernel_size` convolution (shared) is applied to each, and
    its decoder response, repeated over the `s x s` output pixels of each
    input pixel, is added to its encoder response; a softmax over the
    `kernel_size**2` logits gives the kernels. A gate, the sigmoid of a 1x1
    convolution of the decoder feature (repeated likewise), then blends the
    encoder feature back in:

        out = gate * encoder_feature + (1 - gate) * carafe(decoder_feature, kernels)

    Defaults (and the module they follow) are those of the official FADE
    (`poppinace/fade`, `FADE_L2H.FADE`, used in its SegFormer and A2U
    experiments): `kernel_size` 5 (`up_kernel_size`), `embedding_channels`
    64, a 3x3 semi-shift encoder, the gate from the decoder feature, Glorot
    (Xavier) uniform kernels and zero biases. `gated=False` is the official
    `SemiShiftUp` (the reassembly alone). The official code upsamples the
    gate and the decoder logits by 2 whatever its `scale`; here both follow
    `scale_factor`, which is 2 by default.

    Args:
        scale_factor: int >= 1, the upsampling factor `s`.
        kernel_size: odd int, the reassembly kernel size `k_up`.
        embedding_channels: int, channels of both compressed features.
        encoder_kernel_size: odd int, the semi-shift convolution's size.
        gated: bool, whether the gate blends the encoder feature in.
        data_format: `"channels_last"`, `"channels_first"` or `None` (the
            Keras `image_data_format()`), for both inputs and the output.
        implementation: `"auto"`, `"op"`, `"fallback"` or `"portable"`, as
            in `keras_carafe.ops.carafe` (and the same XLA behaviour as
            `CARAFE`).
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, kernel_constraint, bias_constraint: for every
            convolution of the layer (gate, compressors, semi-shift encoder).
        **kwargs: base `Layer` arguments (`name`, `dtype`, `trainable`, ...).

    Call arguments:
        encoder_feature: `(batch, height * s, width * s, channels)` for
            `channels_last` (or `(batch, channels, height * s, width * s)`).
        decoder_feature: `(batch, height, width, channels)` (or
            `(batch, channels, height, width)`), with the channels of
            `encoder_feature` (the gate blends the two). Sizes may be
            unknown; channels must be known.

    Output shape:
        The shape of `encoder_feature`.

    Example:

    >>> import numpy as np
    >>> from keras_carafe import FADE
    >>> encoder = np.random.rand(2, 32, 32, 16).astype("float32")
    >>> decoder = np.random.rand(2, 16, 16, 16).astype("float32")
    >>> tuple(FADE(embedding_channels=8)(encoder, decoder).shape)
    (2, 32, 32, 16)
    """

    def __init__(
        self,
        scale_factor=2,
        kernel_size=5,
        embedding_channels=64,
        encoder_kernel_size=3,
        gated=True,
        data_format=None,
        implementation="auto",
        kernel_initializer="glorot_uniform",
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
        self.encoder_kernel_size = validation.check_int_argument(
            "encoder_kernel_size", encoder_kernel_size, 1, odd=True)
        if not isinstance(gated, bool):
            raise TypeError(f"`gated` must be a bool, got {gated!r}")
        self.gated = gated
        self.data_format = support.standardize_data_format(data_format)
        impl.check_implementation(implementation)
        module = backend.current()
        impl.check_backend(implementation, module)
        self.implementation = implementation
        # As CARAFE: Keras may compile the layer unless it runs TensorFlow's compiled op.
        self.supports_jit = module.supports_jit(implementation)

        self._settings = support.conv_settings(kernel_initializer, bias_initializer,
                                               kernel_regularizer, bias_regularizer,
                                               kernel_constraint, bias_constraint)

        def conv(filters, size, name, use_bias=True):
            settings = dict(self._settings)
            if not use_bias:
                for key in ("bias_initializer", "bias_regularizer", "bias_constraint"):
                    settings.pop(key)
            return keras.layers.Conv2D(filters, size, padding="same", use_bias=use_bias,
                                       data_format="channels_last", name=name,
                                       dtype=self.dtype_policy, **settings)

        e, k = self.embedding_channels, self.kernel_size
        self.gate = conv(1, 1, "gate") if gated else None
        self.encoder_compressor = conv(e, 1, "encoder_compressor")
        self.decoder_compressor = conv(e, 1, "decoder_compressor", use_bias=False)
        # One convolution for both features: the semi-shift shares its weights.
        self.content_encoder = conv(k * k, self.encoder_kernel_size, "content_encoder")

    def build(self, encoder_feature_shape, decoder_feature_shape):
        encoder = support.check_rank_and_channels(self, "encoder_feature", encoder_feature_shape)
        decoder = support.check_rank_and_channels(self, "decoder_feature", decoder_feature_shape)
        if encoder[3] != decoder[3]:
            raise ValueError(
                f"FADE blends `encoder_feature` into the upsampled `decoder_feature`, so their "
                f"channels must be equal; got {encoder[3]} and {decoder[3]}")
        support.check_pair_shapes(self, encoder, decoder, self.scale_factor)
        channels = decoder[3]
        if self.gate is not None:
            self.gate.build((None, None, None, channels))
        self.encoder_compressor.build((None, None, None, channels))
        self.decoder_compressor.build((None, None, None, channels))
        self.content_encoder.build((None, None, None, self.embedding_channels))

    def _inputs(self, encoder_feature, decoder_feature):
        encoder = support.to_channels_last(encoder_feature, self.data_format)
        decoder = support.to_channels_last(decoder_feature, self.data_format)
        return support.checked_pair(self, encoder, decoder, self.scale_factor)

    def _kernels(self, encoder, decoder):
        """Normalized kernels (N, H*s, W*s, k*k) in the compute dtype."""
        logits = (self.content_encoder(self.encoder_compressor(encoder))
                  + support.nearest_upsample(
                      self.content_encoder(self.decoder_compressor(decoder)),
                      self.scale_factor))
        return support.softmax_logits(logits, 1, self.kernel_size ** 2,
                                      validation.dtype_name(encoder))

    def _exported_reassembly(self, encoder, decoder, formulation):
        """The reassembly for exported graphs (`keras_carafe.ops.export_formulation`): the
        logits added and normalized at cell resolution, where the decoder's are one copy
        per sub-pixel instead of a nearest upsampling."""
        s = self.scale_factor
        geometry = validation.upsampling(s, self.kernel_size, 1)
        logits = (exported.space_to_depth(self.content_encoder(self.encoder_compressor(encoder)),
                                          s)
                  + support.per_sub_pixel(self.content_encoder(self.decoder_compressor(decoder)),
                                          s))
        return exported.reassemble_logits(geometry, decoder, logits, formulation)

    def call(self, encoder_feature, decoder_feature):
        support.check_export_format(self)
        encoder, decoder = self._inputs(encoder_feature, decoder_feature)
        # One call that torch.compile keeps as a constant (no graph break).
        formulation = backend.current().exported_formulation()
        if formulation:
            upsampled = self._exported_reassembly(encoder, decoder, formulation)
        else:
            upsampled = carafe(decoder, self._kernels(encoder, decoder),
                               scale_factor=self.scale_factor, kernel_size=self.kernel_size,
                               group_size=1, implementation=self.implementation)
        if self.gate is None:
            out = upsampled
        else:
            gate = ops.sigmoid(support.nearest_upsample(self.gate(decoder), self.scale_factor))
            out = gate * encoder + (1 - gate) * upsampled
        return support.from_channels_last(out, self.data_format)

    def compute_kernels(self, encoder_feature, decoder_feature):
        """The normalized reassembly kernels as (N, H*s, W*s, 1, k, k), for inspection.

        Index `[n, oh, ow, 0, ky, kx]` is the weight that output pixel
        `(oh, ow)` gives to decoder pixel
        `(oh // s + ky - (k - 1) // 2, ow // s + kx - (k - 1) // 2)`; the
        spatial axes come first for either data format.
        """
        encoder_feature = ops.convert_to_tensor(encoder_feature)
        decoder_feature = ops.convert_to_tensor(decoder_feature)
        if not self.built:
            self.build(tuple(encoder_feature.shape), tuple(decoder_feature.shape))
        encoder, decoder = self._inputs(ops.cast(encoder_feature, self.compute_dtype),
                                        ops.cast(decoder_feature, self.compute_dtype))
        kernels = self._kernels(encoder, decoder)
        n, h, w, _ = ops.shape(kernels)
        return ops.reshape(kernels, (n, h, w, 1, self.kernel_size, self.kernel_size))

    def compute_output_shape(self, encoder_feature_shape, decoder_feature_shape):
        return tuple(encoder_feature_shape)

    def cost(self, height, width, channels):
        """Parameters and FLOPs on a decoder feature of (height, width, channels) and its
        encoder feature of (height * s, width * s, channels)."""
        return fade_cost(height, width, channels, scale_factor=self.scale_factor,
                         kernel_size=self.kernel_size,
                         embedding_channels=self.embedding_channels,
                         encoder_kernel_size=self.encoder_kernel_size, gated=self.gated)

    def get_config(self):
        config = super().get_config()
        config.update(
            scale_factor=self.scale_factor,
            kernel_size=self.kernel_size,
            embedding_channels=self.embedding_channels,
            encoder_kernel_size=self.encoder_kernel_size,
            gated=self.gated,
            data_format=self.data_format,
            implementation=self.implementation,
        )
        for arg, value in self._settings.items():
            config[arg] = support.SERIALIZERS[arg.rsplit("_", 1)[1]].serialize(value)
        return config
