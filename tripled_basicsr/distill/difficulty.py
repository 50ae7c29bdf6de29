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
    p = _padded(x, r)
    dy, dx = np.meshgrid(np.arange(taps), np.arange(taps), indexing='ij')
    win = p[ys[:, None] + dy.ravel()[None], xs[:, None] + dx.ravel()[None]]  # (n, taps*taps, C)
    return win.transpose(0, 2, 1).reshape(-1, taps * taps)


def fit_proxy(pairs, scale, taps=DEFAULT_TAPS, pixels=FIT_PIXELS, seed=0, ridge=RIDGE):
    """Ridge least squares over sampled pixels of ``pairs`` (iterable of (gt, lq) uint8 arrays)
    -> weights (taps * taps + 1,): the filter, row-major, then the bias."""
    if taps < 1 or taps % 2 == 0:
        raise ValueError(f'taps must be an odd number >= 1; got {taps}.')
    rng = np.random.default_rng([int(seed), 11])
    d = taps * taps + 1
    ata, atb, seen = np.zeros((d, d)), np.zeros(d), 0
    for gt, lq in pairs:
        g = _float(gt)
        x = to_gt_grid(_float(lq), scale, g.shape[:2])
        m = min(pixels, g.shape[0] * g.shape[1])
        ys, xs = rng.integers(0, g.shape[0], m), rng.integers(0, g.shape[1], m)
        a = np.concatenate([neighbourhoods(x, ys, xs, taps), np.ones((m * g.shape[2], 1), np.float32)], 1)
        b = g[ys, xs].reshape(-1)  # (m, C) -> rows in the order of `a` (pixel-major, then channel)
        ata += a.T.astype(np.float64) @ a
        atb += a.T.astype(np.float64) @ b
        seen += len(b)
    if not seen:
        raise ValueError('no pixel to fit the proxy on.')
    reg = ridge * np.trace(ata) / d * np.eye(d)
    return np.linalg.solve(ata + reg, atb)


def residual(gt, lq, scale, w):
    """|GT - proxy(LQ)|^2 averaged over channels -> (H, W) float32, 0-255 scale squared."""
    import cv2
    taps = int(round(np.sqrt(len(w) - 1)))
    g = _float(gt)
    x = to_gt_grid(_float(lq), scale, g.shape[:2])
    k = np.asarray(w[:-1], np.float32).reshape(taps, taps)
    out = cv2.filter2D(x, -1, k, borderType=cv2.BORDER_REFLECT_101) + np.float32(w[-1])
    r = (g - out.reshape(g.shape)) * 255.0
    return (r * r).mean(2)


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


def unit_difficulty(source, rows=None, taps=DEFAULT_TAPS, seed=0, fit_images=FIT_IMAGES, progress=False):
    """RMS proxy residual (0-255) of each unit of ``source`` (whole images or crop units, one
    task or several: each task gets its own proxy) -> (len(rows),) float64 for the unit
    indices ``rows`` (default: every unit). Units outside ``rows`` are never read."""
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
        w = fit_proxy((base.read_pair(i) for i in fit), part.scale, taps, seed=seed)
        for j, i in enumerate(images):
            gt, lq = base.read_pair(i)
            r2 = residual(gt, lq, part.scale, w)
            for u, b in boxes[i]:
                if b is None:
                    out[off + u] = float(np.sqrt(r2.mean()))
                else:
                    t, x, h, wd = b
                    out[off + u] = float(np.sqrt(r2[t:t + h, x:x + wd].mean()))
            if progress and (j + 1) % 200 == 0:
                print(f'  difficulty: {j + 1}/{len(images)} images', flush=True)
    return out[rows]
