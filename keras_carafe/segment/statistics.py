"""Means over seeds with Student t intervals, and paired differences between variants.

With n seeds the 95% interval of a mean is `mean +- t(0.975, n - 1) * s / sqrt(n)`
(s the sample standard deviation). A paired difference takes, seed by seed,
one variant's score minus the baseline's (both trained on that seed's
images, batches and initial weights) and gives that interval for the mean
difference: seed-to-seed variation common to both cancels.
"""

import dataclasses
import math

import numpy as np
import scipy.stats

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean over seeds and its t interval.

    Args:
        mean: the mean.
        half_width: half the interval's width; None with a single value.
        n: number of values.
    """

    mean: float
    half_width: float
    n: int

    @property
    def low(self):
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self):
        return None if self.half_width is None else self.mean + self.half_width

    def excludes_zero(self):
        """True where the interval lies wholly above or wholly below 0."""
        return self.half_width is not None and (self.low > 0 or self.high < 0)

    def format(self, scale=1.0, digits=1, signed=False):
        """"mean +- half" (or "mean" alone for one value), values times `scale`."""
        sign = "+" if signed else ""
        text = f"{self.mean * scale:{sign}.{digits}f}"
        if self.half_width is None:
            return text
        return f"{text} ± {self.half_width * scale:.{digits}f}"

    def format_range(self, scale=1.0, digits=1):
        """"[low, high]", or "-" for one value."""
        if self.half_width is None:
            return "-"
        return f"[{self.low * scale:+.{digits}f}, {self.high * scale:+.{digits}f}]"


def t_interval(values, confidence=CONFIDENCE):
    """The mean of `values` and its Student t interval (no interval for one value)."""
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(f"`values` must be a non-empty 1-D array of finite numbers, "
                         f"got {values!r}")
    n = values.size
    if n == 1:
        return Interval(float(values[0]), None, 1)
    quantile = scipy.stats.t.ppf(0.5 + confidence / 2, n - 1)
    half = float(quantile * values.std(ddof=1) / math.sqrt(n))
    return Interval(float(values.mean()), half, n)


def paired_difference(values, baseline, confidence=CONFIDENCE):
    """The t interval of `values - baseline`, paired by position (by seed).

    Raises:
        ValueError: the two lists differ in length.
    """
    values, baseline = np.asarray(values, np.float64), np.asarray(baseline, np.float64)
    if values.shape != baseline.shape:
        raise ValueError(f"paired values need one baseline value each: got {values.shape} "
                         f"and {baseline.shape}")
    return t_interval(values - baseline, confidence)
