"""The degradations (``--task``): one function each, registered by name with its parameters.

Every degradation maps a float32 HxWx3 BGR image in [0, 1] to the degraded image (the
chain clips to [0, 1] after each step). Adding one is one function in this file::

    @register('speckle', Param('speckle_sigma', 0.1, 0.0, 1.0, 'speckle: multiplicative noise std'))
    def speckle(x, rng, p, scale):
        sigma = np.float32(sample(rng, p['speckle_sigma']))  # a number or a per-image (lo, hi) range
        return x * (1 + rng.standard_normal(x.shape, dtype=np.float32) * sigma)

The registration gives the task name, its parameters (defaults, allowed range, help) and
from those the command-line flags (``--speckle-sigma``), the validation and the record in
``demo_data.json``. ``p`` holds the resolved parameters of every task in the chain, each
a number, a ``(lo, hi)`` range (draw with :func:`sample`, per image), a choice string or
None ("automatic"); ``scale`` is the ``--scale`` factor (only a degradation registered with
``rescales=True`` may change the size, to ``(H // scale, W // scale)``).

Randomness: ``rng`` is seeded from ``(seed, image index, task name)``, so a task's draws
do not depend on which other tasks run before it.
"""
import math
import zlib
from collections import namedtuple

import cv2
import numpy as np

from tripled_basicsr.demo_data._common import DemoDataError, normalise, sample, seed_rng, smooth_field, to_u8

__all__ = ['Param', 'Choice', 'Degradation', 'DEGRADATIONS', 'register', 'sample', 'apply_chain', 'line_kernel']

Param = namedtuple('Param', 'name default lo hi help')
Param.__doc__ = """A numeric parameter: ``default`` (number, ``(lo, hi)`` range, or None = automatic)
and the inclusive bounds every value must lie in."""
Choice = namedtuple('Choice', 'name default choices help')
Choice.__doc__ = 'A string parameter with a fixed set of values.'
Degradation = namedtuple('Degradation', 'name fn params check rescales')

DEGRADATIONS = {}  # task name -> Degradation, in registration order (the order of --help)


def register(name, *params, check=None, rescales=False):
    """Decorator registering ``fn(x, rng, p, scale)`` as task ``name`` with ``params``.

    ``check(p)`` (optional) validates the resolved parameters beyond their bounds and raises
    :class:`DemoDataError` naming the flag. Parameter names are command-line flags, so they
    must be unique across all degradations.
    """

    def deco(fn):
        if name in DEGRADATIONS:
            raise ValueError(f'demo_data: degradation {name!r} is registered twice')
        taken = {q.name: d.name for d in DEGRADATIONS.values() for q in d.params}
        for q in params:
            if q.name in taken:
                raise ValueError(f'demo_data: parameter {q.name!r} of {name!r} is already used by {taken[q.name]!r}')
        DEGRADATIONS[name] = Degradation(name, fn, tuple(params), check, rescales)
        return fn

    return deco


def apply_chain(gt, tasks, params, scale, seed, index, rng=None):
    """Degrade the uint8 BGR ``gt`` by ``tasks`` in order; returns the uint8 BGR LQ image."""
    x = gt.astype(np.float32) * np.float32(1.0 / 255.0)
    for t in tasks:
        r = rng if rng is not None else seed_rng(seed, index, 1, zlib.crc32(t.encode()))
        x = DEGRADATIONS[t].fn(x, r, params, scale)
        np.clip(x, 0.0, 1.0, out=x)
    return to_u8(x)


