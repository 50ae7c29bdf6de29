"""BRISQUE natural-scene-statistics features (Mittal, Moorthy, Bovik, IEEE TIP 2012).

Exact mode follows the authors' ``brisque_feature.m``: MSCN with a 7x7 Gaussian
(sigma 7/6) and ZERO padding, a GGD fit of the MSCN map and AGGD fits of the four
circularly shifted pairwise products, both by grid search over 0.2:0.001:10, at the
image and at MATLAB ``imresize(., 0.5)`` (bicubic, antialiased). MSCN values below 1e-9
(float64; 1e-3 in lower precision) are snapped to 0: they are the floating-point residue
of flat or linear 7x7 neighbourhoods, exactly 0 in exact arithmetic (see docs/iqa.md,
"known reference disagreements"). 18 features per scale:

    [alpha, sigma^2,  (alpha, eta, sl^2, sr^2) x shifts (0,1), (1,0), (1,1), (-1,1)]

Soft mode (``soft=True``) replaces every hard step (see docs/iqa.md):

* sign split of the pairwise products P < 0 / P > 0 -> sigmoid(-+P / tau) tanh^2(P / tau)
  weights (0 at P = 0, as exact zeros belong to neither side),
* grid arg-min -> Gaussian soft-argmin over the same grid,
  alpha = sum_g g softmax(-((r(g) - rho) / tau)^2), restricted (exactly, to float
  precision) to the grid points whose weight is above exp(-64) of the best one,
* |x| and sqrt at 0 -> sqrt(x^2 + eps), sqrt(x + eps) with eps = (1e-3 tau)^2,
* luma rounding (``quantize=True``) -> straight-through rounding.
"""
from functools import lru_cache

import numpy as np
import torch
from scipy.special import gamma as _gamma_fn

from tripled_basicsr.iqa._common import (check_tau, matlab_round, mscn, normalize_feature_maps, smooth_abs, smooth_eps,
                                         ste_round, to_luma255)
from tripled_basicsr.iqa.resize import imresize

SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))
FEATURE_NAMES_PER_SCALE = ('ggd_alpha', 'ggd_sigma2') + tuple(
    f'{kind}_{name}' for kind in ('h', 'v', 'd1', 'd2') for name in ('alpha', 'eta', 'sl2', 'sr2'))
FEATURE_NAMES = tuple(f's1_{n}' for n in FEATURE_NAMES_PER_SCALE) + tuple(f's2_{n}' for n in FEATURE_NAMES_PER_SCALE)
MIN_SIDE = 13  # ceil(13 / 2) = 7: the half-scale image still covers the 7x7 window
_WINDOW_LOGIT = 64.0  # soft-argmin keeps grid points with weight >= exp(-64) of the best one


@lru_cache(maxsize=None)
def _tables_np():
    """MATLAB's 0.2:0.001:10 grid and the moment-ratio tables, float64.

    The grid reproduces MATLAB's colon operator (first half a + k*d, second half b - (n-1-k)*d).
    r_ggd(g) = G(1/g) G(3/g) / G(2/g)^2 is strictly decreasing on the grid, r_aggd = 1 / r_ggd
    strictly increasing; ``eta_const`` is MATLAB's sqrt(G(1/a))/sqrt(G(3/a)) * G(2/a)/G(1/a).
    """
    n = 9801
    k = np.arange(n, dtype=np.float64)
    grid = np.where(k < n / 2, 0.2 + k * 0.001, 10.0 - (n - 1 - k) * 0.001)
    g1, g2, g3 = _gamma_fn(1.0 / grid), _gamma_fn(2.0 / grid), _gamma_fn(3.0 / grid)
    r_ggd = (g1 * g3) / (g2**2)
    r_aggd = (g2**2) / (g1 * g3)
    eta_const = (np.sqrt(g1) / np.sqrt(g3)) * (g2 / g1)
    assert np.all(np.diff(r_ggd) < 0) and np.all(np.diff(r_aggd) > 0)
    return grid, r_ggd, r_aggd, eta_const


@lru_cache(maxsize=16)
def _tables(dtype, device):
    grid, r_ggd, r_aggd, eta_const = _tables_np()
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dtype=dtype, device=device)  # noqa: E731
    return {
        'grid': to(grid),
        'grid_rev': to(grid[::-1]),
        'r_ggd_inc': to(r_ggd[::-1]),  # increasing, for searchsorted
        'r_aggd_inc': to(r_aggd),
        'eta_const': to(eta_const),
    }


