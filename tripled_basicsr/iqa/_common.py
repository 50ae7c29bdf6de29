"""Shared pieces of the BRISQUE / PIQE implementations (pure torch, no BasicSR).

Conventions used throughout ``tripled_basicsr.iqa``:

* "luma255" tensors have shape (N, 1, H, W) and grey levels on the 0..255 scale.
* ``soft=True`` replaces every hard step by a smooth surrogate with temperature ``tau``;
  the small constant that keeps square roots and absolute values differentiable is tied
  to ``tau`` (:func:`smooth_eps`) so soft results converge to exact ones as ``tau -> 0``.
"""
import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

# MATLAB rgb2gray weights (R, G, B), applied on 0..255 values.
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)
WINDOW_SIZE = 7
WINDOW_SIGMA = 7 / 6
MSCN_C = 1.0


def check_tau(tau, soft):
    if not soft:
        return None
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f'tau must be a positive finite number (the temperature of the soft surrogates), '
                         f'got {tau!r}; try tau=0.02')
    return float(tau)


def smooth_eps(tau):
    """Smoothing constant paired with temperature ``tau``: square roots use sqrt(x + eps)."""
    return (1e-3 * tau)**2


def smooth_abs(x, eps):
    return torch.sqrt(x * x + eps)


def matlab_round(x):
    """MATLAB ``round``: halves away from zero (``torch.round`` rounds halves to even)."""
    r = torch.abs(x)
    r.add_(0.5).floor_()
    return r.copysign_(x)


def ste_round(x):
    """MATLAB rounding in the forward pass, identity gradient (straight-through estimator)."""
    return x + (matlab_round(x) - x).detach()


@lru_cache(maxsize=None)
def _gaussian_1d_np():
    r = WINDOW_SIZE // 2
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(x * x) / (2 * WINDOW_SIGMA**2))
    return g / g.sum()


def gaussian_window_2d(dtype=torch.float64, device='cpu'):
    """The 7x7 Gaussian window (sigma 7/6, sum 1) as a (7, 7) tensor (fspecial('gaussian', 7, 7/6))."""
    g = _gaussian_1d_np()
    return torch.from_numpy(np.outer(g, g)).to(dtype=dtype, device=device)


def _gaussian_filter(x, padding):
    """Separable 7x7 Gaussian filter of (N, 1, H, W) with 'same' output size.

    ``padding``: 'zero' (MATLAB filter2 'same') or 'replicate' (imgaussfilt 'replicate').
    Implemented as 7 shifted multiply-adds per direction (zero padding by clipping the
    slices instead of padding): on CPU this is 5-30x faster than ``conv2d`` with a
    1-channel kernel (float64 conv2d is particularly slow) and equally differentiable.
    """
    g = [float(v) for v in _gaussian_1d_np()]
    r = WINDOW_SIZE // 2
    if padding == 'replicate':
        x = F.pad(x, (r, r, r, r), mode='replicate')
        h, w = x.shape[-2] - 2 * r, x.shape[-1] - 2 * r
        y = x[..., 0:h, :] * g[0]
        for k in range(1, WINDOW_SIZE):
            y.add_(x[..., k:k + h, :], alpha=g[k])
        z = y[..., 0:w] * g[0]
        for k in range(1, WINDOW_SIZE):
            z.add_(y[..., k:k + w], alpha=g[k])
        return z
    if padding != 'zero':  # pragma: no cover - internal
        raise ValueError(padding)
    return _shift_add_zero(_shift_add_zero(x, g, -2), g, -1)


def _shift_add_zero(x, g, dim):
    """y[i] = sum_k g[k] x[i + k - r] along ``dim`` with zeros outside (correlation, 'same')."""
    n = x.shape[dim]
    r = len(g) // 2
    y = x * g[r]
    for k in range(len(g)):
        o = k - r
        if o == 0 or abs(o) >= n:
            continue
        if o > 0:
            y.narrow(dim, 0, n - o).add_(x.narrow(dim, o, n - o), alpha=g[k])
        else:
            y.narrow(dim, -o, n + o).add_(x.narrow(dim, 0, n + o), alpha=g[k])
    return y