def line_kernel(length, angle_deg, size=None, supersample=4):
    """Normalised anti-aliased line kernel of ``length`` px at ``angle_deg`` (0 = horizontal)."""
    length = max(1.0, float(length))
    if size is None:
        size = int(math.ceil(length)) | 1
    big = size * supersample
    k = np.zeros((big, big), np.float32)
    c = (big - 1) / 2.0
    dx = math.cos(math.radians(angle_deg)) * (length * supersample - 1) / 2.0
    dy = -math.sin(math.radians(angle_deg)) * (length * supersample - 1) / 2.0
    sh = 4
    p0 = (int(round((c - dx) * 16)), int(round((c - dy) * 16)))
    p1 = (int(round((c + dx) * 16)), int(round((c + dy) * 16)))
    cv2.line(k, p0, p1, 1.0, max(1, supersample), cv2.LINE_AA, sh)
    k = cv2.resize(k, (size, size), interpolation=cv2.INTER_AREA)
    s = float(k.sum())
    if s <= 0:
        k[size // 2, size // 2] = 1.0
        s = 1.0
    return k / np.float32(s)


# ----------------------------------------------------------------------------------------------
# the degradations, in --help order
# ----------------------------------------------------------------------------------------------
@register('noise', Param('sigma', 25.0, 0.0, 255.0, 'noise: Gaussian noise std on the 0..255 scale'))
def noise(x, rng, p, scale):
    """Additive white Gaussian noise."""
    sigma = sample(rng, p['sigma']) / 255.0
    return x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(sigma)


def _odd_kernel_size(p):
    ks = p.get('kernel_size')
    for v in (() if ks is None else ks if isinstance(ks, tuple) else (ks, )):
        if int(v) != v or int(v) % 2 == 0:
            raise DemoDataError(f'--kernel-size: must be an odd integer, got {v:g}')


@register('blur',
          Choice('blur_type', 'gaussian', ('gaussian', 'motion', 'mixed'), 'blur: gaussian | motion | mixed'),
          Param('blur_sigma', 2.0, 0.05, 100.0, 'blur: Gaussian kernel std in px'),
          Param('motion_length', 15.0, 1.0, 1000.0, 'blur: motion kernel length in px'),
          Param('motion_angle', (0.0, 180.0), -360.0, 360.0, 'blur: motion direction in degrees'),
          Param('kernel_size', None, 1.0, 1001.0, 'blur: odd kernel size (auto: 6 sigma + 1 / motion length)'),
          check=_odd_kernel_size)
def blur(x, rng, p, scale):
    """Gaussian or linear motion blur (``mixed``: either, per image)."""
    kind = p['blur_type']
    if kind == 'mixed':
        kind = 'gaussian' if rng.random() < 0.5 else 'motion'
    ks = p['kernel_size']
    ks = None if ks is None else int(round(sample(rng, ks))) | 1
    if kind == 'gaussian':
        sigma = sample(rng, p['blur_sigma'])
        if ks is None:
            ks = 2 * int(math.ceil(3.0 * sigma)) + 1
        return cv2.GaussianBlur(x, (ks, ks), sigma, borderType=cv2.BORDER_REFLECT)
    length = sample(rng, p['motion_length'])
    angle = sample(rng, p['motion_angle'])
    kern = line_kernel(length, angle, ks)
    return cv2.filter2D(x, -1, kern, borderType=cv2.BORDER_REFLECT)


@register('jpeg', Param('quality', 20.0, 1.0, 100.0, 'jpeg: JPEG quality 1..100'))
def jpeg(x, rng, p, scale):
    """JPEG compression (OpenCV / libjpeg)."""
    q = int(round(sample(rng, p['quality'])))
    ok, buf = cv2.imencode('.jpg', to_u8(x), [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        raise RuntimeError('JPEG encoding failed')
    return cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float32) * np.float32(1.0 / 255.0)


@register('rain',
          Param('rain_density', (0.001, 0.005), 0.0, 1.0, 'rain: fraction of pixels seeding a streak'),
          Param('rain_length', None, 1.0, 5000.0, 'rain: streak length in px (auto: 6-15%% of the short side)'),
          Param('rain_angle', (-30.0, 30.0), -90.0, 90.0, 'rain: streak angle in degrees from vertical'),
          Param('rain_width', 0.6, 0.0, 50.0, 'rain: streak thickness (Gaussian std, px)'),
          Param('rain_intensity', (0.4, 0.8), 0.0, 1.0, 'rain: streak peak brightness 0..1'))
def rain(x, rng, p, scale):
    """Additive rain streaks: sparse seeds smeared along a thickened line kernel."""
    h, w = x.shape[:2]
    density = sample(rng, p['rain_density'])
    if p['rain_length'] is None:
        length = min(w, h) * rng.uniform(0.06, 0.15)
    else:
        length = sample(rng, p['rain_length'])
    length = max(3.0, length)
    angle = sample(rng, p['rain_angle'])
    width = sample(rng, p['rain_width'])
    intensity = sample(rng, p['rain_intensity'])
    # streak kernel: line at `angle` degrees from vertical, thickened by a small Gaussian
    kern = line_kernel(length, 90.0 - angle)
    if width > 0:
        pad = int(math.ceil(3 * width))
        kern = np.pad(kern, pad)
        kern = cv2.GaussianBlur(kern, (0, 0), width)
    kern = kern / np.float32(kern.max())  # a single isolated streak peaks at its seed brightness
    seeds = rng.random((h, w), dtype=np.float32)
    drops = np.where(seeds < density, np.float32(0.5) + seeds * np.float32(0.5 / max(density, 1e-12)),
                     np.float32(0.0))
    streaks = cv2.filter2D(drops, -1, kern, borderType=cv2.BORDER_CONSTANT)
    np.minimum(streaks, 1.0, out=streaks)
    streaks *= np.float32(intensity)
    return x + streaks[..., None]


def _depth_map(rng, h, w):
    """Smooth depth-like map in [0.1, 1]: far at the top, a random tilt, low-frequency variation."""
    v = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None]
    tilt = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :] * np.float32(rng.uniform(-0.4, 0.4))
    d = np.float32(rng.uniform(0.3, 1.0)) * (v + tilt)
    d = d[..., None] + np.float32(rng.uniform(0.2, 0.6)) * smooth_field(rng, w, h, 2)
    d = normalise(d, 0.0, 100.0)
    return np.float32(0.1) + np.float32(0.9) * d


