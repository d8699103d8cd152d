"""What the content-aware reassembly layers share: the channel compressor, the
settings of both convolutions, the normalization of the predicted kernels, the
data format, the export checks and the configuration."""

import keras
from keras import ops

from keras_carafe import backend
from keras_carafe.ops import export_formulation
from keras_carafe.ops import implementation as impl
from keras_carafe.ops import validation

_SERIALIZERS = {"initializer": keras.initializers, "regularizer": keras.regularizers,
                "constraint": keras.constraints}


def _conv_settings(kernel_initializer, bias_initializer, kernel_regularizer,
                   bias_regularizer, kernel_constraint, bias_constraint):
    """Conv2D keyword arguments, each resolved the Keras way (names, dicts, objects)."""
    return dict(
        kernel_initializer=keras.initializers.get(kernel_initializer),
        bias_initializer=keras.initializers.get(bias_initializer),
        kernel_regularizer=keras.regularizers.get(kernel_regularizer),
        bias_regularizer=keras.regularizers.get(bias_regularizer),
        kernel_constraint=keras.constraints.get(kernel_constraint),
        bias_constraint=keras.constraints.get(bias_constraint),
    )


def _standardize_data_format(data_format):
    if data_format is None:
        return keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be 'channels_last', 'channels_first' or None, "
            f"got {data_format!r}"
        )
    return data_format


