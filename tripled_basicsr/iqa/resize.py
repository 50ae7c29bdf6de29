"""Batched, differentiable MATLAB ``imresize`` (bicubic, antialiased).

MATLAB resizes each dimension with a sparse weight matrix built by ``contributions()``
(cubic kernel a = -0.5, kernel widened by 1/scale when downscaling with antialiasing,
symmetric boundary extension by index mirroring). We build the same weights once per
(length, scale) in float64 numpy and apply them along H, then W, as a sum of P
weighted gathers (P = 10 taps at scale 0.5), i.e. out = A_h @ X @ A_w^T with the sparse
A of MATLAB. This equals MATLAB's result for double input
(no clipping or rounding) up to float rounding, works for any input size (the mirroring
is modular, unlike BasicSR's ``imresize`` which needs at least a few pixels per side and
computes in float32), and is linear, hence differentiable.
"""
import math
from functools import lru_cache

import numpy as np
import torch


def _cubic(x):
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _kernel_placement(out_length, scale, antialiasing):
    """MATLAB's kernel and where it sits: ``(kernel, left, dist)``; output ``i`` reads the
    (1-based, unmirrored) inputs ``left[i] + k`` with weight ``kernel(dist[i, k])``, k < P."""
    if scale < 1 and antialiasing:  # downscaling: the kernel widened by 1/scale
        kernel, kernel_width = (lambda t: scale * _cubic(scale * t)), 4.0 / scale
    else:
        kernel, kernel_width = _cubic, 4.0
    u = np.arange(1, out_length + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    return kernel, left, u[:, None] - (left[:, None] + np.arange(p)[None, :])


@lru_cache(maxsize=64)
def contributions(in_length, out_length, scale, antialiasing=True):
    """MATLAB imresize's ``contributions``: (weights, indices), both (out_length, P), float64 / int64.

    ``indices`` are 0-based and already mirrored into [0, in_length) (MATLAB's
    ``aux = [1:in, in:-1:1]`` modular mirroring).
    """
    kernel, left, dist = _kernel_placement(out_length, scale, antialiasing)
    indices = left[:, None] + np.arange(dist.shape[1])[None, :]
    weights = kernel(dist)
    weights = weights / weights.sum(1, keepdims=True)
    aux = np.concatenate([np.arange(1, in_length + 1), np.arange(in_length, 0, -1)])
    indices = aux[np.mod(indices.astype(np.int64) - 1, len(aux))] - 1
    weights.setflags(write=False)
    indices.setflags(write=False)
    return weights, indices


def resize_matrix(in_length, out_length, scale, antialiasing=True):
    """Dense (out_length, in_length) float64 matrix of MATLAB imresize's weights (for tests/inspection)."""
    weights, indices = contributions(in_length, out_length, float(scale), antialiasing)
    mat = np.zeros((out_length, in_length), dtype=np.float64)
    rows = np.repeat(np.arange(out_length), weights.shape[1])
    np.add.at(mat, (rows, indices.ravel()), weights.ravel())
    return mat


@lru_cache(maxsize=64)
def _regular_plan(in_length, out_length, scale, antialiasing):
    """(taps, first, step) when every output uses the same weights on input indices
    first + step * i + k (before mirroring) - true for scale 0.5 - else None."""
    kernel, left, dist = _kernel_placement(out_length, scale, antialiasing)
    step = np.diff(left)
    if out_length < 2 or not np.all(step == step[0]) or step[0] != round(step[0]):
        return None
    if not np.all(dist == dist[0]):
        return None
    w = kernel(dist[0])
    w = w / w.sum()
    keep = np.nonzero(w)[0]
    w = w[keep[0]:keep[-1] + 1]
    first = int(left[0]) - 1 + int(keep[0])  # 0-based, may be negative (mirrored)
    return tuple(float(v) for v in w), first, int(step[0])


def _mirror_index(idx, n):
    period = 2 * n
    m = np.mod(idx, period)
    return np.where(m < n, m, period - 1 - m)


def _resize_dim(x, dim, out_length, scale, antialiasing):
    n = x.shape[dim]
    plan = _regular_plan(n, out_length, scale, antialiasing)
    if plan is not None:
        taps, first, step = plan
        last = first + step * (out_length - 1) + len(taps) - 1
        lo, hi = max(0, -first), max(0, last - (n - 1))
        if lo or hi:  # symmetric extension (MATLAB's index mirroring), only the few border lines
            parts = []
            if lo:
                parts.append(x.index_select(dim, torch.from_numpy(_mirror_index(np.arange(-lo, 0), n)).to(x.device)))
            parts.append(x)
            if hi:
                parts.append(x.index_select(dim, torch.from_numpy(_mirror_index(np.arange(n, n + hi), n)).to(
                    x.device)))
            x = torch.cat(parts, dim)
        start = first + lo
        out = None
        for k, wk in enumerate(taps):
            sl = x.narrow(dim, start + k, step * (out_length - 1) + 1)
            if step != 1:
                index = [slice(None)] * x.ndim
                index[dim] = slice(None, None, step)
                sl = sl[tuple(index)]
            out = sl * wk if out is None else out.add_(sl, alpha=wk)
        return out
    weights, indices = contributions(n, out_length, scale, antialiasing)
    keep = np.any(weights != 0, axis=0)  # MATLAB drops all-zero tap columns
    w = torch.from_numpy(weights[:, keep].copy()).to(dtype=x.dtype, device=x.device)
    idx = torch.from_numpy(indices[:, keep].copy()).to(device=x.device)
    shape = [1] * x.ndim
    shape[dim] = out_length
    out = None
    for k in range(w.shape[1]):
        term = x.index_select(dim, idx[:, k]) * w[:, k].view(shape)
        out = term if out is None else out + term
    return out


def imresize(x, scale, antialiasing=True, size=None):
    """MATLAB ``imresize(x, scale)`` (bicubic) for tensors (..., H, W), batched, differentiable.

    Output size is ceil(scale * H) x ceil(scale * W), as in MATLAB, unless ``size``
    ``(out_h, out_w)`` is given: ``scale = 1 / s`` is inexact in floating point, and
    ``ceil`` of e.g. ``(1 / 75) * 525`` is 8, not 7, so integer down-scaling by ``s`` passes
    ``size=(H // s, W // s)``. Values are not clipped. Computed in ``x.dtype`` (use float64
    for MATLAB-level agreement). Any strides work: a channels-last HxWxC image viewed as
    (C, H, W) with ``permute`` is resized without a copy (faster than a contiguous copy,
    since each tap then moves whole pixel rows).
    """
    h, w = x.shape[-2:]
    oh, ow = (int(math.ceil(scale * h)), int(math.ceil(scale * w))) if size is None else map(int, size)
    x = _resize_dim(x, x.ndim - 2, oh, float(scale), antialiasing)
    return _resize_dim(x, x.ndim - 1, ow, float(scale), antialiasing)