def _grid_argmin_exact(value, table_inc, decreasing, squared):
    """Index (into MATLAB's grid order) of argmin_g crit(table(g) - value), first index on ties.

    ``table_inc`` is the table in increasing order (reversed grid when ``decreasing``);
    for a strictly monotone table the arg-min is one of the two neighbours of
    ``searchsorted``. NaN values give index 0 (MATLAB ``min`` over all-NaN returns 1).
    """
    n = table_inc.numel()
    v = value.reshape(-1).contiguous()
    vv = torch.nan_to_num(v, nan=0.0)
    pos = torch.searchsorted(table_inc, vv)
    i0 = (pos - 1).clamp(0, n - 1)
    i1 = pos.clamp(0, n - 1)
    d0 = table_inc[i0] - v
    d1 = table_inc[i1] - v
    c0, c1 = (d0 * d0, d1 * d1) if squared else (d0.abs(), d1.abs())
    if decreasing:  # original index n-1-i: the larger increasing index is the first in MATLAB order
        pick = torch.where(c0 < c1, i0, i1)
        idx = n - 1 - pick
    else:
        pick = torch.where(c1 < c0, i1, i0)
        idx = pick
    idx = torch.where(torch.isnan(v), torch.zeros_like(idx), idx)
    return idx.view(value.shape)


def _soft_grid_argmin(value, table_inc, grid_inc, tau):
    """Gaussian soft-argmin: sum_g grid(g) softmax_g(-((table(g) - value) / tau)^2).

    Only grid points with logit >= best logit - 64 are used (the others weigh < exp(-64)
    relative to the best one), found with two ``searchsorted`` per value, so memory is
    O(values x window) instead of O(values x 9801).
    """
    n = table_inc.numel()
    v = value.reshape(-1)
    with torch.no_grad():
        vd = v.detach().contiguous()
        pos = torch.searchsorted(table_inc, vd)
        i0 = (pos - 1).clamp(0, n - 1)
        i1 = pos.clamp(0, n - 1)
        dmin = torch.minimum((table_inc[i0] - vd).abs(), (table_inc[i1] - vd).abs())
        rad = torch.sqrt(dmin * dmin + _WINDOW_LOGIT * tau * tau)
        lo = torch.searchsorted(table_inc, (vd - rad).contiguous())
        hi = torch.searchsorted(table_inc, (vd + rad).contiguous(), right=True)
        lo = torch.minimum(lo, torch.minimum(i0, i1))
        hi = torch.maximum(hi, torch.maximum(i0, i1) + 1)
        k = int((hi - lo).max()) if v.numel() else 1
        idx = lo[:, None] + torch.arange(k, device=v.device)[None, :]
        valid = idx < hi[:, None]
        idx = idx.clamp(max=n - 1)
    logits = -((table_inc[idx] - v[:, None]) / tau)**2
    logits = logits.masked_fill(~valid, float('-inf'))
    w = torch.softmax(logits, dim=-1)
    return (w * grid_inc[idx]).sum(-1).view(value.shape)


def _circshift_product(m, shift):
    """m * circshift(m, shift) over the last two dims, without materialising the shifted copy
    (one pass; exact mode only: ``out=`` does not record autograd)."""
    out = torch.empty_like(m)

    def spans(s, n):  # (dst, src) index ranges of circshift by s along a dim of length n
        s %= n
        if s == 0:
            return [(slice(0, n), slice(0, n))]
        return [(slice(s, n), slice(0, n - s)), (slice(0, s), slice(n - s, n))]

    for dr, sr in spans(shift[0], m.shape[-2]):
        for dc, sc in spans(shift[1], m.shape[-1]):
            torch.mul(m[..., dr, dc], m[..., sr, sc], out=out[..., dr, dc])
    return out


def _count_nonzero_rows(x):
    """count_nonzero along the last dim of (N, L); full reductions are much faster on CPU
    than the dim= variant (which materialises an int64 copy), so loop over few rows."""
    if x.shape[0] <= 16:
        return torch.stack([torch.count_nonzero(row) for row in x])
    return torch.count_nonzero(x, -1)


def _flat_tol(dtype):
    return 1e-9 if dtype == torch.float64 else 1e-3


def _sqnorm(x):
    """Row-wise sum of squares of (N, L) without an (N, L) temporary (BLAS dot)."""
    return torch.bmm(x.unsqueeze(1), x.unsqueeze(2)).view(-1)