class ReassemblyLayer(keras.layers.Layer):
    """Base of `CARAFE` and `CARAFEDownsample`; not a layer of its own.

    A subclass creates `self.encoder` (with `self._encoder_settings()`) and
    implements `_geometry`, `_cell_logits` (the encoder's output at cell
    resolution, `(N, Hc, Wc, phases*G*k*k)`), `_kernel_logits` (the same at
    the output resolution, `(N, OH, OW, G*k*k)`), `_reassemble`,
    `_output_size` and `cost`.
    """

    def __init__(
        self,
        kernel_size,
        encoder_kernel_size,
        compressed_channels,
        group_size,
        data_format,
        implementation,
        compressor_kernel_initializer="glorot_uniform",
        compressor_bias_initializer="zeros",
        compressor_kernel_regularizer=None,
        compressor_bias_regularizer=None,
        compressor_kernel_constraint=None,
        compressor_bias_constraint=None,
        encoder_kernel_initializer=None,
        encoder_bias_initializer="zeros",
        encoder_kernel_regularizer=None,
        encoder_bias_regularizer=None,
        encoder_kernel_constraint=None,
        encoder_bias_constraint=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.kernel_size = validation.check_int_argument("kernel_size", kernel_size, 1, odd=True)
        self.group_size = validation.check_int_argument("group_size", group_size, 1)
        self.encoder_kernel_size = validation.check_int_argument(
            "encoder_kernel_size", encoder_kernel_size, 1, odd=True)
        self.compressed_channels = validation.check_int_argument(
            "compressed_channels", compressed_channels, 1)
        impl.check_implementation(implementation)
        module = backend.current()
        impl.check_backend(implementation, module)
        self.data_format = _standardize_data_format(data_format)
        self.implementation = implementation
        # Whether Keras may compile this layer (its `jit_compile="auto"`): not
        # TensorFlow's compiled op, which XLA cannot hold.
        self.supports_jit = module.supports_jit(implementation)
        self.input_spec = keras.layers.InputSpec(ndim=4)

        if encoder_kernel_initializer is None:
            # Near-zero logits: the initial kernels average the neighbourhood,
            # as in the reference implementation.
            encoder_kernel_initializer = keras.initializers.RandomNormal(stddev=0.001)
        self._conv_settings = {
            "compressor": _conv_settings(
                compressor_kernel_initializer, compressor_bias_initializer,
                compressor_kernel_regularizer, compressor_bias_regularizer,
                compressor_kernel_constraint, compressor_bias_constraint),
            "encoder": _conv_settings(
                encoder_kernel_initializer, encoder_bias_initializer,
                encoder_kernel_regularizer, encoder_bias_regularizer,
                encoder_kernel_constraint, encoder_bias_constraint),
        }
        self.compressor = keras.layers.Conv2D(
            self.compressed_channels, 1, data_format="channels_last", name="compressor",
            dtype=self.dtype_policy, **self._conv_settings["compressor"])

    def _encoder_settings(self):
        """Keyword arguments of the content encoder's Conv2D."""
        return dict(data_format="channels_last", name="encoder", dtype=self.dtype_policy,
                    **self._conv_settings["encoder"])

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        name = type(self).__name__
        if len(input_shape) != 4:
            raise ValueError(
                f"{name} expects 4D input (batch, height, width, channels) for "
                f"{self.data_format}, got shape {input_shape}"
            )
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError(
                f"{name} needs a known channel dimension (axis {self._channel_axis} for "
                f"{self.data_format}), got input shape {input_shape}"
            )
        if channels % self.group_size:
            raise ValueError(
                f"input channels ({channels}) must be divisible by `group_size` "
                f"({self.group_size})"
            )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={self._channel_axis: channels})
        self.compressor.build((None, None, None, channels))
        self.encoder.build((None, None, None, self.compressed_channels))

    def _to_channels_last(self, x):
        return x if self.data_format == "channels_last" else ops.transpose(x, (0, 2, 3, 1))

    def _from_channels_last(self, y):
        return y if self.data_format == "channels_last" else ops.transpose(y, (0, 3, 1, 2))

    def _normalized_kernels(self, x):
        """Kernels (N, OH, OW, G*k*k) in x's dtype, each group's k*k weights summing to 1."""
        logits = self._kernel_logits(x)
        n, h, w, channels = ops.shape(logits)
        taps = self.kernel_size * self.kernel_size
        grouped = ops.reshape(logits, (n, h, w, self.group_size, taps))
        dtype = validation.dtype_name(x)
        # 16-bit softmaxes run in float32: float16 exponentials of the logits
        # lose the small weights. float32 and float64 keep their precision.
        softmax_dtype = dtype if dtype in ("float32", "float64") else "float32"
        grouped = ops.cast(grouped, softmax_dtype)
        # A softmax over one weight is 1 (Keras warns about such softmaxes).
        weights = ops.softmax(grouped, axis=-1) if taps > 1 else ops.ones_like(grouped)
        return ops.cast(ops.reshape(weights, (n, h, w, channels)), dtype)

    def _check_export_format(self):
        """Raises, naming this layer, where the format being exported cannot express it."""
        target, dtype = backend.current().export_format(), self.compute_dtype
        reason = None
        if target == "litert" and dtype != "float32":
            reason = ("LiteRT's builtin operators run its convolutions and the reassembly in "
                      "float32 only (anything else needs the Flex delegate); export a float32 "
                      "copy of the model and quantize that instead "
                      "(keras_carafe.quantization.export_int8)")
        elif target == "onnx" and dtype == "bfloat16":
            reason = "ONNX convolutions take float16, float32 or float64, not bfloat16"
        if reason:
            raise ValueError(f"{type(self).__name__} layer {self.name!r} cannot be exported to "
                             f"{target}: it computes in {dtype} and {reason}.")

    def _exported_reassembly(self, x, formulation):
        """The layer's output for exported graphs (`keras_carafe.ops.export_formulation`):
        the kernels normalized and used at cell resolution, with no pixel shuffle
        before the reassembly and its inverse inside it."""
        return export_formulation.reassemble_logits(self._geometry(), x, self._cell_logits(x),
                                                    formulation)

    def call(self, inputs):
        self._check_export_format()
        x = self._to_channels_last(inputs)
        # One call that torch.compile keeps as a constant (no graph break).
        formulation = backend.current().exported_formulation()
        if formulation:
            y = self._exported_reassembly(x, formulation)
        else:
            y = self._reassemble(x, self._normalized_kernels(x))
        return self._from_channels_last(y)

    def compute_kernels(self, inputs):
        """The normalized reassembly kernels as (N, OH, OW, G, k, k), for inspection.

        The spatial axes come first for either data format; subclasses say
        which input pixel each weight belongs to.
        """
        inputs = ops.convert_to_tensor(inputs)
        x = ops.cast(self._to_channels_last(inputs), self.compute_dtype)
        if not self.built:
            self.build(tuple(inputs.shape))
        kernels = self._normalized_kernels(x)
        n, h, w, _ = ops.shape(kernels)
        k = self.kernel_size
        return ops.reshape(kernels, (n, h, w, self.group_size, k, k))

    def compute_output_shape(self, input_shape):
        def resized(dim):
            return None if dim is None else self._output_size(dim)

        if self.data_format == "channels_last":
            n, h, w, c = input_shape
            return (n, resized(h), resized(w), c)
        n, c, h, w = input_shape
        return (n, c, resized(h), resized(w))

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            encoder_kernel_size=self.encoder_kernel_size,
            compressed_channels=self.compressed_channels,
            group_size=self.group_size,
            data_format=self.data_format,
            implementation=self.implementation,
        )
        for prefix, settings in self._conv_settings.items():
            for arg, value in settings.items():
                kind = arg.rsplit("_", 1)[1]
                config[f"{prefix}_{arg}"] = _SERIALIZERS[kind].serialize(value)
        return config
