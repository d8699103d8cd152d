"""Kernel analysis, figures and a training callback for CARAFE models.

The NumPy helpers (kernels, extraction, attribution) need no plotting library; the
`plot_*` functions and `KernelMapsCallback` import matplotlib when they draw
(`pip install keras-carafe[demo]`).
"""

from keras_carafe.visualize.attribution import share_inside
from keras_carafe.visualize.callback import KernelMapsCallback, upsampling_chain
from keras_carafe.visualize.extraction import carafe_layers, layer_kernels
from keras_carafe.visualize.figures import (
    plot_composed_kernels,
    plot_curves,
    plot_image_grid,
    plot_kernel_entropy,
    plot_kernel_maps,
    plot_kernels,
    plot_loss_curves,
    plot_overlays,
    plot_spread,
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
    spread_kernels,
    spread_weight_on,
    strongest_tap,
)

__all__ = [
    "KernelMapsCallback",
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
    "plot_kernel_maps",
    "plot_kernels",
    "plot_loss_curves",
    "plot_overlays",
    "plot_spread",
    "share_inside",
    "shift_kernels",
    "source_pixel",
    "spread_kernels",
    "spread_weight_on",
    "strongest_tap",
    "upsampling_chain",
]