def _lgamma_eta_const(alpha):
    """G(2/a) / G(1/a) * sqrt(G(1/a) / G(3/a)), differentiable in a."""
    return torch.exp(torch.lgamma(2.0 / alpha) - 0.5 * (torch.lgamma(1.0 / alpha) + torch.lgamma(3.0 / alpha)))


def _nss_one_scale(lum, soft, tau):
    """18 BRISQUE features of (N, 1, H, W) grey levels (0..255) -> (N, 18)."""
    t = _tables(lum.dtype, lum.device)
    eps = smooth_eps(tau) if soft else 0.0
    m = mscn(lum, 'zero', soft=soft, eps=eps)  # (N, 1, H, W)
    if not soft:
        # In exact arithmetic the MSCN of a flat (or linear-ramp) 7x7 neighbourhood is 0; in
        # floating point it is rounding noise (~1e-13) whose sign depends on summation order
        # and would decide on which AGGD side those products are counted. Snap it to 0.
        m = m.masked_fill(m.abs() < _flat_tol(m.dtype), 0.0)
    n = m.shape[0]
    flat = m.reshape(n, -1)

    # --- GGD fit of the MSCN map
    sigma_sq = (flat * flat).mean(1)
    if soft:
        e_abs = smooth_abs(flat, eps).mean(1)
        rho = sigma_sq / (e_abs * e_abs)
        ggd_alpha = _soft_grid_argmin(rho, t['r_ggd_inc'], t['grid_rev'], tau)
        ggd_var = sigma_sq
    else:
        e_abs = flat.abs().mean(1)
        rho = sigma_sq / (e_abs * e_abs)
        ggd_alpha = t['grid'][_grid_argmin_exact(rho, t['r_ggd_inc'], decreasing=True, squared=False)]
        ggd_var = torch.sqrt(sigma_sq)**2

    # --- AGGD fits of the 4 circularly shifted pairwise products: per-shift sums, then
    # the fits vectorised over (N, 4)
    stats = []
    for s in SHIFTS:
        pair = (m * torch.roll(m, shifts=s, dims=(-2, -1)) if soft else _circshift_product(m, s)).reshape(n, -1)
        if soft:
            p2 = pair * pair
            # soft [P < 0] / [P > 0]: sigmoid(-+P / tau) tanh^2(P / tau), 0 at P = 0 like the
            # exact split (products that are exactly 0 belong to neither side)
            z = pair / tau
            w_zero = torch.tanh(z)**2
            w_neg = torch.sigmoid(-z) * w_zero
            w_pos = torch.sigmoid(z) * w_zero
            stats.append(((p2 * w_neg).sum(-1), (p2 * w_pos).sum(-1), w_neg.sum(-1), w_pos.sum(-1),
                          smooth_abs(pair, eps).mean(-1), p2.mean(-1)))
        else:
            # few passes over the (N, H*W) products: P<0 part, two dot products, two sums, two counts
            neg_part = pair.clamp(max=0)
            sum_l2, sum_p2 = _sqnorm(neg_part), _sqnorm(pair)
            cnt_neg = _count_nonzero_rows(neg_part)
            cnt_pos = _count_nonzero_rows(pair) - cnt_neg
            sum_abs = pair.sum(-1) - 2 * neg_part.sum(-1)
            numel = pair.shape[-1]
            stats.append((sum_l2, sum_p2 - sum_l2, cnt_neg.to(pair.dtype), cnt_pos.to(pair.dtype), sum_abs / numel,
                          sum_p2 / numel))
    sum_l2, sum_r2, cnt_l, cnt_r, mean_abs, mean_p2 = (torch.stack(v, 1) for v in zip(*stats))  # each (N, 4)
    if soft:
        sl2 = sum_l2 / (cnt_l + eps)
        sr2 = sum_r2 / (cnt_r + eps)
        sl = torch.sqrt(sl2 + eps)
        sr = torch.sqrt(sr2 + eps)
        rhat = mean_abs * mean_abs / (mean_p2 + eps)
        big_r = rhat * (sl**3 + sr**3) * (sl + sr) / (sl * sl + sr * sr)**2
        alpha = _soft_grid_argmin(big_r, t['r_aggd_inc'], t['grid'], tau)
        eta = (sr - sl) * _lgamma_eta_const(alpha)
        sl2_out, sr2_out = sl2, sr2
    else:
        # mean over an empty side is taken as 0 (MATLAB gives NaN there, see docs)
        sl = torch.sqrt(sum_l2 / cnt_l.clamp_min(1))
        sr = torch.sqrt(sum_r2 / cnt_r.clamp_min(1))
        rhat = mean_abs * mean_abs / mean_p2
        gamma_hat = sl / sr
        big_r = rhat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1)**2
        # one empty side: the same expression multiplied through by sr^4 stays finite
        sym = rhat * (sl**3 + sr**3) * (sl + sr) / (sl * sl + sr * sr)**2
        big_r = torch.where((sl == 0) | (sr == 0), sym, big_r)
        idx = _grid_argmin_exact(big_r, t['r_aggd_inc'], decreasing=False, squared=True)
        alpha = t['grid'][idx]
        eta = (sr - sl) * t['eta_const'][idx]
        sl2_out, sr2_out = sl**2, sr**2

    aggd = torch.stack([alpha, eta, sl2_out, sr2_out], -1).reshape(n, 16)  # (N, 4 shifts x 4)
    return torch.cat([torch.stack([ggd_alpha, ggd_var], -1), aggd], -1)


