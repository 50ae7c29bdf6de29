"""Degradation-preserving calibration: pure maths (docs/method.md, "Calibration").

The calibration may align features but never change what the model learns to undo. Three
guards, all pure functions with tests:

* ``is_grey``: a pair whose GT and LQ have three equal channels stays grey (the pixel
  transform is reduced to its grey-level action, ``to_grey``);
* ``residual_stats`` / ``residual_drift``: the LQ-GT relation (per-channel residual mean
  and std, and a blind noise-level estimate of the LQ) measured before and after; a
  transform that moves them beyond ``calibration.residual_tolerance`` is shrunk toward the
  identity (or refused, strength 0);
* ``kmm_weights``: calibration by per-sample weights instead of pixels (kernel mean
  matching of the weighted subset to the full-set feature bank): no pixel changes at all.
"""
import math

import cv2
import numpy as np


def is_grey(*imgs):
    """True when every HxWx3 image has three identical channels (a grey pair stored as colour)."""
    for img in imgs:
        if img.ndim == 2 or img.shape[2] == 1:
            continue
        if not (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])):
            return False
    return True


def to_grey(img):
    """HxWx3 float -> the channel mean replicated to three channels (the grey part of a colour transform)."""
    m = img.mean(axis=2, keepdims=True)
    return np.repeat(m, 3, axis=2)


_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)


def noise_sigma(img):
    """Blind Gaussian noise level (grey levels) of an HxW(x C) image, mean over channels.

    Immerkaer's estimator (1996): sigma = sqrt(pi/2) / (6 (W-2)(H-2)) * sum |I * N|, where N
    is the difference of two Laplacians (it cancels smooth image structure). Cheap, no
    training, and good enough to tell whether a transform rescaled the noise.
    """
    a = np.asarray(img, np.float64)
    if a.ndim == 2:
        a = a[..., None]
    h, w = a.shape[:2]
    if h < 3 or w < 3:
        return 0.0
    out = []
    for c in range(a.shape[2]):
        r = cv2.filter2D(a[..., c], cv2.CV_64F, _NOISE_KERNEL, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
        out.append(math.sqrt(math.pi / 2) * np.abs(r).sum() / (6.0 * (w - 2) * (h - 2)))
    return float(np.mean(out))


def residual_stats(gt, lq, scale=1):
    """Statistics of the LQ-GT relation of one pair (uint8 or float in grey levels).

    The reference is the GT itself (scale 1) or the GT area-downsampled to the LQ size, so the
    residual is what the model must undo (noise, blur, compression) at the LQ's resolution.
    Returns {'mean': [c], 'std': [c], 'noise': float (noise_sigma of the LQ)}.
    """
    g = np.asarray(gt, np.float64)
    q = np.asarray(lq, np.float64)
    if g.ndim == 2:
        g, q = g[..., None], q[..., None] if q.ndim == 2 else q
    if int(scale) != 1 or g.shape[:2] != q.shape[:2]:
        g = cv2.resize(g, (q.shape[1], q.shape[0]), interpolation=cv2.INTER_AREA)
        if g.ndim == 2:
            g = g[..., None]
    r = (q - g).reshape(-1, q.shape[2])
    return {'mean': r.mean(0).tolist(), 'std': r.std(0).tolist(), 'noise': noise_sigma(q)}


def residual_drift(before, after):
    """How far ``after`` moved from ``before`` (dicts of residual_stats).

    Returns {'std': max relative change of the per-channel residual std, 'mean': max change of
    the per-channel residual mean in units of the residual std, 'noise': relative change of
    the noise level}. Relative changes use max(value, 1 grey level) as the denominator so
    near-clean pairs do not divide by zero.
    """
    sb, sa = np.asarray(before['std']), np.asarray(after['std'])
    mb, ma = np.asarray(before['mean']), np.asarray(after['mean'])
    denom = np.maximum(sb, 1.0)
    return {'std': float(np.max(np.abs(sa - sb) / denom)), 'mean': float(np.max(np.abs(ma - mb) / denom)),
            'noise': float(abs(after['noise'] - before['noise']) / max(before['noise'], 1.0))}


def within_tolerance(drift, tolerance):
    """True when every entry of ``residual_drift`` is <= tolerance (a fraction, e.g. 0.02)."""
    return all(v <= tolerance + 1e-12 for v in drift.values())


# ---------------------------------------------------------------- weights (no pixel changes)
def _rbf(a, b, bandwidth, scales=(0.5, 1.0, 2.0)):
    d = np.maximum((a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :], 0.0)
    return sum(np.exp(-d / (2.0 * (bandwidth * s) ** 2)) for s in scales) / len(scales)


def weighted_mmd(k_ss, k_sb_mean, k_bb_mean, w):
    """MMD^2 of the w-weighted subset (weights with mean 1) to the bank, from kernel blocks."""
    n = len(w)
    return float(w @ k_ss @ w / n ** 2 - 2.0 * (w @ k_sb_mean) / n + k_bb_mean)


def kmm_weights(sub, bank, bandwidth, lo=0.25, hi=4.0, iters=500):
    """Kernel mean matching: weights w (n,), mean 1, lo <= w <= hi, minimising the MMD^2 of the
    w-weighted subset features ``sub`` (n, D) to the bank (M, D) under a multi-scale RBF.

    Projected gradient descent on the convex quadratic (step 1/L from the largest eigenvalue),
    projecting onto {mean 1, box} by bisection on the shift. Deterministic.
    Returns (w, mmd_uniform, mmd_weighted).
    """
    sub = np.asarray(sub, np.float64)
    bank = np.asarray(bank, np.float64)
    n = sub.shape[0]
    if not 0 < lo <= 1 <= hi:
        raise ValueError(f'calibration.weight_range must satisfy 0 < low <= 1 <= high; got [{lo}, {hi}].')
    k_ss = _rbf(sub, sub, bandwidth)
    k_sb = _rbf(sub, bank, bandwidth).mean(1)
    k_bb = float(_rbf(bank, bank, bandwidth).mean()) if bank.shape[0] <= 4096 else float(
        _rbf(bank[:4096], bank[:4096], bandwidth).mean())
    w = np.ones(n)
    before = weighted_mmd(k_ss, k_sb, k_bb, w)
    if n == 1:
        return w, before, before
    lip = 2.0 * float(np.linalg.eigvalsh(k_ss)[-1]) / n ** 2
    step = 1.0 / max(lip, 1e-12)

    def project(v):
        a, b = -hi - abs(v).max(), hi + abs(v).max()
        for _ in range(60):  # mean(clip(v - t)) is monotone in t
            t = 0.5 * (a + b)
            if np.clip(v - t, lo, hi).mean() > 1.0:
                a = t
            else:
                b = t
        return np.clip(v - 0.5 * (a + b), lo, hi)

    for _ in range(int(iters)):
        grad = 2.0 * (k_ss @ w) / n ** 2 - 2.0 * k_sb / n
        w_new = project(w - step * grad)
        if np.max(np.abs(w_new - w)) < 1e-9:
            w = w_new
            break
        w = w_new
    after = weighted_mmd(k_ss, k_sb, k_bb, w)
    if after > before:  # numerical safety: uniform is always feasible
        w, after = np.ones(n), before
    return w, before, after
