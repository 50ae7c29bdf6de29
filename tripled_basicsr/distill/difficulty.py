"""Proxy-model difficulty of each selection unit: what a restorer fitted briefly to the pool still
gets wrong there (``selection.type: importance``, docs/method.md "Difficulty").

The proxy is the best linear restorer of the pool, fitted in closed form: one ``taps`` x ``taps``
filter (shared by the colour channels) plus a bias, applied to the LQ image brought to the GT grid
(bicubic for scale > 1), fitted by ridge least squares on pixels sampled over the pool. Its
residual ``GT - proxy(LQ)`` is the part of the task a linear model cannot do: texture and edges a
denoiser must keep, detail a super-resolver must invent, block edges a deblocker must hide. It
holds the degradation as well as the content, so the same rule reads every task; and it is
deterministic, cheap (one pass to fit on a sample of images, one to score) and needs no weights.

A unit's difficulty is the RMS of that residual over its GT box (0-255 scale).
"""
import numpy as np

from tripled_basicsr.utils.log import note

DEFAULT_TAPS = 7
FIT_IMAGES = 64          # images sampled for the fit
FIT_PIXELS = 4096        # pixels sampled per fitted image
RIDGE = 1e-3


def _float(img):
    return np.asarray(img, np.float32) / 255.0


def to_gt_grid(lq, scale, hw):
    """LQ (h, w, c) float -> the GT grid (H, W, c): bicubic for scale > 1 (the usual SR input)."""
    if scale == 1:
        return lq
    import cv2
    return cv2.resize(lq, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)


def _padded(x, r):
    return np.pad(x, ((r, r), (r, r), (0, 0)), mode='reflect')


def neighbourhoods(x, ys, xs, taps):
    """(H, W, C) image, pixel positions -> (len(ys) * C, taps * taps) rows: the taps x taps window
    around each position in each channel (reflect-101 border, as cv2.filter2D)."""
    r = taps // 2
    if min(x.shape[:2]) <= r:  # reflections of reflections: numpy's pad knows them
        p = _padded(x, r)
        dy, dx = np.meshgrid(np.arange(taps), np.arange(taps), indexing='ij')
        win = p[ys[:, None] + dy.ravel()[None], xs[:, None] + dx.ravel()[None]]
    else:  # gather through reflected indices: no padded copy of the whole image
        dy, dx = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing='ij')
        win = x[_reflect(ys[:, None] + dy.ravel()[None], x.shape[0]),
                _reflect(xs[:, None] + dx.ravel()[None], x.shape[1])]
    return win.transpose(0, 2, 1).reshape(-1, taps * taps)  # (n, taps*taps, C) -> channel rows


def _reflect(i, n):
    """Reflect-101 index (cv2's default border) for -n < i < 2n - 1."""
    i = np.abs(i)
    return np.where(i >= n, 2 * (n - 1) - i, i)


def fit_proxy(pairs, scale, taps=DEFAULT_TAPS, pixels=FIT_PIXELS, seed=0, ridge=RIDGE):
    """Ridge least squares over sampled pixels of ``pairs`` (iterable of (gt, lq) uint8 arrays)
    -> weights (taps * taps + 1,): the filter, row-major, then the bias."""
    if taps < 1 or taps % 2 == 0:
        raise ValueError(f'taps must be an odd number >= 1; got {taps}.')
    rng = np.random.default_rng([int(seed), 11])
    d = taps * taps + 1
    ata, atb, seen = np.zeros((d, d)), np.zeros(d), 0
    for gt, lq in pairs:
        hw, c = gt.shape[:2], gt.shape[2]
        # scale 1: windows gathered from the uint8 LQ, converted after (the same values as
        # converting the whole image first); scale > 1: from the bicubic upscale
        x = lq if scale == 1 else to_gt_grid(_float(lq), scale, hw)
        m = min(pixels, hw[0] * hw[1])
        ys, xs = rng.integers(0, hw[0], m), rng.integers(0, hw[1], m)
        win = neighbourhoods(x, ys, xs, taps)
        a = np.concatenate([_float(win) if scale == 1 else win, np.ones((m * c, 1), np.float32)], 1)
        b = _float(gt[ys, xs]).reshape(-1)  # (m, C) -> rows in the order of `a` (pixel-major, then channel)
        ata += a.T.astype(np.float64) @ a
        atb += a.T.astype(np.float64) @ b
        seen += len(b)
    if not seen:
        raise ValueError('no pixel to fit the proxy on.')
    reg = ridge * np.trace(ata) / d * np.eye(d)
    return np.linalg.solve(ata + reg, atb)


BAND = 64  # rows per band of the residual: arrays that stay in cache, no whole-image float copies


def residual(gt, lq, scale, w):
    """|GT - proxy(LQ)|^2 averaged over channels -> (H, W) float32, 0-255 scale squared.

    Computed in bands of ``BAND`` rows (each filtered with its ``taps // 2`` rows of context):
    the same arithmetic per pixel as on the whole image, a few times faster at 4K."""
    import cv2
    taps = int(round(np.sqrt(len(w) - 1)))
    k = np.asarray(w[:-1], np.float32).reshape(taps, taps)
    bias = np.float32(w[-1])
    h, wd = gt.shape[:2]
    x = lq if scale == 1 else to_gt_grid(_float(lq), scale, (h, wd))
    r = taps // 2
    band = BAND if taps < 11 else h  # larger kernels may take cv2's DFT path, whose rounding depends on size
    out = np.empty((h, wd), np.float32)
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        a0, a1 = max(0, y0 - r), min(h, y1 + r)
        xb = _float(x[a0:a1]) if scale == 1 else x[a0:a1]
        o = cv2.filter2D(xb, -1, k, borderType=cv2.BORDER_REFLECT_101)[y0 - a0:y1 - a0]
        g = _float(gt[y0:y1])
        d = (g - (o.reshape(g.shape) + bias)) * 255.0
        out[y0:y1] = (d * d).mean(2)
    return out


