"""Small pieces shared by the GT sources and the degradations: the error type, seeded
random streams, parameter sampling and float <-> uint8 image helpers."""
import math

import cv2
import numpy as np

from tripled_basicsr.options import OptionError


class DemoDataError(OptionError):
    """Invalid argument for the demo-data generator; the message names the option."""


def flag(name):
    """The command-line spelling of a parameter: ``rain_angle`` -> ``--rain-angle``."""
    return '--' + name.replace('_', '-')


def seed_rng(*ints):
    """A generator that depends only on ``ints`` (image ``i`` never depends on other images)."""
    return np.random.default_rng([int(i) for i in ints])


def sample(rng, value):
    """A parameter value: a number as is, a ``(lo, hi)`` range drawn uniformly."""
    if isinstance(value, tuple):
        return float(rng.uniform(value[0], value[1]))
    return float(value)


def to_u8(x):
    """float [0, 1] -> uint8 with rounding."""
    x = np.multiply(x, 255.0, dtype=np.float32)
    np.clip(x, 0.0, 255.0, out=x)
    x += 0.5
    return x.astype(np.uint8)


def rand_colour(rng, lo=0.0, hi=1.0):
    return rng.uniform(lo, hi, 3).astype(np.float32)


def smooth_field(rng, w, h, cells, channels=1):
    """Smooth random field: a ``cells``-cell random grid up-sampled bicubically to ``(h, w)``."""
    short = min(w, h)
    gh = max(2, int(math.ceil(cells * h / short)) + 1)
    gw = max(2, int(math.ceil(cells * w / short)) + 1)
    grid = rng.standard_normal((gh, gw, channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h, w, channels)


def normalise(f, lo_q=1.0, hi_q=99.0):
    """Map the ``lo_q``..``hi_q`` percentiles of ``f`` to 0..1 (clipped)."""
    sub = f[::max(1, f.shape[0] // 128), ::max(1, f.shape[1] // 128)]
    lo, hi = np.percentile(sub, [lo_q, hi_q])
    f = (f - np.float32(lo)) * np.float32(1.0 / max(hi - lo, 1e-6))
    np.clip(f, 0.0, 1.0, out=f)
    return f
