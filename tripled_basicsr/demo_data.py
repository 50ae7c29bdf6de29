"""Offline, deterministic demo-data generator for paired image restoration.

Generates ``(GT, LQ)`` image pairs for the restoration tasks covered by the TripleD / SLKD
papers, without any download, and writes them in the layout BasicSR's
``PairedImageDataset`` reads (``DIR/gt`` + ``DIR/lq`` PNG folders, or ``DIR/gt.lmdb`` +
``DIR/lq.lmdb`` in BasicSR's LMDB convention).

Command line::

    python -m tripled_basicsr.demo_data --task noise --num 100 --size 256 --out datasets/demo_noise
    python -m tripled_basicsr.demo_data --task sr --scale 4 --num 8 --size 3840x2160 --out uhd --lmdb

Python API::

    for name, gt, lq in generate_pairs('noise', num=4, size=64, seed=0):
        ...  # HxWx3 uint8 BGR arrays
    summary = write_demo_dataset('datasets/demo', 'jpeg', num=100, size=256, quality=10)

Ground-truth sources
--------------------
(a) **Photographs bundled inside the installed scikit-image package** (``skimage/data``;
read straight from disk with OpenCV, never through ``skimage.data``'s download fetcher).
Only images that ship in the wheel and have a stated public-domain / CC0 /
no-known-restrictions licence are used:

===========================  =====================  =========================================
``skimage.data`` function     file                   licence (as stated by scikit-image)
===========================  =====================  =========================================
``astronaut``                 astronaut.png          public domain (NASA)
``coffee``                    coffee.png             CC0 (Rachel Michetti)
``chelsea``                   chelsea.png            CC0 (Stefan van der Walt)
``rocket``                    rocket.jpg             public domain (SpaceX)
``immunohistochemistry``      ihc.png                no known copyright restrictions (CMMI)
``hubble_deep_field``         hubble_deep_field.jpg  public domain (NASA)
``retina``                    retina.jpg             CC0 1.0 (Mikael Häggström)
``camera``                    camera.png             CC0 (Lav Varshney)
``brick``                     brick.png              CC0 (CC0Textures)
``grass``                     grass.png              CC0 (CC0Textures)
``gravel``                    gravel.png             CC0 (CC0Textures)
``text``                      text.png               public domain
``coins``                     coins.png              no known copyright restrictions (Brooklyn Museum)
``cell``                      cell.png               CC0 (Paul Müller)
===========================  =====================  =========================================

The first seven are colour photographs, the rest are grey-level and get a random duotone
colouring. Each sample is a random rotation/flip, random zoom (``cv2.INTER_AREA`` when
shrinking, ``cv2.INTER_CUBIC`` when enlarging), random crop and colour jitter (brightness,
contrast, saturation, gamma) of one photograph; near-flat crops are rejected.

(b) **Procedural images** so that ``num`` can be arbitrarily large: the dead-leaves model
(occluding discs/ellipses/rectangles with power-law radii; the smallest radius varies per
image, so complexity ranges from blocky to very busy), fractal (1/f-like) noise with a random
roughness, smooth colour gradients (very low complexity) and sinusoidal/square gratings.

``source='mixed'`` (default) draws each image from (a) or (b) with probability 1/2;
``'photos'`` / ``'procedural'`` use only one of them.

Determinism
-----------
Image ``i`` depends only on ``(seed, i)`` (and, for the degradation, the task and its
parameters), never on ``num`` or on the other images: the same arguments give
byte-identical files, the first ``k`` pairs of a run with ``num > k`` equal a run with
``num = k``, and all tasks share the same GT images for a given seed.

Degradations (``task``)
-----------------------
A parameter may be a number or a ``(lo, hi)`` range (CLI: ``lo,hi``), in which case it is drawn
uniformly per image.

``noise``     additive white Gaussian noise, ``sigma`` (0..255 scale, default 25).
``blur``      ``blur_type`` ``gaussian`` (``blur_sigma`` px, default 2.0) | ``motion`` (linear
              kernel of ``motion_length`` px, default 15, at ``motion_angle`` degrees, default
              uniform 0..180) | ``mixed`` (either, per image); ``kernel_size`` (odd) optional.
``jpeg``      JPEG compression (OpenCV/libjpeg) at ``quality`` (default 20).
``rain``      additive rain streaks: sparse random seeds smeared along a line kernel of
              ``rain_length`` px (default 6-15 % of the short side) at ``rain_angle`` degrees from
              vertical (default -30..30), thickened by a Gaussian of ``rain_width`` px (default
              0.6), peak brightness ``rain_intensity`` (default 0.4..0.8), seed density
              ``rain_density`` (fraction of pixels, default 0.001..0.005).
``haze``      atmospheric scattering ``I = J t + A (1 - t)``, ``t = exp(-beta d)`` with a smooth
              depth-like map ``d`` in [0.1, 1] (far at the top + low-frequency variation);
              ``beta`` default 0.6..1.8, ``airlight`` ``A`` default 0.7..1.0 (RESIDE ranges).
``lowlight``  ``I = darken * J ** gamma`` plus heteroscedastic noise
              (variance ``shot_noise * I + (lowlight_sigma / 255) ** 2``); defaults
              ``gamma`` 2.0..3.0, ``darken`` 0.3..0.7, ``lowlight_sigma`` 3, ``shot_noise`` 0.003.
``sr``        bicubic down-sampling by ``scale`` (default 4). ``sr_kernel='matlab'`` (default) is
              MATLAB ``imresize`` bicubic with anti-aliasing, the standard SR benchmark degradation:
              the kernel weights/indices/padding of ``basicsr.utils.matlab_functions.imresize``
              applied by the vectorised :func:`matlab_downscale` (matches basicsr's ``imresize`` to
              float32 rounding); ``'cv2'`` uses ``cv2.INTER_CUBIC`` (no anti-aliasing).

A comma-separated list (``'blur,sr,noise'``) applies the degradations in the given order.
"""
import argparse
import json
import math
import os
import os.path as osp
import sys
import time
import warnings
import zlib

import cv2
import numpy as np

from tripled_basicsr.utils.io import AtomicOutputDir