@register('haze',
          Param('beta', (0.6, 1.8), 0.0, 20.0, 'haze: scattering coefficient (t = exp(-beta d), d in [0.1, 1])'),
          Param('airlight', (0.7, 1.0), 0.0, 1.0, 'haze: atmospheric light A in 0..1'))
def haze(x, rng, p, scale):
    """Atmospheric scattering ``I = J t + A (1 - t)``, ``t = exp(-beta d)`` (RESIDE ranges)."""
    h, w = x.shape[:2]
    beta = sample(rng, p['beta'])
    a = sample(rng, p['airlight'])
    airlight = np.clip(a + rng.uniform(-0.03, 0.03, 3), 0.0, 1.0).astype(np.float32)
    t = cv2.exp(_depth_map(rng, h, w) * np.float32(-beta)).reshape(h, w, 1)
    return x * t + airlight * (np.float32(1.0) - t)


@register('lowlight',
          Param('gamma', (2.0, 3.0), 0.05, 10.0, 'lowlight: darkening gamma (I = darken * J^gamma)'),
          Param('darken', (0.3, 0.7), 0.0, 1.0, 'lowlight: brightness scale'),
          Param('lowlight_sigma', 3.0, 0.0, 255.0, 'lowlight: read-noise std on the 0..255 scale'),
          Param('shot_noise', 0.003, 0.0, 1.0, 'lowlight: shot-noise gain (variance = gain * I)'))
def lowlight(x, rng, p, scale):
    """``darken * J ** gamma`` plus heteroscedastic noise (variance ``shot * I + sigma**2``)."""
    gamma = sample(rng, p['gamma'])
    darken = sample(rng, p['darken'])
    sigma = sample(rng, p['lowlight_sigma']) / 255.0
    shot = sample(rng, p['shot_noise'])
    y = cv2.pow(np.clip(x, 0.0, 1.0), gamma)
    y *= np.float32(darken)
    std = cv2.sqrt(y * np.float32(shot) + np.float32(sigma * sigma))
    return y + std * rng.standard_normal(y.shape, dtype=np.float32)


@register('sr',
          Choice('sr_kernel', 'matlab', ('matlab', 'cv2'),
                 'sr: matlab (MATLAB imresize bicubic, anti-aliased) | cv2 (INTER_CUBIC)'),
          rescales=True)
def sr(x, rng, p, scale):
    """Bicubic down-sampling by ``scale``: MATLAB ``imresize`` (the SR benchmark degradation,
    computed by ``iqa/resize.py``) or ``cv2.INTER_CUBIC`` (no anti-aliasing)."""
    h, w = x.shape[:2]
    oh, ow = h // scale, w // scale
    if p['sr_kernel'] == 'cv2':
        return cv2.resize(x, (ow, oh), interpolation=cv2.INTER_CUBIC)
    import torch

    from tripled_basicsr.iqa.resize import imresize
    chw = torch.from_numpy(np.clip(x, 0.0, 1.0)).permute(2, 0, 1)  # a view: no copy of a UHD image
    return np.ascontiguousarray(imresize(chw, 1.0 / scale, size=(oh, ow)).permute(1, 2, 0).numpy())