def _parts(source):
    """-> [(source part, first unit index)]: one entry, or the tasks of a MultiSource."""
    if hasattr(source, 'parts') and hasattr(source, 'offsets'):
        return [(p[1], int(o)) for p, o in zip(source.parts, source.offsets)]
    return [(source, 0)]


def _images(part):
    """-> (whole-image source, {image index: [(unit, (top, left, h, w))]}) of one part."""
    if hasattr(part, 'image_index') and hasattr(part, 'base'):
        boxes = {}
        for u, i in enumerate(part.image_index):
            boxes.setdefault(int(i), []).append((u, part.box(u)))
        return part.base, boxes
    return part, {i: [(i, None)] for i in range(len(part))}


class _Residuals:
    """Dataset over images: item j -> (image index, unit ids, RMS residual of each unit's box),
    or with ``w`` None the decoded pair itself (the fit's reads)."""

    def __init__(self, base, images, boxes, scale, w):
        self.base, self.images, self.boxes, self.scale, self.w = base, images, boxes, scale, w

    def __len__(self):
        return len(self.images)

    def __getitem__(self, j):
        i = self.images[j]
        if self.w is None:
            return self.base.read_pair(i)
        return i, box_rms(residual(*self.base.read_pair(i), self.scale, self.w), self.boxes[i])


def box_rms(r2, boxes):
    """Squared-residual map, [(unit, box or None)] -> (unit ids, RMS over each box (whole map for None))."""
    units = np.array([u for u, _ in boxes], np.int64)
    vals = np.array([float(np.sqrt((r2 if b is None else r2[b[0]:b[0] + b[2], b[1]:b[1] + b[3]]).mean()))
                     for _, b in boxes])
    return units, vals


def _residual_rows(base, images, boxes, scale, w, workers):
    """Yields (unit ids, values) of ``images``; a worker reads neighbouring images."""
    from tripled_basicsr.distill.features import loaded, worker_order
    ds = _Residuals(base, images, boxes, scale, w)
    for _, rows in loaded(ds, workers, worker_order(len(ds), workers)):
        yield rows


def unit_difficulty(source, rows=None, taps=DEFAULT_TAPS, seed=0, fit_images=FIT_IMAGES, progress=False, workers=0,
                    cache_bytes=1 << 28, rank=0, world=1):
    """RMS proxy residual (0-255) of each unit of ``source`` (whole images or crop units, one
    task or several: each task gets its own proxy) -> (len(rows),) float64 for the unit
    indices ``rows`` (default: every unit). Units outside ``rows`` are never read.

    Images are decoded in ``workers`` processes (0: in this one), each once for all its units;
    the pairs decoded for the fit (a sample of ``fit_images`` per task) are scored from memory
    while they fit in ``cache_bytes``, so a small pool is decoded once in all. Under
    torch.distributed (``world`` > 1; every rank calls with the same ``rows``) every rank fits
    the same proxy, scores a contiguous block of the images and the values are gathered to
    every rank."""
    n = len(source)
    rows = np.arange(n) if rows is None else np.asarray(rows, np.int64)
    wanted = np.zeros(n, bool)
    wanted[rows] = True
    out = np.full(n, np.nan)
    for part, off in _parts(source):
        base, boxes = _images(part)
        boxes = {i: [(u, b) for u, b in lst if wanted[off + u]] for i, lst in boxes.items()}
        images = sorted(i for i, lst in boxes.items() if lst)
        if not images:
            continue
        rng = np.random.default_rng([int(seed), 12])
        fit = sorted(rng.choice(images, min(fit_images, len(images)), replace=False).tolist())
        size = -(-len(images) // world)
        mine = images[rank * size:(rank + 1) * size]
        w, kept = _fit(base, fit, set(mine), part.scale, taps, seed, workers, cache_bytes)
        for i, pair in kept.items():
            units, vals = box_rms(residual(*pair, part.scale, w), boxes[i])
            out[off + units] = vals
        todo = [i for i in mine if i not in kept]
        kept.clear()
        done = 0
        for units, vals in _residual_rows(base, todo, boxes, part.scale, w, int(workers)):
            out[off + units] = vals
            done += 1
            if progress and done % 200 == 0:
                note(f'difficulty: {done}/{len(todo)} images')
        if world > 1:
            _gather(out, [off + u for i in mine for u, _ in boxes[i]], world)
    return out[rows]


def _fit(base, fit, keep, scale, taps, seed, workers, cache_bytes):
    """The proxy of one task, fitted on the pairs ``fit``. -> (weights, {image: pair} of the fit
    pairs in ``keep`` held in memory, up to ``cache_bytes``)."""
    from tripled_basicsr.distill.features import loaded
    kept, used = {}, 0

    def pairs():
        nonlocal used
        for i, pair in zip(fit, loaded(_Residuals(base, fit, None, scale, None), workers)):
            nbytes = pair[0].nbytes + pair[1].nbytes
            if i in keep and used + nbytes <= cache_bytes:
                kept[i], used = pair, used + nbytes
            yield pair

    return fit_proxy(pairs(), scale, taps, seed=seed), kept


def _gather(out, idx, world):
    """Every rank's values at its unit indices ``idx`` into ``out`` on every rank."""
    import torch
    idx = np.asarray(idx, np.int64)
    parts = [None] * world
    torch.distributed.all_gather_object(parts, (idx, out[idx]))
    for i, v in parts:
        out[i] = v