__all__ = [
    'TASKS', 'SOURCES', 'PHOTOS', 'DemoDataError', 'available_photos', 'parse_size', 'generate_gt',
    'degrade', 'matlab_downscale', 'generate_pairs', 'write_demo_dataset', 'main'
]

TASKS = ('noise', 'blur', 'jpeg', 'rain', 'haze', 'lowlight', 'sr')
SOURCES = ('photos', 'procedural', 'mixed')
MIN_SIZE = 8
MAX_SIDE = 16384

# (skimage.data name, file inside skimage/data, is_colour, licence as stated by scikit-image)
PHOTOS = (
    ('astronaut', 'astronaut.png', True, 'public domain (NASA)'),
    ('coffee', 'coffee.png', True, 'CC0 (Rachel Michetti)'),
    ('chelsea', 'chelsea.png', True, 'CC0 (Stefan van der Walt)'),
    ('rocket', 'rocket.jpg', True, 'public domain (SpaceX)'),
    ('immunohistochemistry', 'ihc.png', True, 'no known copyright restrictions (CMMI)'),
    ('hubble_deep_field', 'hubble_deep_field.jpg', True, 'public domain (NASA)'),
    ('retina', 'retina.jpg', True, 'CC0 1.0 (Mikael Haggstrom)'),
    ('camera', 'camera.png', False, 'CC0 (Lav Varshney)'),
    ('brick', 'brick.png', False, 'CC0 (CC0Textures)'),
    ('grass', 'grass.png', False, 'CC0 (CC0Textures)'),
    ('gravel', 'gravel.png', False, 'CC0 (CC0Textures)'),
    ('text', 'text.png', False, 'public domain'),
    ('coins', 'coins.png', False, 'no known copyright restrictions (Brooklyn Museum)'),
    ('cell', 'cell.png', False, 'CC0 (Paul Mueller)'),
)

PROCEDURAL_KINDS = ('dead_leaves', 'fractal', 'gradient', 'stripes')
_PROCEDURAL_WEIGHTS = (0.45, 0.25, 0.15, 0.15)

# Per-task parameters and their defaults. A tuple (lo, hi) means "uniform per image";
# None means "task-specific automatic default" (documented in the module docstring).
TASK_DEFAULTS = {
    'noise': {
        'sigma': 25.0
    },
    'blur': {
        'blur_type': 'gaussian',
        'blur_sigma': 2.0,
        'motion_length': 15.0,
        'motion_angle': (0.0, 180.0),
        'kernel_size': None
    },
    'jpeg': {
        'quality': 20.0
    },
    'rain': {
        'rain_density': (0.001, 0.005),
        'rain_length': None,
        'rain_angle': (-30.0, 30.0),
        'rain_width': 0.6,
        'rain_intensity': (0.4, 0.8)
    },
    'haze': {
        'beta': (0.6, 1.8),
        'airlight': (0.7, 1.0)
    },
    'lowlight': {
        'gamma': (2.0, 3.0),
        'darken': (0.3, 0.7),
        'lowlight_sigma': 3.0,
        'shot_noise': 0.003
    },
    'sr': {
        'sr_kernel': 'matlab'
    },
}
_CHOICE_PARAMS = {'blur_type': ('gaussian', 'motion', 'mixed'), 'sr_kernel': ('matlab', 'cv2')}
# name -> (min, max) allowed (inclusive)
_PARAM_BOUNDS = {
    'sigma': (0.0, 255.0),
    'blur_sigma': (0.05, 100.0),
    'motion_length': (1.0, 1000.0),
    'motion_angle': (-360.0, 360.0),
    'kernel_size': (1.0, 1001.0),
    'quality': (1.0, 100.0),
    'rain_density': (0.0, 1.0),
    'rain_length': (1.0, 5000.0),
    'rain_angle': (-90.0, 90.0),
    'rain_width': (0.0, 50.0),
    'rain_intensity': (0.0, 1.0),
    'beta': (0.0, 20.0),
    'airlight': (0.0, 1.0),
    'gamma': (0.05, 10.0),
    'darken': (0.0, 1.0),
    'lowlight_sigma': (0.0, 255.0),
    'shot_noise': (0.0, 1.0),
}


class DemoDataError(ValueError):
    """Invalid argument for the demo-data generator; the message names the option."""


def _opt(name):
    return '--' + name.replace('_', '-')


# ----------------------------------------------------------------------------------------------
# argument parsing / validation
# ----------------------------------------------------------------------------------------------
def parse_size(size):
    """Parse ``256`` / ``'256'`` (square) or ``'WxH'`` / ``(W, H)`` into ``(width, height)``."""
    if isinstance(size, (tuple, list)) and len(size) == 2:
        w, h = size
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        w = h = int(size)
    elif isinstance(size, str):
        s = size.strip().lower().replace('*', 'x')
        try:
            if 'x' in s:
                ws, hs = s.split('x')
                w, h = int(ws), int(hs)
            else:
                w = h = int(s)
        except ValueError:
            raise DemoDataError(f"--size: cannot parse {size!r}; expected an integer like 256 (square) "
                                'or WIDTHxHEIGHT like 3840x2160') from None
    else:
        raise DemoDataError(f'--size: cannot parse {size!r}; expected an integer like 256 (square) '
                            'or WIDTHxHEIGHT like 3840x2160')
    try:
        w, h = int(w), int(h)
    except (TypeError, ValueError):
        raise DemoDataError(f'--size: cannot parse {size!r}') from None
    if min(w, h) < MIN_SIZE or max(w, h) > MAX_SIDE:
        raise DemoDataError(f'--size: {w}x{h} out of range; width and height must be between '
                            f'{MIN_SIZE} and {MAX_SIDE}')
    return w, h


def _parse_tasks(task):
    if isinstance(task, str):
        tasks = [t.strip().lower() for t in task.split(',') if t.strip()]
    elif isinstance(task, (list, tuple)):
        tasks = [str(t).strip().lower() for t in task]
    else:
        tasks = []
    if not tasks:
        raise DemoDataError(f'--task: no task given; choose from {", ".join(TASKS)}')
    for t in tasks:
        if t not in TASKS:
            raise DemoDataError(f'--task: unknown task {t!r}; choose from {", ".join(TASKS)} '
                                '(or a comma-separated list such as noise,jpeg)')
    if len(set(tasks)) != len(tasks):
        raise DemoDataError(f'--task: task listed twice in {",".join(tasks)!r}')
    return tasks


