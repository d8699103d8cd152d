"""Matplotlib figures of images, reassembly kernels and attribution maps.

Every function returns a `matplotlib.figure.Figure` built without pyplot, so
nothing depends on (or changes) the active backend: save it with
`fig.savefig(path)`, or leave it as a notebook cell's last expression to
show it.

matplotlib is imported by the figure functions themselves (it comes with the
`demo` extra), so that the NumPy helpers of `keras_carafe.visualize` import
without it.
"""

import numpy as np

from keras_carafe.visualize.kernels import kernel_entropy, neighbourhood, source_pixel

# Colours that stay distinct on grey-scale images.
_MARKER_COLOURS = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4",
                   "#42d4f4", "#f032e6")


def _new_figure(**kwargs):
    """A `matplotlib.figure.Figure`, or an ImportError that says which extra brings it."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("keras_carafe.visualize's figures need matplotlib: "
                          "pip install 'keras-carafe[demo]' (or matplotlib)") from error
    return Figure(**kwargs)


def _show_image(ax, image, **kwargs):
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        kwargs.setdefault("cmap", "gray")
        kwargs.setdefault("vmin", 0.0)
        kwargs.setdefault("vmax", 1.0)
    else:
        image = np.clip(image, 0.0, 1.0)
    ax.imshow(image, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])


def _input_position(pixel, scale_factor, stride=1):
    """Where an output pixel's center lies in input coordinates.

    Upsampling places output pixels with half-pixel centers; downsampling
    (CARAFE++) centres output pixel `p` on input pixel `p * stride`.
    """
    return tuple(((p + 0.5) / scale_factor - 0.5) * stride for p in pixel)


def _grid(n_axes, ncols, panel_size):
    ncols = max(1, min(ncols or n_axes, n_axes))
    nrows = -(-n_axes // ncols)
    fig = _new_figure(figsize=(panel_size * ncols, panel_size * nrows + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n_axes:]:
        fig.delaxes(ax)
    return fig, list(axes[:n_axes])


def plot_kernels(image, kernels, pixels, scale_factor=1, reference_kernels=None,
                 reference_label="bilinear", title=None, panel_size=2.4, stride=1):
    """Draws the k x k reassembly kernels of chosen output pixels over their input windows.

    The first panel shows the whole input with a numbered marker at each
    output pixel; each further panel shows one pixel's k x k input window
    with a filled disc per tap whose area is the tap's weight (and its value
    where it is at least 0.05), and a cross where the output pixel lies.

    Works for both layers: pass `scale_factor` for `CARAFE` (upsampling)
    kernels and `stride` for `CARAFEDownsample` (downsampling) kernels.

    Args:
        image: `(H, W)` or `(H, W, 3)` array in [0, 1] at the layer's input
            resolution (the image the input features were computed from).
        kernels: `(OH, OW, k, k)` array, as `compute_kernels` for one image
            and one group: `(H*s, W*s, k, k)` when upsampling,
            `(ceil(H/stride), ceil(W/stride), k, k)` when downsampling.
        pixels: list of output pixels `(row, col)`.
        scale_factor: int, the upsampling layer's `s` (1 when downsampling).
        reference_kernels: optional array shaped like `kernels` (e.g. from
            `bilinear_kernel_map`, or `average_pooling_kernel` broadcast to
            the kernels' shape), drawn as open circles for comparison.
        reference_label: legend text for `reference_kernels`.
        title: optional figure title.
        panel_size: inches per panel.
        stride: int, the downsampling layer's stride (1 when upsampling).

    Returns:
        Figure with `1 + len(pixels)` axes.

    Raises:
        ValueError: `scale_factor` and `stride` both exceed 1, or either is
            not an integer >= 1.
    """
    kernels = np.asarray(kernels)
    # Validates the geometry before anything is drawn.
    source_pixel((0, 0), scale_factor, stride)
    k = kernels.shape[-1]
    fig, axes = _grid(1 + len(pixels), None, panel_size)
    overview = axes[0]
    _show_image(overview, image)
    overview.set_title("output pixels", fontsize=9)
    entropies = kernel_entropy(kernels[tuple(np.transpose(pixels))]) if pixels else []
    for i, (ax, pixel) in enumerate(zip(axes[1:], pixels)):
        colour = _MARKER_COLOURS[i % len(_MARKER_COLOURS)]
        y, x = _input_position(pixel, scale_factor, stride)
        overview.plot(x, y, "o", ms=7, mfc="none", mec=colour, mew=2)
        overview.annotate(str(i + 1), (x, y), xytext=(4, 4), textcoords="offset points",
                          color=colour, fontsize=8, fontweight="bold")

        _show_image(ax, neighbourhood(image, pixel, scale_factor, k, stride=stride))
        weights = kernels[pixel[0], pixel[1]]
        ky, kx = np.mgrid[0:k, 0:k]
        # Scatter sizes are areas in points^2: a weight of 1 fills the cell.
        cell = (72 * panel_size * 0.8 / k) ** 2
        ax.scatter(kx.ravel(), ky.ravel(), s=weights.ravel() * cell, color=colour,
                   alpha=0.75, linewidths=0)
        if reference_kernels is not None:
            ref = np.asarray(reference_kernels)[pixel[0], pixel[1]]
            ax.scatter(kx.ravel(), ky.ravel(), s=ref.ravel() * cell, facecolors="none",
                       edgecolors="cyan", linewidths=1.0,
                       label=reference_label if i == 0 else None)
        for (wy, wx), w in np.ndenumerate(weights):
            if w >= 0.05:
                ax.text(wx, wy, f"{w:.2f}".lstrip("0"), ha="center", va="center",
                        fontsize=7, color="white")
        r = (k - 1) // 2
        source_y, source_x = source_pixel(pixel, scale_factor, stride)
        ax.plot(r + x - source_x, r + y - source_y, "x", color="white", ms=6, mew=1.5)
        ax.set_title(f"{i + 1}: ({pixel[0]}, {pixel[1]})  H={entropies[i]:.2f}",
                     fontsize=9, color=colour)
    if reference_kernels is not None and pixels:
        axes[1].legend(loc="lower left", fontsize=7, framealpha=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_kernel_entropy(image, entropy, kernel_size, title=None, panel_size=3.5):
    """Shows an image next to the entropy of the reassembly kernel at every output pixel.

    Low entropy means the pixel draws on few input pixels (a decisive
    kernel); `log(k*k)`, the top of the colour scale, means a uniform one.

    Args:
        image: `(H, W)` or `(H, W, 3)` array in [0, 1], at any resolution.
        entropy: `(OH, OW)` array over the layer's output pixels, e.g.
            `kernel_entropy(kernels)`.
        kernel_size: int `k`, which sets the scale's maximum.
        title: optional figure title.
        panel_size: inches per panel.

    Returns:
        Figure with three axes: the image, the entropy map and its colour bar.
    """
    fig = _new_figure(figsize=(2 * panel_size + 0.6, panel_size + 0.3), layout="constrained")
    ax_image, ax_entropy = fig.subplots(1, 2)
    _show_image(ax_image, image)
    ax_image.set_title("image", fontsize=9)
    shown = ax_entropy.imshow(entropy, cmap="magma", vmin=0.0,
                              vmax=np.log(kernel_size * kernel_size), interpolation="nearest")
    ax_entropy.set_xticks([])
    ax_entropy.set_yticks([])
    ax_entropy.set_title("kernel entropy (nats)", fontsize=9)
    bar = fig.colorbar(shown, ax=ax_entropy, shrink=0.85)
    bar.set_label(f"max log({kernel_size}x{kernel_size}) = {np.log(kernel_size ** 2):.2f}",
                  fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_composed_kernels(image, maps, pixels, scale_factor, margin=3, title=None,
                          panel_size=2.6):
    """Draws composed kernels (the input weights of single output pixels) over the input.

    Each panel zooms onto the region where one map is non-zero (plus
    `margin` pixels), shows the input there with the weights as a heat
    overlay, and marks where the output pixel lies.

    Args:
        image: `(H, W)` or `(H, W, 3)` array in [0, 1], the stack's input.
        maps: list of `(H, W)` weight arrays, e.g. from `compose_kernels`.
        pixels: list of the output pixels `(row, col)` the maps belong to.
        scale_factor: int, the total upsampling factor of the stack.
        margin: pixels of context around each map's support.
        title: optional figure title.
        panel_size: inches per panel.

    Returns:
        Figure with `len(maps)` axes.
    """
    fig, axes = _grid(len(maps), None, panel_size)
    for i, (ax, weights, pixel) in enumerate(zip(axes, maps, pixels)):
        ys, xs = np.nonzero(weights > weights.max() * 1e-3)
        top, bottom = max(ys.min() - margin, 0), min(ys.max() + margin + 1, weights.shape[0])
        left, right = max(xs.min() - margin, 0), min(xs.max() + margin + 1, weights.shape[1])
        _show_image(ax, np.asarray(image)[top:bottom, left:right])
        region = weights[top:bottom, left:right]
        overlay = np.ma.masked_less_equal(region, 0.0)
        ax.imshow(overlay, cmap="inferno", alpha=0.65, interpolation="nearest",
                  vmin=0.0, vmax=region.max())
        y, x = _input_position(pixel, scale_factor)
        ax.plot(x - left, y - top, "x", color="cyan", ms=8, mew=2)
        support = int((weights > 0).sum())
        ax.set_title(f"({pixel[0]}, {pixel[1]}): {support} px, max {weights.max():.2f}",
                     fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_image_grid(rows, captions=None, title=None, panel_size=2.0):
    """Shows images in a grid: one row per dict, one column per key.

    Typical use: crops of the same region from a reference and several
    reconstructions, one row per region or per image.

    Args:
        rows: list of dicts from a column name to an `(H, W)` or `(H, W, 3)`
            array in [0, 1]; the first row's keys name and order the columns.
        captions: optional list (one per row) of dicts from a column name to
            a caption shown under that panel.
        title: optional figure title.
        panel_size: inches per panel.

    Returns:
        Figure with `len(rows) * len(rows[0])` axes.
    """
    names = list(rows[0])
    fig, axes = _grid(len(rows) * len(names), len(names), panel_size)
    for r, row in enumerate(rows):
        for c, name in enumerate(names):
            ax = axes[r * len(names) + c]
            _show_image(ax, row[name])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if captions and name in captions[r]:
                ax.set_xlabel(captions[r][name], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_overlays(image, maps, ncols=None, alpha=0.5, cmap="jet", title=None,
                  panel_size=2.6):
    """Shows heat maps (e.g. attributions) over an image, one panel per map.

    Args:
        image: `(H, W)` or `(H, W, 3)` array in [0, 1].
        maps: dict from a panel title to an `(H, W)` map; each is scaled to
            its own [min, max]. A value of None shows the image alone.
        ncols: panels per row (default: all in one row).
        alpha: opacity of the maps.
        cmap: colour map of the maps.
        title: optional figure title.
        panel_size: inches per panel.

    Returns:
        Figure with `len(maps)` axes.
    """
    fig, axes = _grid(len(maps), ncols, panel_size)
    for ax, (name, values) in zip(axes, maps.items()):
        _show_image(ax, image)
        if values is not None:
            values = np.asarray(values, np.float64)
            span = values.max() - values.min()
            scaled = (values - values.min()) / span if span > 0 else np.zeros_like(values)
            ax.imshow(scaled, cmap=cmap, alpha=alpha, interpolation="bilinear")
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_loss_curves(histories, ylabel="training loss", title=None):
    """Plots one loss curve per run on a log scale.

    Args:
        histories: dict from a run name to a list of loss values (one per
            epoch).
        ylabel: label of the y axis.
        title: optional figure title.

    Returns:
        Figure with one axis.
    """
    curves = {name: (np.arange(1, len(values) + 1), values)
              for name, values in histories.items()}
    fig = plot_curves(curves, "epoch", ylabel, title=title)
    fig.axes[0].set_yscale("log")
    return fig


def plot_curves(curves, xlabel, ylabel, levels=None, xscale="linear", title=None):
    """Plots named curves on one axis, with optional constant levels as dashed lines.

    Typical use: a learned upsampler's kernel entropy against edge strength
    (`mean_by_quantile`), with a fixed upsampler's constant entropy as a level.

    Args:
        curves: dict from a name to `(x, y)` arrays.
        xlabel: x axis label.
        ylabel: y axis label.
        levels: optional dict from a name to a constant y value.
        xscale: matplotlib x scale ("linear", "log", "symlog", ...).
        title: optional figure title.

    Returns:
        Figure with one axis: a line per curve and per level.
    """
    fig = _new_figure(figsize=(5.5, 3.5), layout="constrained")
    ax = fig.subplots()
    for name, (x, y) in curves.items():
        ax.plot(x, y, marker="o", ms=3, label=name)
    for i, (name, value) in enumerate((levels or {}).items()):
        ax.axhline(value, ls="--", lw=1.2, color=f"C{len(curves) + i}", label=name)
    ax.set_xscale(xscale)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def _over_image(ax, values, image_shape, **kwargs):
    """Shows a map of a coarser grid stretched over an `(H, W)` image's pixels."""
    h, w = image_shape[:2]
    ax.imshow(values, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest",
              **kwargs)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)