def mscn(lum, padding, soft=False, eps=0.0):
    """Mean-subtracted contrast-normalised coefficients of (N, 1, H, W) grey levels (0..255).

    mu = w * I, sigma = sqrt(|w * I^2 - mu^2|), MSCN = (I - mu) / (sigma + 1). In soft mode
    sqrt(|d|) becomes (d^2 + eps^2)^(1/4), differentiable at d = 0 (flat regions).
    Returns (N, 1, H, W).
    """
    mu = _gaussian_filter(lum, padding)
    d = _gaussian_filter(lum * lum, padding) - mu * mu
    if soft:
        sigma = (d * d + eps * eps)**0.25
    else:
        sigma = torch.sqrt(torch.abs(d))
    return (lum - mu) / (sigma + MSCN_C)


def _is_float_dtype(dt):
    return dt in (np.float16, np.float32, np.float64)


def to_luma255(img, *, argname='img', data_range=None, soft=False, dtype=None, check_range=None):
    """Convert an image (batch) to (N, 1, H, W) grey levels on the 0..255 scale (unrounded).

    Accepted inputs:

    * torch tensor (B, 3, H, W) RGB or (B, 1, H, W) luma, floating point, values in
      [0, data_range] (``data_range`` defaults to 1).
    * numpy array (H, W, 3) BGR (BasicSR/OpenCV order), (H, W, 1) or (H, W) grey,
      uint8, or float in [0, data_range] (``data_range`` defaults to 255, BasicSR's
      metric convention).

    RGB -> luma uses MATLAB rgb2gray's weights 0.2989 R + 0.5870 G + 0.1140 B.
    Raises ValueError/TypeError naming ``argname`` for non-finite values, empty images,
    wrong shapes/channel counts, unsupported dtypes (uint16, integers, bool) and, when
    ``check_range`` (default: exact mode), values outside [0, data_range] (1% slack).
    Returns (luma255, dtype) with luma255 in ``dtype`` (default float64 in exact mode,
    the input's floating dtype in soft mode).
    """
    if check_range is None:
        check_range = not soft
    if isinstance(img, np.ndarray):
        x, default_range = _numpy_batch(img, argname, dtype or torch.float64)
    elif isinstance(img, torch.Tensor):
        x, default_range = _tensor_batch(img, argname, dtype, soft)
    else:
        raise TypeError(f'{argname}: expected a torch.Tensor (B, C, H, W) or a numpy image (H, W[, C]), got '
                        f'{type(img).__name__}')
    dtype = x.dtype
    if x.numel() == 0:
        raise ValueError(f'{argname}: the image is empty (shape {tuple(img.shape)})')
    if data_range is None:
        data_range = default_range
    if isinstance(data_range, bool) or not (isinstance(data_range, (int, float)) and data_range > 0):
        raise ValueError(f'data_range must be a positive number (the value of white), got {data_range!r}')
    if check_range:
        _check_range(x, argname, data_range)
    scale = 255.0 / data_range
    if x.shape[1] == 3:
        x = x[:, 0:1] * (LUMA_WEIGHTS[0] * scale) + x[:, 1:2] * (LUMA_WEIGHTS[1] * scale) + x[:, 2:3] * (
            LUMA_WEIGHTS[2] * scale)
    else:
        x = x * scale
    if not check_range and not bool(torch.isfinite(x).all()):  # NaN/inf propagate through the weighted sum
        _raise_non_finite(argname)
    return x, dtype


def _numpy_batch(img, argname, dtype):
    """A numpy image (H, W[, C]), BGR, uint8 or float -> ((1, C, H, W) RGB tensor in ``dtype``, default data_range)."""
    if img.dtype != np.uint8 and not _is_float_dtype(img.dtype):
        raise TypeError(f'{argname}: numpy dtype {img.dtype} is not supported; pass uint8 (0..255) or float '
                        f'(0..255, BasicSR metric convention). For uint16 images convert first, e.g. '
                        f'(img / 257).round().astype(np.uint8) or img.astype(np.float64) / 257')
    if img.ndim == 2:
        arr = img[None, None]
    elif img.ndim == 3 and img.shape[2] in (1, 3):
        arr = img.transpose(2, 0, 1)[None]
        if img.shape[2] == 3:
            arr = arr[:, ::-1]  # BGR -> RGB
    else:
        raise ValueError(f'{argname}: expected a numpy image of shape (H, W), (H, W, 1) or (H, W, 3) in BGR '
                         f'order, got shape {img.shape}. Use input_order="CHW" for channel-first arrays')
    return torch.from_numpy(np.ascontiguousarray(arr)).to(dtype), 255.0


