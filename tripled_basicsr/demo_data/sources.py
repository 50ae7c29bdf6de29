"""Ground-truth images: bundled scikit-image photographs and procedural images.

(a) **Photographs inside the installed scikit-image package** (``skimage/data``), read from
disk with OpenCV, never through ``skimage.data``'s download fetcher; only those with a
stated public-domain / CC0 / no-known-restrictions licence (:data:`PHOTOS`). The first seven
are colour photographs, the rest are grey-level and get a random duotone colouring. Each
sample is a random rotation/flip, random zoom (``cv2.INTER_AREA`` when shrinking,
``cv2.INTER_CUBIC`` when enlarging), random crop and colour jitter (brightness, contrast,
saturation, gamma) of one photograph; near-flat crops are rejected.

(b) **Procedural images**, so that ``num`` can be arbitrarily large: the dead-leaves model
(occluding discs/ellipses/rectangles with power-law radii; the smallest radius varies per
image, so complexity ranges from blocky to very busy), fractal (1/f-like) noise with a
random roughness, smooth colour gradients (very low complexity) and sinusoidal/square
gratings.

``source='mixed'`` draws each image from (a) or (b) with probability 1/2. Image ``i``
depends only on ``(seed, i, size, source)``.
"""
import math
import os.path as osp
import warnings

import cv2
import numpy as np

from tripled_basicsr.demo_data._common import DemoDataError, normalise, rand_colour, seed_rng, smooth_field, to_u8
from tripled_basicsr.demo_data.options import SOURCES, parse_size

__all__ = ['PHOTOS', 'PROCEDURAL_KINDS', 'available_photos', 'generate_gt', 'require_photos']

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
        c0 = rand_colour(rng, 0.0, 0.35)
        c1 = rand_colour(rng, 0.65, 1.0)
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
    return to_u8(x)


def _colourise(rng, f, n_colours=None):
    """Map a single-channel [0, 1] field through a random piecewise-linear colour ramp."""
    if n_colours is None:
        n_colours = int(rng.integers(2, 5))
    stops = np.sort(rng.uniform(0.0, 1.0, n_colours))
    stops[0], stops[-1] = 0.0, 1.0
    cols = rng.uniform(0.0, 1.0, (n_colours, 3))
    lut = np.stack([np.interp(np.linspace(0, 1, 256), stops, cols[:, c]) for c in range(3)], axis=1)
    lut = (lut * 255.0 + 0.5).astype(np.uint8)
    idx = to_u8(f[..., 0] if f.ndim == 3 else f)
    return lut[idx]


def _dead_leaves(rng, w, h):
    short, long_ = min(w, h), max(w, h)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (rand_colour(rng) * 255).astype(np.uint8)
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
        f += np.float32(amp) * smooth_field(rng, w, h, cells)
        cells *= 2
    f = normalise(f)
    if rng.random() < 0.5:
        return _colourise(rng, f)
    # luminance from the fractal, low-frequency colour variation
    col = smooth_field(rng, w, h, 2, 3) * np.float32(0.15)
    x = f * np.float32(rng.uniform(0.6, 1.0)) + col + rand_colour(rng, 0.0, 0.3)
    return to_u8(x)


def _gradient(rng, w, h):
    # smooth content: synthesise at <= 256 px and up-sample (identical look, much faster at UHD)
    f = min(1.0, 256.0 / max(w, h))
    sw, sh = max(2, int(round(w * f))), max(2, int(round(h * f)))
    cells = int(rng.integers(1, 4))
    x = smooth_field(rng, sw, sh, cells, 3) * np.float32(rng.uniform(0.1, 0.25)) + rand_colour(rng, 0.2, 0.8)
    if rng.random() < 0.5:  # add a linear ramp
        theta = rng.uniform(0, 2 * math.pi)
        ramp = (np.cos(theta) * np.linspace(-0.5, 0.5, sw, dtype=np.float32)[None, :] +
                np.sin(theta) * np.linspace(-0.5, 0.5, sh, dtype=np.float32)[:, None])
        x += ramp[..., None] * (rand_colour(rng, -0.5, 0.5))
    if (sw, sh) != (w, h):
        x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    return to_u8(x)


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
    f = normalise(f, 0.0, 100.0)
    if rng.random() < 0.5:  # smooth amplitude modulation
        m = normalise(smooth_field(rng, w, h, 2)[..., 0])
        f = 0.5 + (f - 0.5) * (0.3 + 0.7 * m)
    return _colourise(rng, f)


_PROCEDURAL_FNS = {'dead_leaves': _dead_leaves, 'fractal': _fractal, 'gradient': _gradient, 'stripes': _stripes}


def generate_gt(index, size, seed=0, source='mixed'):
    """Generate ground-truth image ``index`` (HxWx3 uint8 BGR) and a short description of its origin.

    Depends only on ``(index, size, seed, source)``.
    """
    w, h = parse_size(size)
    if source not in SOURCES:
        raise DemoDataError(f'--source: unknown source {source!r}; choose from {", ".join(SOURCES)}')
    require_photos(source)
    rng = seed_rng(seed, index, 0)
    use_photo = source == 'photos' or (source == 'mixed' and rng.random() < 0.5)
    if use_photo and not available_photos():
        warnings.warn('no bundled scikit-image photographs found; --source mixed falls back to procedural '
                      'images only', RuntimeWarning, stacklevel=2)
        use_photo = False
    if use_photo:
        img, kind = _photo(rng, w, h)
    else:
        kind = PROCEDURAL_KINDS[int(rng.choice(len(PROCEDURAL_KINDS), p=_PROCEDURAL_WEIGHTS))]
        img, kind = _PROCEDURAL_FNS[kind](rng, w, h), f'procedural:{kind}'
    return np.ascontiguousarray(img), kind


def require_photos(source):
    """Refuse ``source='photos'`` when scikit-image's photographs are not installed."""
    if source == 'photos' and not available_photos():
        raise DemoDataError('--source: photos requested but no bundled scikit-image photographs were found '
                            '(is scikit-image installed?); use --source procedural')