def plot_kernel_maps(images, entropies, kernel_sizes, title=None, panel_size=1.9):
    """Kernel-entropy maps of several reassembly layers for a batch of images.

    One row per image: the image, then one map per layer (the entropy of the
    kernel at each of the layer's output pixels, stretched over the image),
    on a scale from 0 (one tap takes all the weight) to `log(k*k)` (uniform).

    Args:
        images: list of `(H, W)` arrays in [0, 1].
        entropies: dict from a layer name to a list (one per image) of
            `(OH, OW)` arrays, e.g. `kernel_entropy` of the layer's kernels.
        kernel_sizes: dict from a layer name to its `k`.
        title: optional figure title.
        panel_size: inches per panel.

    Returns:
        Figure with `len(images) * (1 + len(entropies))` axes.
    """
    names = list(entropies)
    columns = 1 + len(names)
    fig, axes = _grid(len(images) * columns, columns, panel_size)
    for r, image in enumerate(images):
        _show_image(axes[r * columns], image)
        if r == 0:
            axes[0].set_title("input", fontsize=8)
        for c, name in enumerate(names, start=1):
            ax = axes[r * columns + c]
            ax.set_xticks([])
            ax.set_yticks([])
            _over_image(ax, entropies[name][r], np.shape(image), cmap="magma", vmin=0.0,
                        vmax=np.log(kernel_sizes[name] ** 2))
            if r == 0:
                ax.set_title(f"{name}\nentropy 0..{np.log(kernel_sizes[name] ** 2):.2f}",
                             fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_spread(images, points, maps, point_stride, map_stride, masks=None, captions=None,
                title=None, panel_size=2.0):
    """Where the composed weights of points on a coarse level land, drawn on the input.

    One row per point: the input with the point (a cross at the centre of
    its cell) and, if given, the outline of its mask; then one panel per
    map, the map stretched over the input pixels it covers.

    Args:
        images: list of `(H, W)` arrays in [0, 1], one per row.
        points: list of `(row, col)` on the coarse level, one per row.
        maps: dict from a name (e.g. "CARAFE", "bilinear") to a list, one
            per row, of `(H / map_stride, W / map_stride)` weight arrays, e.g.
            from `spread_kernels`.
        point_stride: the coarse level's stride relative to the input.
        map_stride: the maps' stride relative to the input.
        masks: optional list of boolean `(H, W)` arrays (e.g. each point's
            object), outlined in every panel.
        captions: optional dict from a map name to a list of strings (one
            per row) shown under its panels.
        title: optional figure title.
        panel_size: inches per panel.

    Returns:
        Figure with `len(points) * (1 + len(maps))` axes.
    """
    names = list(maps)
    columns = 1 + len(names)
    fig, axes = _grid(len(points) * columns, columns, panel_size)
    for r, (image, point) in enumerate(zip(images, points)):
        y, x = ((p + 0.5) * point_stride - 0.5 for p in point)
        row_axes = axes[r * columns:(r + 1) * columns]
        _show_image(row_axes[0], image)
        row_axes[0].set_xlabel(f"point ({point[0]}, {point[1]})", fontsize=7)
        for c, ax in enumerate(row_axes):
            if c:
                _show_image(ax, image)
                weights = np.asarray(maps[names[c - 1]][r], np.float64)
                shown = np.ma.masked_less_equal(weights, weights.max() * 1e-3)
                _over_image(ax, shown, np.shape(image), cmap="inferno", alpha=0.7,
                            vmin=0.0, vmax=weights.max())
                if captions and names[c - 1] in captions:
                    ax.set_xlabel(captions[names[c - 1]][r], fontsize=7)
                if r == 0:
                    ax.set_title(names[c - 1], fontsize=8)
            if masks is not None and np.any(masks[r]):
                ax.contour(np.asarray(masks[r], float), levels=[0.5], colors="cyan",
                           linewidths=0.7)
            ax.plot(x, y, "+", color="lime", ms=9, mew=1.6)
    if points:
        axes[0].set_title("input, point", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
