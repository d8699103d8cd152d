"""A training callback that draws what a model's reassembly layers do, epoch by epoch."""

import os

import keras
import numpy as np

from keras_carafe.layers import CARAFE
from keras_carafe.visualize.extraction import carafe_layers, layer_kernels
from keras_carafe.visualize.figures import plot_kernel_maps, plot_spread
from keras_carafe.visualize.kernels import bilinear_kernel_map, kernel_entropy, spread_kernels


def upsampling_chain(model, kernels):
    """The model's CARAFE upsampling layers, coarsest first, if they form a chain.

    In an FPN-style top-down pathway the upsamplers feed each other (through
    additions), so their kernels compose (`spread_kernels`): each layer's
    output has the size of the next layer's input.

    Args:
        model: a functional model.
        kernels: `layer_kernels(model, inputs)`.

    Returns:
        List of `CARAFE` layers (empty where they do not chain).
    """
    chain = sorted((layer for layer in carafe_layers(model) if isinstance(layer, CARAFE)),
                   key=lambda layer: kernels[layer.name].shape[1])
    for lower, upper in zip(chain[:-1], chain[1:]):
        if kernels[lower.name].shape[1:3] != tuple(
                n // upper.scale_factor for n in kernels[upper.name].shape[1:3]):
            return []
    return chain


def _figure_pixels(fig):
    """A Matplotlib figure rendered to an RGBA uint8 array `(H, W, 4)`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _tensorflow_or_none():
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf


class _EventWriter:
    """TensorBoard images and scalars written with TensorFlow's own summary ops.

    `tf.summary.image` and `tf.summary.scalar` need the tensorboard package,
    which TensorFlow no longer installs; `tf.summary.write` with the image
    and scalar plugins' metadata writes the same records without it.
    """

    def __init__(self, tf, directory):
        self.tf = tf
        self.writer = tf.summary.create_file_writer(directory)

    def _metadata(self, plugin):
        proto = self.tf.compat.v1.SummaryMetadata
        return proto(plugin_data=proto.PluginData(plugin_name=plugin))

    def image(self, tag, rgb, step):
        """One `(H, W, 3)` uint8 picture, as TensorBoard's image plugin stores it."""
        tf = self.tf
        height, width = rgb.shape[:2]
        record = tf.stack([tf.as_string(width), tf.as_string(height), tf.io.encode_png(rgb)])
        with self.writer.as_default():
            tf.summary.write(tag, record, step=step, metadata=self._metadata("images"))

    def scalar(self, tag, value, step):
        with self.writer.as_default():
            self.tf.summary.write(tag, self.tf.constant(float(value), self.tf.float32),
                                  step=step, metadata=self._metadata("scalars"))

    def flush(self):
        self.writer.flush()


class KernelMapsCallback(keras.callbacks.Callback):
    """Writes the kernel maps and composed weights of a fixed batch after every epoch.

    For each reassembly layer of the model (`CARAFE` and `CARAFEDownsample`)
    it draws the entropy of the kernel at every output pixel of every image
    of the batch; for the chain of `CARAFE` upsamplers it draws where chosen
    points on the coarsest level land on the finest one through the learned
    kernels (`spread_kernels`), next to where bilinear upsampling through
    the same stages would put them. Each epoch goes to PNG files,
    `directory/epoch_001/kernel_maps.png` and `.../composed_weights.png`,
    and, where TensorFlow is installed, to TensorBoard event files in
    `directory` (the same pictures as images, the mean kernel entropy of
    each layer as scalars), on any Keras backend.

    Args:
        images: the fixed batch, as the model takes it (e.g. `(N, H, W, C)`).
        directory: output folder (created).
        points: list of `(image index, row, col)` on the input of the
            coarsest CARAFE upsampler; default: the centre of that level for
            each of the first (at most four) images.
        display: optional `(N, H, W)` grey-scale arrays in [0, 1] to draw the
            maps on; default: the first channel of `images`, scaled to
            [0, 1].
        every: draw after every `every`-th epoch (and after the last one
            that `fit` runs).
        tensorboard: True, False, or "auto" (when TensorFlow is installed).
        dpi: resolution of the PNG files.
    """

    def __init__(self, images, directory, points=None, display=None, every=1,
                 tensorboard="auto", dpi=80):
        super().__init__()
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be an integer >= 1, got {every!r}")
        if tensorboard not in (True, False, "auto"):
            raise ValueError(f"`tensorboard` must be True, False or 'auto', got {tensorboard!r}")
        self.images = np.asarray(images)
        self.directory = directory
        self.points = points
        if display is None:
            first = self.images[..., 0].astype(np.float64)
            span = first.max() - first.min()
            display = (first - first.min()) / span if span > 0 else np.zeros_like(first)
        self.display = np.asarray(display)
        self.every = every
        self.dpi = dpi
        tf = _tensorflow_or_none() if tensorboard else None
        if tensorboard is True and tf is None:
            raise ImportError("tensorboard=True needs TensorFlow, which is not installed")
        self._tf = tf
        self._writer = None
        self.written = []

    def on_train_begin(self, logs=None):
        if not carafe_layers(self.model):
            raise ValueError(f"model {self.model.name!r} has no CARAFE or CARAFEDownsample "
                             "layer of its own to draw")
        os.makedirs(self.directory, exist_ok=True)
        if self._tf is not None and self._writer is None:
            self._writer = _EventWriter(self._tf, self.directory)

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every and epoch + 1 != last:
            return
        self.draw(epoch + 1)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def _default_points(self, coarse_shape):
        return [(i, coarse_shape[0] // 2, coarse_shape[1] // 2)
                for i in range(min(len(self.images), 4))]

    def draw(self, epoch):
        """Computes and writes the pictures of `epoch`; returns the paths of the PNG files."""
        kernels = layer_kernels(self.model, self.images)
        layers = {layer.name: layer for layer in carafe_layers(self.model)}
        entropies = {name: [kernel_entropy(k[i, :, :, 0]) for i in range(len(k))]
                     for name, k in kernels.items()}
        sizes = {name: layers[name].kernel_size for name in kernels}
        folder = os.path.join(self.directory, f"epoch_{epoch:03d}")
        os.makedirs(folder, exist_ok=True)
        figures = {"kernel_maps": plot_kernel_maps(
            list(self.display), entropies, sizes,
            title=f"epoch {epoch}: kernel entropy of every reassembly layer")}
        chain = upsampling_chain(self.model, kernels)
        if chain:
            figures["composed_weights"] = self._composed_figure(chain, kernels, epoch)
        paths = []
        for name, fig in figures.items():
            path = os.path.join(folder, f"{name}.png")
            fig.savefig(path, dpi=self.dpi)
            paths.append(path)
            if self._writer is not None:
                self._writer.image(name, _figure_pixels(fig)[..., :3], epoch)
        if self._writer is not None:
            for name, maps in entropies.items():
                self._writer.scalar(f"mean_kernel_entropy/{name}", np.mean(maps), epoch)
            self._writer.flush()
        self.written += paths
        return paths

    def _composed_figure(self, chain, kernels, epoch):
        factors = [layer.scale_factor for layer in chain]
        first = kernels[chain[0].name]
        coarse = (first.shape[1] // factors[0], first.shape[2] // factors[0])
        points = self.points or self._default_points(coarse)
        finest = kernels[chain[-1].name].shape[1:3]
        image_shape = self.display.shape[1:3]
        learned, fixed = [], []
        for index, row, col in points:
            per_layer = [kernels[layer.name][index, :, :, 0] for layer in chain]
            learned.append(spread_kernels(per_layer, factors, [(row, col)])[0])
            bilinear = [bilinear_kernel_map(k.shape[0] // s, k.shape[1] // s, s, 3,
                                            clamp_border=True)
                        for k, s in zip(per_layer, factors)]
            fixed.append(spread_kernels(bilinear, factors, [(row, col)])[0])
        return plot_spread(
            [self.display[i] for i, _, _ in points], [(r, c) for _, r, c in points],
            {"CARAFE": learned, "bilinear": fixed},
            point_stride=image_shape[0] / coarse[0], map_stride=image_shape[0] / finest[0],
            title=f"epoch {epoch}: where points of the coarsest level land after "
                  f"{len(chain)} upsampling(s)")

