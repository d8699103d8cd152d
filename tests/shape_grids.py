"""Problem sizes shared by the test modules: (batch, height, width, channels, factor,
kernel_size, group_size), where factor is the scale factor (upsampling) or the stride
(downsampling)."""

# Values: every implementation against the NumPy reference.
CASES = [
    (1, 1, 1, 1, 1, 1, 1),      # smallest problem
    (2, 3, 4, 4, 2, 3, 2),      # odd height, even width, batch > 1
    (1, 4, 5, 3, 2, 5, 1),      # even height, odd width
    (1, 1, 6, 2, 2, 3, 1),      # height 1
    (1, 5, 1, 2, 3, 3, 2),      # width 1
    (1, 1, 1, 4, 4, 5, 4),      # 1 x 1 image, kernel larger than the image
    (2, 3, 3, 6, 1, 7, 2),      # no upsampling, 7 x 7 kernel on a 3 x 3 image
    (1, 4, 4, 2, 3, 1, 2),      # 1 x 1 kernel
    (1, 2, 3, 8, 4, 3, 4),      # scale 4, 4 groups
    (1, 3, 4, 256, 2, 3, 1),    # many channels
    (2, 4, 3, 256, 2, 5, 4),    # many channels in 4 groups
    (3, 2, 2, 1, 2, 5, 1),      # one channel
    (1, 6, 7, 4, 2, 7, 1),      # 7 x 7 kernel inside a larger image
    (1, 5, 5, 12, 3, 5, 4),     # scale 3, 4 groups
    (2, 7, 6, 4, 1, 5, 2),      # scale 1, 5 x 5 kernel
    (1, 3, 2, 3, 4, 7, 1),      # scale 4, 7 x 7 kernel
]

# Gradients against the reference.
GRADIENT_CASES = [
    (2, 3, 4, 4, 2, 3, 2),
    (1, 1, 5, 2, 3, 5, 1),
    (1, 4, 1, 8, 4, 3, 4),
    (1, 5, 6, 3, 1, 7, 1),
    (2, 4, 3, 256, 2, 5, 4),
    (3, 2, 2, 1, 2, 1, 1),
]

# Downsampling: the output is ceil(H / stride) x ceil(W / stride).
DOWNSAMPLE_CASES = [
    (1, 1, 1, 1, 1, 1, 1),      # smallest problem
    (2, 5, 6, 4, 2, 3, 2),      # odd height (last row's window overhangs), even width
    (1, 4, 5, 3, 2, 5, 1),      # even height, odd width
    (1, 1, 6, 2, 2, 3, 1),      # height 1
    (1, 5, 1, 2, 3, 3, 2),      # width 1
    (1, 7, 7, 4, 3, 5, 4),      # stride 3, 4 groups
    (2, 3, 3, 6, 1, 7, 2),      # stride 1, kernel larger than the image
    (1, 8, 8, 2, 4, 1, 2),      # 1 x 1 kernel: plain subsampling
    (1, 6, 7, 8, 4, 3, 4),      # stride 4, sizes not multiples of it
    (1, 4, 6, 256, 2, 3, 1),    # many channels
    (2, 6, 4, 256, 2, 5, 4),    # many channels in 4 groups
    (3, 2, 2, 1, 2, 5, 1),      # one channel
    (1, 9, 10, 4, 2, 7, 1),     # 7 x 7 kernel inside a larger image
    (1, 5, 5, 12, 5, 5, 4),     # stride equal to the size: one output pixel
    (1, 3, 2, 3, 4, 7, 1),      # stride larger than the image
]

DOWNSAMPLE_GRADIENT_CASES = [
    (2, 5, 6, 4, 2, 3, 2),
    (1, 1, 5, 2, 3, 5, 1),
    (1, 7, 3, 8, 4, 3, 4),
    (1, 5, 6, 3, 1, 7, 1),
    (2, 6, 5, 256, 2, 5, 4),
    (3, 4, 4, 1, 2, 1, 1),
]


def case_id(case):
    n, h, w, c, s, k, g = case
    return f"n{n}-{h}x{w}x{c}-s{s}-k{k}-g{g}"