def _tensor_batch(img, argname, dtype, soft):
    """A float tensor (B, 3|1, H, W) -> (the tensor in ``dtype`` (default: float64, soft mode: the
    input's float dtype), default data_range 1)."""
    if not img.is_floating_point():
        raise TypeError(f'{argname}: expected a floating point tensor with values in [0, data_range], got dtype '
                        f'{img.dtype}; convert with img.float() / 255 for 8-bit data')
    if img.ndim != 4:
        raise ValueError(f'{argname}: expected a tensor of shape (B, C, H, W) with C = 3 (RGB) or 1 (luma), got '
                         f'shape {tuple(img.shape)}; add a batch dimension with img[None] for a single image')
    if img.shape[1] not in (1, 3):
        raise ValueError(f'{argname}: expected 3 (RGB) or 1 (luma) channels, got {img.shape[1]} (shape '
                         f'{tuple(img.shape)}). For feature maps use brisque_feature_maps / piqe_feature_maps')
    if dtype is None:
        dtype = torch.float64 if not soft else (img.dtype if img.dtype in (torch.float32, torch.float64) else
                                               torch.float32)
    return img.to(dtype), 1.0


def _check_range(x, argname, data_range):
    """Finite values in [0, data_range] (1 % slack)."""
    lo, hi = (float(v) for v in torch.aminmax(x))
    if lo != lo or hi != hi or abs(lo) == float('inf') or abs(hi) == float('inf'):
        _raise_non_finite(argname)
    if lo < -0.01 * data_range or hi > 1.01 * data_range:
        raise ValueError(f'{argname}: values span [{lo:.4g}, {hi:.4g}] but data_range={data_range:g}; clamp '
                         f'the image to [0, {data_range:g}] or pass the right data_range (e.g. 255 for 0..255 '
                         f'tensors)')


def _raise_non_finite(argname):
    raise ValueError(f'{argname}: contains NaN or infinite values; clean the input (e.g. torch.nan_to_num) '
                     f'before computing the metric')


def normalize_feature_maps(feat, norm='minmax', eps=1e-6):
    """Map each channel of feature maps (B, C, H, W), any value range, to 0..255 grey levels.

    ``norm``:

    * ``'minmax'`` (default): per sample and channel, 255 * (x - min) / max(max - min, eps);
      a constant channel becomes all zeros.
    * ``'std'``: per sample and channel, 127.5 + 42.5 * (x - mean) / (std + eps), so
      mean +- 3 std spans 0..255 (no clipping; robust to isolated spikes).
    * ``'none'``: values used as they are (they must already be grey levels on 0..255).

    Returns (B * C, 1, H, W) ready for the single-channel kernels.
    """
    if not isinstance(feat, torch.Tensor) or feat.ndim != 4:
        raise ValueError(f'feat: expected a tensor of shape (B, C, H, W), got '
                         f'{tuple(feat.shape) if isinstance(feat, torch.Tensor) else type(feat).__name__}')
    if not feat.is_floating_point():
        raise TypeError(f'feat: expected a floating point tensor, got {feat.dtype}')
    if feat.numel() == 0:
        raise ValueError(f'feat: empty feature maps (shape {tuple(feat.shape)})')
    if not bool(torch.isfinite(feat).all()):
        raise ValueError('feat: contains NaN or infinite values')
    b, c, h, w = feat.shape
    x = feat.reshape(b * c, 1, h, w)
    if norm == 'minmax':
        flat = x.flatten(1)
        lo = flat.min(1).values.view(-1, 1, 1, 1)
        hi = flat.max(1).values.view(-1, 1, 1, 1)
        return 255.0 * (x - lo) / (hi - lo).clamp_min(eps)
    if norm == 'std':
        mean = x.mean((2, 3), keepdim=True)
        std = torch.sqrt(((x - mean)**2).mean((2, 3), keepdim=True) + eps * eps)
        return 127.5 + 42.5 * (x - mean) / (std + eps)
    if norm == 'none':
        return x
    raise ValueError(f"norm must be 'minmax', 'std' or 'none', got {norm!r}")
