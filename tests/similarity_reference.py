"""Independent NumPy reference of the local similarity and its gradients, in float64.

Written from the contract alone:

    sim[n, oh, ow, g*k*k + ky*k + kx] = sum over c in group g of
        q[n, oh, ow, c] * keys[n, oh // s + ky - r, ow // s + kx - r, c]

(keys outside the image are zero). The similarity is linear in each input, so
for an upstream gradient `u` = d loss / d sim:

    d loss / d q[n, oh, ow, c]  = sum over taps of u[n, oh, ow, g*k*k + tap]
                                  * keys[n, oh // s + ky - r, ow // s + kx - r, c]
    d loss / d keys[n, y, x, c] = sum over (oh, ow, tap) reading (y, x) of
                                  u[n, oh, ow, g*k*k + tap] * q[n, oh, ow, c]

`similarity_loops` spells the formula out element by element.
"""

import numpy as np


def _check(queries, keys, scale_factor, kernel_size, group_size):
    n, h, w, c = keys.shape
    assert queries.shape == (n, h * scale_factor, w * scale_factor, c), (queries.shape, keys.shape)
    assert c % group_size == 0, (c, group_size)


def _taps(keys, scale_factor, kernel_size):
    """Yields (tap, K) with K[n, oh, ow, c] = keys[n, oh//s + ky - r, ow//s + kx - r, c]."""
    n, h, w, c = keys.shape
    s, k = scale_factor, kernel_size
    r = (k - 1) // 2
    padded = np.zeros((n, h + 2 * r, w + 2 * r, c))
    padded[:, r:r + h, r:r + w] = keys
    rows, cols = np.arange(h * s) // s, np.arange(w * s) // s
    for ky in range(k):
        for kx in range(k):
            yield ky * k + kx, padded[:, rows + ky][:, :, cols + kx]


def local_similarity_reference(queries, keys, scale_factor, kernel_size, group_size):
    queries, keys = np.asarray(queries, np.float64), np.asarray(keys, np.float64)
    _check(queries, keys, scale_factor, kernel_size, group_size)
    n, oh, ow, c = queries.shape
    g, taps = group_size, kernel_size * kernel_size
    q = queries.reshape(n, oh, ow, g, c // g)
    out = np.zeros((n, oh, ow, g, taps))
    for tap, shifted in _taps(keys, scale_factor, kernel_size):
        out[..., tap] = np.sum(q * shifted.reshape(n, oh, ow, g, c // g), axis=-1)
    return out.reshape(n, oh, ow, g * taps)


def local_similarity_reference_grads(upstream, queries, keys, scale_factor, kernel_size,
                                     group_size):
    """(d loss / d queries, d loss / d keys) for `upstream` = d loss / d similarity."""
    upstream = np.asarray(upstream, np.float64)
    queries, keys = np.asarray(queries, np.float64), np.asarray(keys, np.float64)
    _check(queries, keys, scale_factor, kernel_size, group_size)
    n, oh, ow, c = queries.shape
    _, h, w, _ = keys.shape
    s, k, g = scale_factor, kernel_size, group_size
    r, taps, cg = (k - 1) // 2, k * k, c // g
    u = upstream.reshape(n, oh, ow, g, taps)
    grad_queries = np.zeros((n, oh, ow, g, cg))
    for tap, shifted in _taps(keys, s, k):
        grad_queries += u[..., tap, None] * shifted.reshape(n, oh, ow, g, cg)
    # Scatter each query's weighted channels onto the padded key pixel it met.
    q = queries.reshape(n, oh, ow, g, cg)
    grad_padded = np.zeros((n, h + 2 * r, w + 2 * r, g, cg))
    rows, cols = np.arange(oh) // s, np.arange(ow) // s
    for ky in range(k):
        for kx in range(k):
            np.add.at(grad_padded, (slice(None), (rows + ky)[:, None], (cols + kx)[None, :]),
                      u[..., ky * k + kx, None] * q)
    grad_keys = grad_padded[:, r:r + h, r:r + w].reshape(n, h, w, c)
    return grad_queries.reshape(queries.shape), grad_keys


def similarity_loops(queries, keys, scale_factor, kernel_size, group_size):
    """The formula, one element at a time (tiny inputs only)."""
    queries, keys = np.asarray(queries, np.float64), np.asarray(keys, np.float64)
    _check(queries, keys, scale_factor, kernel_size, group_size)
    n, h, w, c = keys.shape
    s, k, g = scale_factor, kernel_size, group_size
    r, cg = (k - 1) // 2, c // g
    out = np.zeros((n, h * s, w * s, g * k * k))
    for b, oh, ow, grp, ky, kx in np.ndindex(n, h * s, w * s, g, k, k):
        y, x = oh // s + ky - r, ow // s + kx - r
        if 0 <= y < h and 0 <= x < w:
            out[b, oh, ow, grp * k * k + ky * k + kx] = sum(
                queries[b, oh, ow, ch] * keys[b, y, x, ch] for ch in range(grp * cg, (grp + 1) * cg))
    return out


def random_similarity_inputs(rng, batch, height, width, channels, scale_factor, dtype=np.float32):
    """Queries (N, H*s, W*s, C) and keys (N, H, W, C) uniform in [-1, 1)."""
    s = scale_factor
    queries = rng.uniform(-1, 1, (batch, height * s, width * s, channels))
    keys = rng.uniform(-1, 1, (batch, height, width, channels))
    return queries.astype(dtype), keys.astype(dtype)


def similarity_error_scales(queries, keys, upstream, scale_factor, kernel_size, group_size):
    """Per element, the sum of |products| forming the similarity and both gradients."""
    q, k, u = np.abs(queries), np.abs(keys), np.abs(upstream)
    return (local_similarity_reference(q, k, scale_factor, kernel_size, group_size),
            *local_similarity_reference_grads(u, q, k, scale_factor, kernel_size, group_size))