def _parse_value(name, value):
    """Number, ``(lo, hi)`` range, or (CLI) string ``'x'`` / ``'lo,hi'``; choices for string params."""
    if name in _CHOICE_PARAMS:
        v = str(value).strip().lower()
        if v not in _CHOICE_PARAMS[name]:
            raise DemoDataError(f'{_opt(name)}: invalid value {value!r}; choose from '
                                f'{", ".join(_CHOICE_PARAMS[name])}')
        return v
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(',')]
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            raise DemoDataError(f'{_opt(name)}: cannot parse {value!r}; expected a number or a range '
                                'LO,HI') from None
    elif isinstance(value, (tuple, list)):
        try:
            nums = [float(v) for v in value]
        except (TypeError, ValueError):
            raise DemoDataError(f'{_opt(name)}: cannot parse {value!r}') from None
    else:
        try:
            nums = [float(value)]
        except (TypeError, ValueError):
            raise DemoDataError(f'{_opt(name)}: cannot parse {value!r}; expected a number') from None
    if len(nums) not in (1, 2) or not all(math.isfinite(v) for v in nums):
        raise DemoDataError(f'{_opt(name)}: expected a number or a range LO,HI, got {value!r}')
    lo, hi = _PARAM_BOUNDS[name]
    for v in nums:
        if not lo <= v <= hi:
            raise DemoDataError(f'{_opt(name)}: value {v:g} out of range [{lo:g}, {hi:g}]')
    if len(nums) == 2:
        if nums[0] > nums[1]:
            raise DemoDataError(f'{_opt(name)}: range {value!r} has LO > HI')
        return (nums[0], nums[1])
    return nums[0]


def _int_option(name, value, minimum, context=''):
    """``value`` as an int >= ``minimum`` (integral floats accepted), else a DemoDataError naming ``name``."""
    try:
        v = int(value)
        if v != value:
            raise ValueError
    except (TypeError, ValueError):
        raise DemoDataError(f'{name}: expected an integer >= {minimum}, got {value!r}') from None
    if v < minimum:
        raise DemoDataError(f'{name}: expected an integer >= {minimum}{context}, got {v}')
    return v


def _resolve(task, num, size, seed, scale, source, task_kwargs):
    tasks = _parse_tasks(task)
    num_i = _int_option('--num', num, 1)
    seed_i = _int_option('--seed', seed, 0)
    if source not in SOURCES:
        raise DemoDataError(f'--source: unknown source {source!r}; choose from {", ".join(SOURCES)}')
    w, h = parse_size(size)
    if 'sr' in tasks:
        if scale is None:
            scale = 4
        scale_i = _int_option('--scale', scale, 2, ' for task sr')
        if w % scale_i or h % scale_i:
            raise DemoDataError(f'--size: {w}x{h} is not divisible by --scale {scale_i}; choose a size whose '
                                f'width and height are multiples of {scale_i}')
        scale = scale_i
    else:
        if scale not in (None, 1):
            raise DemoDataError(f'--scale: only applies to task sr, but --task is {",".join(tasks)}')
        scale = 1
    params = {}
    allowed = {}
    for t in tasks:
        for k, v in TASK_DEFAULTS[t].items():
            params[k] = v
            allowed[k] = t
    for k, v in task_kwargs.items():
        if v is None:
            continue
        if k not in allowed:
            owners = [t for t in TASKS if k in TASK_DEFAULTS[t]]
            if owners:
                raise DemoDataError(f'{_opt(k)}: only applies to task {"/".join(owners)}, but --task is '
                                    f'{",".join(tasks)}')
            raise DemoDataError(f'unknown option {_opt(k)}')
        params[k] = _parse_value(k, v)
    if params.get('kernel_size') is not None:
        ks = params['kernel_size']
        for v in (ks if isinstance(ks, tuple) else (ks, )):
            if int(v) != v or int(v) % 2 == 0:
                raise DemoDataError(f'--kernel-size: must be an odd integer, got {v:g}')
    return tasks, num_i, (w, h), seed_i, scale, params


# ----------------------------------------------------------------------------------------------
# ground-truth sources
# ----------------------------------------------------------------------------------------------
_PHOTO_CACHE = {}
_PHOTO_DIR = []


def _skimage_data_dir():
    if not _PHOTO_DIR:
        d = None
        try:
            import importlib.util
            spec = importlib.util.find_spec('skimage')
            if spec is not None and spec.submodule_search_locations:
                d = osp.join(list(spec.submodule_search_locations)[0], 'data')
        except Exception:  # noqa: BLE001 - any import problem just means "no photos"
            d = None
        _PHOTO_DIR.append(d)
    return _PHOTO_DIR[0]


def available_photos():
    """Names (``skimage.data`` function names) of the bundled photographs present on disk."""
    d = _skimage_data_dir()
    if d is None:
        return []
    return [name for name, fname, _, _ in PHOTOS if osp.isfile(osp.join(d, fname))]


def _load_photo(name):
    img = _PHOTO_CACHE.get(name)
    if img is None:
        fname = {p[0]: p[1] for p in PHOTOS}[name]
        path = osp.join(_skimage_data_dir(), fname)
        data = np.fromfile(path, dtype=np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f'could not decode bundled photo {path}')
        img.setflags(write=False)
        _PHOTO_CACHE[name] = img
    return img


def _to_u8(x):
    """float [0, 1] -> uint8 with rounding (in place on ``x`` where possible)."""
    x = np.multiply(x, 255.0, dtype=np.float32)
    np.clip(x, 0.0, 255.0, out=x)
    x += 0.5
    return x.astype(np.uint8)


def _rand_colour(rng, lo=0.0, hi=1.0):
    return rng.uniform(lo, hi, 3).astype(np.float32)


