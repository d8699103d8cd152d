"""Kernel analysis and figures for CARAFE models.

The NumPy helpers (kernels, extraction, attribution) need no plotting library; the
`plot_*` functions import matplotlib when called (`pip install keras-carafe[demo]`).
"""

from keras_carafe.visualize.attribution import share_inside
from keras_carafe.visualize.extraction import carafe_layers, layer_kernels
from keras_carafe.visualize.figures import (
    plot_composed_kernels,
    plot_curves,
    plot_image_grid,
    plot_kernel_entropy,
    plot_kernels,
    plot_loss_curves,
    plot_overlays,
)
from keras_carafe.visualize.kernels import (
    average_pooling_kernel,
    bilinear_kernel_map,
    bilinear_kernels,
    compose_kernels,
    edge_strength,
    kernel_centroid,
    kernel_distance,
    kernel_entropy,
    mean_by_quantile,
    neighbourhood,
    shift_kernels,
    source_pixel,
    strongest_tap,
)

__all__ = [
    "average_pooling_kernel",
    "bilinear_kernel_map",
    "bilinear_kernels",
    "carafe_layers",
    "compose_kernels",
    "edge_strength",
    "kernel_centroid",
    "kernel_distance",
    "kernel_entropy",
    "layer_kernels",
    "mean_by_quantile",
    "neighbourhood",
    "plot_composed_kernels",
    "plot_curves",
    "plot_image_grid",
    "plot_kernel_entropy",
    "plot_kernels",
    "plot_loss_curves",
    "plot_overlays",
    "share_inside",
    "shift_kernels",
    "source_pixel",
    "strongest_tap",
]