def _check_side(lum, scales, argname):
    h, w = lum.shape[-2:]
    need = MIN_SIDE if scales == 2 else 7
    if h < need or w < need:
        raise ValueError(f'{argname}: BRISQUE needs both sides >= {need} px (so that the '
                         f'{"half-scale " if scales == 2 else ""}image covers the 7x7 Gaussian window), got '
                         f'{h}x{w}; use a larger crop' + (' or scales=1' if scales == 2 else ''))


def _brisque_core(lum, soft, tau, quantize, scales):
    if quantize:
        lum = ste_round(lum) if soft else matlab_round(lum)
    feats = []
    for s in range(scales):
        if s:
            lum = imresize(lum, 0.5)
        feats.append(_nss_one_scale(lum, soft, tau))
    return torch.cat(feats, -1)


def brisque_features(img, soft=False, tau=0.02, quantize=None, data_range=None, dtype=None):
    """The 36 BRISQUE features of each image.

    Args:
        img: torch tensor (B, 3, H, W) RGB or (B, 1, H, W) luma with values in
            [0, data_range] (default 1), or a numpy image (H, W, 3) BGR / (H, W[, 1]) grey,
            uint8 or float in 0..255 (BasicSR's metric convention). Both sides >= 13.
        soft: use the differentiable surrogates (see module docstring) with temperature ``tau``.
        tau: temperature (> 0) of the soft surrogates; ignored when ``soft=False``.
        quantize: round the 0..255 luma to integers like MATLAB's uint8 ``rgb2gray`` path of
            ``brisquescore.m``. Default: True in exact mode, False in soft mode (in soft mode
            True uses straight-through rounding).
        data_range: value of white (default 1 for tensors, 255 for numpy arrays).
        dtype: computation dtype. Default float64 in exact mode, the input's dtype
            (float32/float64) in soft mode.

    Returns:
        (B, 36) tensor (B = 1 for numpy input): per scale [alpha, sigma^2] of the MSCN GGD fit
        and [alpha, eta, sl^2, sr^2] of the AGGD fits for shifts (0,1), (1,0), (1,1), (-1,1);
        names in ``FEATURE_NAMES``. alpha in [0.2, 10], variances >= 0.
    """
    tau = check_tau(tau, soft)
    lum, _ = to_luma255(img, argname='img', data_range=data_range, soft=soft, dtype=dtype)
    _check_side(lum, 2, 'img')
    if quantize is None:
        quantize = not soft
    return _brisque_core(lum, soft, tau, quantize, 2)


def brisque_feature_maps(feat, soft=True, tau=0.02, norm='minmax', scales=2):
    """BRISQUE features of every channel of feature maps (B, C, H, W), any value range (for SLKD).

    Each (sample, channel) map is first mapped to 0..255 grey levels by
    :func:`normalize_feature_maps` (``norm='minmax'``: 255 (x - min) / (max - min);
    ``'std'``: 127.5 + 42.5 (x - mean) / std; ``'none'``: as is), then treated as a luma
    image (no rounding). Computed in ``feat.dtype``.

    Returns (B, C, 18 * scales); ``scales`` is 2 (BRISQUE's two scales, sides >= 13) or 1
    (full resolution only, sides >= 7). Soft (differentiable) by default.
    """
    tau = check_tau(tau, soft)
    if scales not in (1, 2):
        raise ValueError(f'scales must be 1 or 2, got {scales!r}')
    lum = normalize_feature_maps(feat, norm)
    _check_side(lum, scales, 'feat')
    b, c = feat.shape[:2]
    return _brisque_core(lum, soft, tau, False, scales).view(b, c, 18 * scales)