def _photo(rng, w, h):
    names = available_photos()
    colour = {p[0]: p[2] for p in PHOTOS}
    weights = np.array([2.0 if colour[n] else 1.0 for n in names])
    weights /= weights.sum()
    for _attempt in range(8):
        name = names[int(rng.choice(len(names), p=weights))]
        img = _load_photo(name)
        k = int(rng.integers(4))
        if k:
            img = np.rot90(img, k)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        ih, iw = img.shape[:2]
        s_min = max(w / iw, h / ih)
        s_max = max(1.0, s_min) * 1.5
        s = s_min * math.exp(rng.uniform(0.0, math.log(s_max / s_min)))
        cw = min(iw, max(1, int(round(w / s))))
        ch = min(ih, max(1, int(round(h / s))))
        x0 = int(rng.integers(0, iw - cw + 1))
        y0 = int(rng.integers(0, ih - ch + 1))
        crop = np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw])
        small = cv2.resize(crop, (min(cw, 64), min(ch, 64)), interpolation=cv2.INTER_AREA)
        if float(small.std()) >= 4.0:
            break
    # colour jitter on whichever of crop / output is smaller, then resize
    jitter_first = cw * ch < w * h
    if not jitter_first and (cw, ch) != (w, h):
        crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if s < 1.0 else cv2.INTER_CUBIC)
    crop = _colour_jitter(rng, crop, colour[name])
    if jitter_first:
        crop = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if s < 1.0 else cv2.INTER_CUBIC)
    return crop, f'photo:{name}'


def _colour_jitter(rng, img, is_colour):
    """Duotone colouring of grey photos + saturation / contrast / brightness / gamma jitter (uint8 -> uint8)."""
    x = img.astype(np.float32) * np.float32(1.0 / 255.0)
    if not is_colour:
        g = x[..., :1]
        c0 = _rand_colour(rng, 0.0, 0.35)
        c1 = _rand_colour(rng, 0.65, 1.0)
        x = c0 + (c1 - c0) * g
    gray = x.mean(axis=2, keepdims=True)
    sat = rng.uniform(0.7, 1.3)
    x = gray + (x - gray) * np.float32(sat)
    mean = np.float32(gray.mean())
    x = (x - mean) * np.float32(rng.uniform(0.8, 1.25)) + mean * np.float32(rng.uniform(0.85, 1.15))
    np.clip(x, 0.0, 1.0, out=x)
    gamma = rng.uniform(0.8, 1.25)
    if abs(gamma - 1.0) > 1e-3:
        x = cv2.pow(x, gamma)
    return _to_u8(x)


def _smooth_field(rng, w, h, cells, channels=1):
    """Smooth random field: a ``cells``-cell random grid up-sampled bicubically to ``(h, w)``."""
    short = min(w, h)
    gh = max(2, int(math.ceil(cells * h / short)) + 1)
    gw = max(2, int(math.ceil(cells * w / short)) + 1)
    grid = rng.standard_normal((gh, gw, channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h, w, channels)


def _normalise(f, lo_q=1.0, hi_q=99.0):
    sub = f[::max(1, f.shape[0] // 128), ::max(1, f.shape[1] // 128)]
    lo, hi = np.percentile(sub, [lo_q, hi_q])
    f = (f - np.float32(lo)) * np.float32(1.0 / max(hi - lo, 1e-6))
    np.clip(f, 0.0, 1.0, out=f)
    return f


def _colourise(rng, f, n_colours=None):
    """Map a single-channel [0, 1] field through a random piecewise-linear colour ramp."""
    if n_colours is None:
        n_colours = int(rng.integers(2, 5))
    stops = np.sort(rng.uniform(0.0, 1.0, n_colours))
    stops[0], stops[-1] = 0.0, 1.0
    cols = rng.uniform(0.0, 1.0, (n_colours, 3))
    lut = np.stack([np.interp(np.linspace(0, 1, 256), stops, cols[:, c]) for c in range(3)], axis=1)
    lut = (lut * 255.0 + 0.5).astype(np.uint8)
    idx = _to_u8(f[..., 0] if f.ndim == 3 else f)
    return lut[idx]


def _dead_leaves(rng, w, h):
    short, long_ = min(w, h), max(w, h)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (_rand_colour(rng) * 255).astype(np.uint8)
    rmin = max(1.0, long_ * math.exp(rng.uniform(math.log(0.003), math.log(0.04))))
    rmax = max(rmin * 2.0, short * rng.uniform(0.15, 0.5))
    a, b = rmin**-2, rmax**-2
    mean_area = math.pi * 2.0 * math.log(rmax / rmin) / (a - b)
    n = int(min(30000, max(20, 3.0 * w * h / mean_area)))
    u = rng.random(n)
    radii = (a - u * (a - b))**-0.5
    cx = rng.uniform(-0.05 * w, 1.05 * w, n)
    cy = rng.uniform(-0.05 * h, 1.05 * h, n)
    shape = rng.choice(3, n, p=rng.dirichlet((1.0, 1.0, 1.0)))
    aspect = rng.uniform(0.3, 1.0, n)
    angle = rng.uniform(0.0, 180.0, n)
    # colours: a per-image palette of hues with per-leaf jitter (natural-looking statistics)
    palette = rng.uniform(0.0, 1.0, (int(rng.integers(3, 12)), 3))
    grey = palette.mean(axis=1, keepdims=True)
    palette = grey + (palette - grey) * rng.uniform(0.3, 1.0)  # not all garish
    cols = palette[rng.integers(0, len(palette), n)] + rng.normal(0.0, 0.08, (n, 3))
    cols = (np.clip(cols, 0.0, 1.0) * 255.0 + 0.5).astype(np.int64)
    sh = 4  # sub-pixel precision for OpenCV drawing
    f = float(1 << sh)
    for i in range(n):
        c = (int(cols[i, 0]), int(cols[i, 1]), int(cols[i, 2]))
        centre = (int(cx[i] * f), int(cy[i] * f))
        r = radii[i]
        if shape[i] == 0:
            cv2.circle(img, centre, max(1, int(r * f)), c, -1, cv2.LINE_AA, sh)
        elif shape[i] == 1:
            axes = (max(1, int(r * f)), max(1, int(r * aspect[i] * f)))
            cv2.ellipse(img, centre, axes, float(angle[i]), 0.0, 360.0, c, -1, cv2.LINE_AA, sh)
        else:
            box = cv2.boxPoints(((cx[i], cy[i]), (2 * r, 2 * r * aspect[i]), float(angle[i])))
            pts = np.round(box * f).astype(np.int32)
            cv2.fillConvexPoly(img, pts, c, cv2.LINE_AA, sh)
    if rng.random() < 0.3:  # some out-of-focus renderings
        sigma = rng.uniform(0.5, 2.0) * max(1.0, short / 512.0)
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    return img


def _fractal(rng, w, h):
    short = min(w, h)
    hurst = rng.uniform(0.2, 1.3)  # small: rough / busy; large: smooth, cloud-like
    f = np.zeros((h, w, 1), np.float32)
    cells = 2
    while short / cells >= 1.5:
        amp = (1.0 / cells)**hurst
        f += np.float32(amp) * _smooth_field(rng, w, h, cells)
        cells *= 2
    f = _normalise(f)
    if rng.random() < 0.5:
        return _colourise(rng, f)
    # luminance from the fractal, low-frequency colour variation
    col = _smooth_field(rng, w, h, 2, 3) * np.float32(0.15)
    x = f * np.float32(rng.uniform(0.6, 1.0)) + col + _rand_colour(rng, 0.0, 0.3)
    return _to_u8(x)


def _gradient(rng, w, h):
    # smooth content: synthesise at <= 256 px and up-sample (identical look, much faster at UHD)
    f = min(1.0, 256.0 / max(w, h))
    sw, sh = max(2, int(round(w * f))), max(2, int(round(h * f)))
    cells = int(rng.integers(1, 4))
    x = _smooth_field(rng, sw, sh, cells, 3) * np.float32(rng.uniform(0.1, 0.25)) + _rand_colour(rng, 0.2, 0.8)
    if rng.random() < 0.5:  # add a linear ramp
        theta = rng.uniform(0, 2 * math.pi)
        ramp = (np.cos(theta) * np.linspace(-0.5, 0.5, sw, dtype=np.float32)[None, :] +
                np.sin(theta) * np.linspace(-0.5, 0.5, sh, dtype=np.float32)[:, None])
        x += ramp[..., None] * (_rand_colour(rng, -0.5, 0.5))
    if (sw, sh) != (w, h):
        x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    return _to_u8(x)


def _stripes(rng, w, h):
    short = min(w, h)
    xs = np.arange(w, dtype=np.float32)[None, :] - w / 2
    ys = np.arange(h, dtype=np.float32)[:, None] - h / 2
    f = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        period = math.exp(rng.uniform(math.log(3.0), math.log(max(4.0, short / 3.0))))
        theta = rng.uniform(0, math.pi)
        k = np.float32(2 * math.pi / period)
        phase = np.float32(rng.uniform(0, 2 * math.pi))
        arg = (xs * np.float32(math.cos(theta) * k)) + (ys * np.float32(math.sin(theta) * k))
        f += np.float32(rng.uniform(0.3, 1.0)) * np.sin(arg + phase)
    if rng.random() < 0.4:  # square wave, anti-aliased
        f = np.sign(f).astype(np.float32)
        f = cv2.GaussianBlur(f, (0, 0), 0.7)
    f = _normalise(f, 0.0, 100.0)
    if rng.random() < 0.5:  # smooth amplitude modulation
        m = _normalise(_smooth_field(rng, w, h, 2)[..., 0])
        f = 0.5 + (f - 0.5) * (0.3 + 0.7 * m)
    return _colourise(rng, f)


_PROCEDURAL_FNS = {'dead_leaves': _dead_leaves, 'fractal': _fractal, 'gradient': _gradient, 'stripes': _stripes}


def _seed_seq(*ints):
    return np.random.default_rng([int(i) for i in ints])


def generate_gt(index, size, seed=0, source='mixed'):
    """Generate ground-truth image ``index`` (HxWx3 uint8 BGR) and a short description of its origin.

    Depends only on ``(index, size, seed, source)``.
    """
    w, h = parse_size(size)
    if source not in SOURCES:
        raise DemoDataError(f'--source: unknown source {source!r}; choose from {", ".join(SOURCES)}')
    rng = _seed_seq(seed, index, 0)
    use_photo = source == 'photos' or (source == 'mixed' and rng.random() < 0.5)
    if use_photo and not available_photos():
        if source == 'photos':
            raise DemoDataError('--source: photos requested but no bundled scikit-image photographs were '
                                'found (is scikit-image installed?); use --source procedural')
        warnings.warn('no bundled scikit-image photographs found; --source mixed falls back to procedural '
                      'images only', RuntimeWarning, stacklevel=2)
        use_photo = False
    if use_photo:
        img, kind = _photo(rng, w, h)
    else:
        kind = PROCEDURAL_KINDS[int(rng.choice(len(PROCEDURAL_KINDS), p=_PROCEDURAL_WEIGHTS))]
        img, kind = _PROCEDURAL_FNS[kind](rng, w, h), f'procedural:{kind}'
    return np.ascontiguousarray(img), kind


# ----------------------------------------------------------------------------------------------
# degradations (all on float32 BGR in [0, 1])
# ----------------------------------------------------------------------------------------------
def _sample(rng, value):
    if isinstance(value, tuple):
        return float(rng.uniform(value[0], value[1]))
    return float(value)


def _line_kernel(length, angle_deg, size=None, supersample=4):
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


def _deg_noise(x, rng, p):
    sigma = _sample(rng, p['sigma']) / 255.0
    return x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(sigma)


def _deg_blur(x, rng, p):
    kind = p['blur_type']
    if kind == 'mixed':
        kind = 'gaussian' if rng.random() < 0.5 else 'motion'
    ks = p['kernel_size']
    ks = None if ks is None else int(round(_sample(rng, ks))) | 1
    if kind == 'gaussian':
        sigma = _sample(rng, p['blur_sigma'])
        if ks is None:
            ks = 2 * int(math.ceil(3.0 * sigma)) + 1
        return cv2.GaussianBlur(x, (ks, ks), sigma, borderType=cv2.BORDER_REFLECT)
    length = _sample(rng, p['motion_length'])
    angle = _sample(rng, p['motion_angle'])
    kern = _line_kernel(length, angle, ks)
    return cv2.filter2D(x, -1, kern, borderType=cv2.BORDER_REFLECT)


def _deg_jpeg(x, rng, p):
    q = int(round(_sample(rng, p['quality'])))
    ok, buf = cv2.imencode('.jpg', _to_u8(x), [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:
        raise RuntimeError('JPEG encoding failed')
    return cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float32) * np.float32(1.0 / 255.0)


def _deg_rain(x, rng, p):
    h, w = x.shape[:2]
    density = _sample(rng, p['rain_density'])
    if p['rain_length'] is None:
        length = min(w, h) * rng.uniform(0.06, 0.15)
    else:
        length = _sample(rng, p['rain_length'])
    length = max(3.0, length)
    angle = _sample(rng, p['rain_angle'])
    width = _sample(rng, p['rain_width'])
    intensity = _sample(rng, p['rain_intensity'])
    # streak kernel: line at `angle` degrees from vertical, thickened by a small Gaussian
    kern = _line_kernel(length, 90.0 - angle)
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
    v = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None]  # far at the top
    tilt = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :] * np.float32(rng.uniform(-0.4, 0.4))
    d = np.float32(rng.uniform(0.3, 1.0)) * (v + tilt)
    d = d[..., None] + np.float32(rng.uniform(0.2, 0.6)) * _smooth_field(rng, w, h, 2)
    d = _normalise(d, 0.0, 100.0)
    return np.float32(0.1) + np.float32(0.9) * d


def _deg_haze(x, rng, p):
    h, w = x.shape[:2]
    beta = _sample(rng, p['beta'])
    a = _sample(rng, p['airlight'])
    airlight = np.clip(a + rng.uniform(-0.03, 0.03, 3), 0.0, 1.0).astype(np.float32)
    t = cv2.exp(_depth_map(rng, h, w) * np.float32(-beta)).reshape(h, w, 1)
    return x * t + airlight * (np.float32(1.0) - t)


def _deg_lowlight(x, rng, p):
    gamma = _sample(rng, p['gamma'])
    darken = _sample(rng, p['darken'])
    sigma = _sample(rng, p['lowlight_sigma']) / 255.0
    shot = _sample(rng, p['shot_noise'])
    y = cv2.pow(np.clip(x, 0.0, 1.0), gamma)
    y *= np.float32(darken)
    std = cv2.sqrt(y * np.float32(shot) + np.float32(sigma * sigma))
    return y + std * rng.standard_normal(y.shape, dtype=np.float32)


def matlab_downscale(x, scale):
    """MATLAB ``imresize(x, 1/scale, 'bicubic')`` (with anti-aliasing) for an integer ``scale``.

    Uses exactly the kernel weights / indices / symmetric padding of
    ``basicsr.utils.matlab_functions.imresize`` (via its ``calculate_weights_indices``) but applies
    them with vectorised numpy instead of a per-row loop (same result up to float32 summation
    order, ~20x faster). ``x``: HxW[xC] float32 in [0, 1]; returns float32 ``(H//scale, W//scale[, C])``.
    """
    from basicsr.utils.matlab_functions import calculate_weights_indices
    x = np.asarray(x, dtype=np.float32)
    for axis in (0, 1):
        n_in = x.shape[axis]
        n_out = n_in // scale
        weights, indices, sym_s, sym_e = calculate_weights_indices(n_in, n_out, 1.0 / scale, 'cubic', 4, True)
        weights = weights.numpy().astype(np.float32)
        start = indices[:, 0].numpy().astype(np.int64)
        pad = [(0, 0)] * x.ndim
        pad[axis] = (max(sym_s, 0), max(sym_e, 0))
        xp = np.moveaxis(np.pad(x, pad, mode='symmetric'), axis, 0)
        out = np.zeros((n_out, ) + xp.shape[1:], np.float32)
        bshape = (n_out, ) + (1, ) * (xp.ndim - 1)
        steps = np.diff(start)
        regular = n_out == 1 or (steps == steps[0]).all()
        step = int(steps[0]) if n_out > 1 else 1
        for k in range(weights.shape[1]):
            if regular:
                b = int(start[0]) + k
                rows = xp[b:b + step * (n_out - 1) + 1:step]
            else:
                rows = xp[start + k]
            out += weights[:, k].reshape(bshape) * rows
        x = np.moveaxis(out, 0, axis)
    return np.ascontiguousarray(x)


def _deg_sr(x, rng, p, scale):
    h, w = x.shape[:2]
    oh, ow = h // scale, w // scale
    if p['sr_kernel'] == 'cv2':
        return cv2.resize(x, (ow, oh), interpolation=cv2.INTER_CUBIC)
    return matlab_downscale(np.clip(x, 0.0, 1.0), scale)


def degrade(gt, tasks, params=None, rng=None, scale=None, seed=0, index=0):
    """Apply the degradation chain ``tasks`` (name, list or 'a,b') to a uint8 BGR ``gt``.

    ``params`` maps parameter names to numbers / ``(lo, hi)`` ranges (missing ones take the
    defaults). Randomness comes from ``rng`` if given, else from ``(seed, index, task)``.
    Returns the uint8 BGR low-quality image.
    """
    task_kwargs = dict(params or {})
    h, w = gt.shape[:2]
    tasks, _, _, _, scale, p = _resolve(tasks, 1, (w, h), seed, scale, 'mixed', task_kwargs)
    return _apply_chain(gt, tasks, p, scale, seed, index, rng)


def _apply_chain(gt, tasks, params, scale, seed, index, rng=None):
    x = gt.astype(np.float32) * np.float32(1.0 / 255.0)
    for t in tasks:
        r = rng if rng is not None else _seed_seq(seed, index, 1, zlib.crc32(t.encode()))
        x = _deg_sr(x, r, params, scale) if t == 'sr' else _DEGRADATIONS[t](x, r, params)
        if t != 'jpeg':
            np.clip(x, 0.0, 1.0, out=x)
    return _to_u8(x)


_DEGRADATIONS = {
    'noise': _deg_noise,
    'blur': _deg_blur,
    'jpeg': _deg_jpeg,
    'rain': _deg_rain,
    'haze': _deg_haze,
    'lowlight': _deg_lowlight,
}


# ----------------------------------------------------------------------------------------------
# public generator / writer
# ----------------------------------------------------------------------------------------------
def _name_width(num):
    return max(4, len(str(num - 1)))


def _iter_pairs(tasks, num, size, seed, scale, source, params):
    w, h = size
    width = _name_width(num)
    for i in range(num):
        gt, kind = generate_gt(i, (w, h), seed=seed, source=source)
        yield f'{i:0{width}d}', gt, _apply_chain(gt, tasks, params, scale, seed, i), kind


def generate_pairs(task, num, size, seed=0, scale=None, source='mixed', **task_kwargs):
    """Lazily yield ``num`` pairs ``(name, gt_bgr_uint8, lq_bgr_uint8)``.

    Args:
        task: one of :data:`TASKS` or a comma-separated chain / list (applied in order).
        num: number of pairs (>= 1).
        size: ``256`` (square), ``'WxH'`` or ``(W, H)`` -- the GT size.
        seed: non-negative integer; image ``i`` depends only on ``(seed, i)``.
        scale: SR factor (task ``sr`` only; default 4). LQ is ``(H/scale, W/scale)``.
        source: ``'photos'``, ``'procedural'`` or ``'mixed'``.
        **task_kwargs: per-task parameters (see module docstring / :data:`TASK_DEFAULTS`);
            a number or a ``(lo, hi)`` range sampled per image.

    Arguments are validated eagerly (before the first image is produced).
    """
    tasks, num, size, seed, scale, params = _resolve(task, num, size, seed, scale, source, task_kwargs)
    if source == 'photos' and not available_photos():
        raise DemoDataError('--source: photos requested but no bundled scikit-image photographs were found '
                            '(is scikit-image installed?); use --source procedural')
    return ((name, gt, lq) for name, gt, lq, _ in _iter_pairs(tasks, num, size, seed, scale, source, params))


def _jsonable(v):
    return list(v) if isinstance(v, tuple) else v


def write_demo_dataset(out,
                       task,
                       num,
                       size,
                       lmdb=False,
                       seed=0,
                       scale=None,
                       overwrite=False,
                       source='mixed',
                       compress_level=1,
                       progress=True,
                       **task_kwargs):
    """Generate ``num`` pairs and write them to ``out``; returns a summary dict.

    Layout: ``out/gt/0000.png`` + ``out/lq/0000.png`` ... or, with ``lmdb=True``,
    ``out/gt.lmdb`` + ``out/lq.lmdb`` (BasicSR LMDB convention: keys ``0000``..., PNG-encoded
    values, ``meta_info.txt`` lines ``0000.png (h,w,c) compress_level``). ``out/demo_data.json``
    records the arguments and the origin of every GT image. Everything is written to a temporary
    directory next to ``out`` and renamed into place at the end; an existing non-empty ``out``
    is refused unless ``overwrite=True``.
    """
    tasks, num, size, seed, scale, params = _resolve(task, num, size, seed, scale, source, task_kwargs)
    if source == 'photos' and not available_photos():
        raise DemoDataError('--source: photos requested but no bundled scikit-image photographs were found '
                            '(is scikit-image installed?); use --source procedural')
    try:
        compress_level = int(compress_level)
    except (TypeError, ValueError):
        raise DemoDataError(f'--compress-level: expected an integer 0..9, got {compress_level!r}') from None
    if not 0 <= compress_level <= 9:
        raise DemoDataError(f'--compress-level: expected an integer 0..9, got {compress_level}')
    atomic = AtomicOutputDir(out, overwrite, '--overwrite (overwrite=True)', empty_ok=True)
    out = atomic.out
    w, h = size
    lw, lh = w // scale, h // scale
    t0 = time.time()
    with atomic as tmp:
        png_params = [cv2.IMWRITE_PNG_COMPRESSION, compress_level]
        kinds = {}
        if lmdb:
            from basicsr.utils.lmdb_util import LmdbMaker
            gt_dir, lq_dir = osp.join(tmp, 'gt.lmdb'), osp.join(tmp, 'lq.lmdb')
            # upper bound of the stored size (PNG of incompressible data ~ raw + 0.1 %), map is sparse
            raw = (w * h * 3 + 4096) * num
            makers = [
                LmdbMaker(d, map_size=int(raw * f * 1.25) + (64 << 20), compress_level=compress_level)
                for d, f in ((gt_dir, 1.0), (lq_dir, 1.0 / (scale * scale)))
            ]
        else:
            gt_dir, lq_dir = osp.join(tmp, 'gt'), osp.join(tmp, 'lq')
            os.makedirs(gt_dir)
            os.makedirs(lq_dir)
        pairs = _iter_pairs(tasks, num, size, seed, scale, source, params)
        try:
            from tqdm import tqdm
            bar = tqdm(pairs, total=num, unit='pair', desc=f'demo-data {",".join(tasks)}', disable=not progress,
                       dynamic_ncols=True)
        except ImportError:  # pragma: no cover - tqdm is a basicsr dependency
            bar = pairs
        try:
            for name, gt, lq, kind in bar:
                kinds[name] = kind
                for img, d, k in ((gt, gt_dir, 0), (lq, lq_dir, 1)):
                    ok, buf = cv2.imencode('.png', img, png_params)
                    if not ok:
                        raise RuntimeError(f'PNG encoding failed for {name}')
                    if lmdb:
                        makers[k].put(buf.tobytes(), name, img.shape)
                    else:
                        buf.tofile(osp.join(d, f'{name}.png'))
        finally:
            if hasattr(bar, 'close'):
                bar.close()
            if lmdb:
                for m in makers:
                    m.close()
        meta = {
            'generator': 'tripled_basicsr.demo_data',
            'task': ','.join(tasks),
            'num': num,
            'gt_size': [w, h],
            'lq_size': [lw, lh],
            'scale': scale,
            'seed': seed,
            'source': source,
            'format': 'lmdb' if lmdb else 'png',
            'compress_level': compress_level,
            'params': {k: _jsonable(v)
                       for k, v in params.items()},
            'images': kinds,
        }
        with open(osp.join(tmp, 'demo_data.json'), 'w') as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.write('\n')
    seconds = time.time() - t0
    fmt = 'lmdb' if lmdb else 'png'
    gt_path = osp.join(out, 'gt.lmdb' if lmdb else 'gt')
    lq_path = osp.join(out, 'lq.lmdb' if lmdb else 'lq')
    n_photo = sum(1 for k in kinds.values() if k.startswith('photo:'))
    return {
        'out': out,
        'gt': gt_path,
        'lq': lq_path,
        'task': ','.join(tasks),
        'num': num,
        'gt_size': (w, h),
        'lq_size': (lw, lh),
        'scale': scale,
        'seed': seed,
        'source': source,
        'format': fmt,
        'num_photo': n_photo,
        'num_procedural': num - n_photo,
        'params': dict(params),
        'seconds': seconds,
    }


def summary_line(s):
    """One-line human-readable summary of a :func:`write_demo_dataset` result."""
    (w, h), (lw, lh) = s['gt_size'], s['lq_size']
    return (f"demo-data: wrote {s['num']} {s['task']} pairs (GT {w}x{h}, LQ {lw}x{lh}, {s['format']}, "
            f"{s['num_photo']} photo / {s['num_procedural']} procedural, seed {s['seed']}) to {s['out']} "
            f"in {s['seconds']:.2f}s")


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def _build_parser():
    p = argparse.ArgumentParser(
        prog='python -m tripled_basicsr.demo_data',
        description='Generate a deterministic paired (GT/LQ) demo dataset for BasicSR from bundled '
        'scikit-image photographs and procedural images. Writes OUT/gt + OUT/lq (PNG) or '
        'OUT/gt.lmdb + OUT/lq.lmdb (--lmdb).',
        epilog='Numeric task options accept a value or a range LO,HI drawn uniformly per image '
        '(write --rain-angle=-20,20 when LO is negative).')
    p.add_argument('--task', required=True, help=f'degradation: {", ".join(TASKS)}, or a comma-separated chain '
                   'applied in order (e.g. blur,sr,noise)')
    p.add_argument('--num', required=True, help='number of pairs (>= 1)')
    p.add_argument('--size', default='256', help='GT size: 256 (square) or WIDTHxHEIGHT, e.g. 3840x2160 '
                   '(default 256)')
    p.add_argument('--out', required=True, help='output directory (created atomically)')
    p.add_argument('--lmdb', action='store_true', help='write OUT/gt.lmdb and OUT/lq.lmdb instead of PNG folders')
    p.add_argument('--scale', default=None, help='SR down-sampling factor (task sr only, default 4)')
    p.add_argument('--seed', default='0', help='random seed (default 0)')
    p.add_argument('--source', default='mixed', choices=SOURCES, help='GT source (default mixed)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing OUT')
    p.add_argument('--compress-level', default='1', help='PNG compression level 0..9 (default 1, as BasicSR)')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    g = p.add_argument_group('task options (defaults in brackets; LO,HI = uniform range per image)')

    def fmt(v):
        return 'auto' if v is None else (f'{v[0]:g},{v[1]:g}' if isinstance(v, tuple) else
                                         (v if isinstance(v, str) else f'{v:g}'))

    helps = {
        'sigma': 'noise: Gaussian noise std on the 0..255 scale',
        'blur_type': 'blur: gaussian | motion | mixed',
        'blur_sigma': 'blur: Gaussian kernel std in px',
        'motion_length': 'blur: motion kernel length in px',
        'motion_angle': 'blur: motion direction in degrees',
        'kernel_size': 'blur: odd kernel size (auto: 6 sigma + 1 / motion length)',
        'quality': 'jpeg: JPEG quality 1..100',
        'rain_density': 'rain: fraction of pixels seeding a streak',
        'rain_length': 'rain: streak length in px (auto: 6-15%% of the short side)',
        'rain_angle': 'rain: streak angle in degrees from vertical',
        'rain_width': 'rain: streak thickness (Gaussian std, px)',
        'rain_intensity': 'rain: streak peak brightness 0..1',
        'beta': 'haze: scattering coefficient (t = exp(-beta d), d in [0.1, 1])',
        'airlight': 'haze: atmospheric light A in 0..1',
        'gamma': 'lowlight: darkening gamma (I = darken * J^gamma)',
        'darken': 'lowlight: brightness scale',
        'lowlight_sigma': 'lowlight: read-noise std on the 0..255 scale',
        'shot_noise': 'lowlight: shot-noise gain (variance = gain * I)',
        'sr_kernel': 'sr: matlab (basicsr MATLAB-style bicubic imresize) | cv2 (INTER_CUBIC)',
    }
    for t in TASKS:
        for k, v in TASK_DEFAULTS[t].items():
            g.add_argument(_opt(k), dest=k, default=None, help=f'{helps[k]} [{fmt(v)}]')
    return p


def main(argv=None):
    parser = _build_parser()
    args = parser.parse_args(argv)
    task_kwargs = {k: getattr(args, k) for t in TASKS for k in TASK_DEFAULTS[t]}

    def as_int(opt, v):
        try:
            return int(v)
        except (TypeError, ValueError):
            parser.error(f'{opt}: expected an integer, got {v!r}')

    try:
        summary = write_demo_dataset(
            args.out,
            args.task,
            as_int('--num', args.num),
            args.size,
            lmdb=args.lmdb,
            seed=as_int('--seed', args.seed),
            scale=None if args.scale is None else as_int('--scale', args.scale),
            overwrite=args.overwrite,
            source=args.source,
            compress_level=as_int('--compress-level', args.compress_level),
            progress=not args.quiet,
            **task_kwargs)
    except (DemoDataError, FileExistsError) as e:
        parser.error(str(e))
    print(summary_line(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
