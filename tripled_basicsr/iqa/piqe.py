"""PIQE, Perception-based Image Quality Evaluator (Venkatanath et al., NCC 2015; MATLAB ``piqe``).

Exact mode follows MATLAB's ``piqe.m``: grey levels rounded to integers (``round(255 *
im2double(I))``), bottom/right replicate padding to a multiple of 16, MSCN with the 7x7
Gaussian and replicate padding, non-overlapping 16x16 blocks, all vectorised over blocks:

* block variance v (unbiased) of the MSCN values; active block: v > 0.1;
* noticeable artifact: any of the 11 six-pixel runs of any of the 4 one-pixel block edges
  has unbiased std < 0.1;
* noise: sigma = sqrt(v), r = std(centre) / std(surround) (0 if undefined),
  beta = |sigma - r| / max(sigma, r), noisy if sigma > 2 beta. The centre is columns 8 and 9
  (1-based); the surround omits columns 8 and 10 (the reference's quirk: it deletes
  column 8, then the 9th column of what is left);
* D = artifact (1 - v) + noisy v; score = 100 (sum_active D + 1) / (n_active + 1).

Soft mode replaces the hard steps: [v > 0.1] -> sigmoid((v - 0.1) / tau),
[any std < 0.1] -> 1 - prod sigmoid((std - 0.1) / tau), [sigma > 2 beta] ->
sigmoid((sigma - 2 beta) / tau), |.| / sqrt / max -> sqrt(x^2 + eps) / sqrt(x + eps) /
(a + b + |a - b|) / 2 with eps = (1e-3 tau)^2, rounding -> none (or straight-through).
"""
from typing import NamedTuple

import torch
import torch.nn.functional as F

from tripled_basicsr.iqa._common import (check_tau, matlab_round, mscn, normalize_feature_maps, smooth_abs, smooth_eps,
                                         ste_round, to_luma255)

BLOCK = 16
ACTIVITY_THRESHOLD = 0.1
IMPAIRED_THRESHOLD = 0.1
SEGMENT = 6
CENTRE_COLS = (7, 8)  # 0-based: MATLAB columns 8 and 9
SURROUND_COLS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15)  # MATLAB deletes columns 8 and 10


class PIQEResult(NamedTuple):
    """Output of :func:`piqe`: score (B,) in [0, 100] (higher is worse) and (B, H, W) masks.

    Masks are bool in exact mode and soft memberships in [0, 1] in soft mode.
    """
    score: torch.Tensor
    activity_mask: torch.Tensor
    artifact_mask: torch.Tensor
    noise_mask: torch.Tensor


class PIQEBlockMaps(NamedTuple):
    """Output of :func:`piqe_feature_maps`: score (B, C) and block maps (B, C, ceil(H/16), ceil(W/16)).

    ``distortion`` is activity x D, the per-block term of the score's numerator.
    """
    score: torch.Tensor
    activity: torch.Tensor
    artifact: torch.Tensor
    noise: torch.Tensor
    distortion: torch.Tensor


def _std(x, dim, soft, eps):
    """Unbiased std along ``dim`` (smooth sqrt in soft mode)."""
    n = x.shape[dim]
    var = ((x - x.mean(dim, keepdim=True))**2).sum(dim) / (n - 1)
    return torch.sqrt(var + eps) if soft else torch.sqrt(var)


def _pad16(lum):
    h, w = lum.shape[-2:]
    ph, pw = (-h) % BLOCK, (-w) % BLOCK
    if ph or pw:
        lum = F.pad(lum, (0, pw, 0, ph), mode='replicate')
    return lum


def _piqe_blocks(lum, soft, tau):
    """Block-level PIQE of (N, 1, H, W) integer-valued grey levels; H, W multiples of 16.

    Returns (score (N,), active, artifact, noisy, distortion), block maps (N, H/16, W/16).
    """
    eps = smooth_eps(tau) if soft else 0.0
    m = mscn(lum, 'replicate', soft=soft, eps=eps)[:, 0]
    n, h, w = m.shape
    nh, nw = h // BLOCK, w // BLOCK
    blocks = m.reshape(n, nh, BLOCK, nw, BLOCK).permute(0, 1, 3, 2, 4)  # (N, nh, nw, 16, 16)
    flat = blocks.reshape(n, nh, nw, BLOCK * BLOCK)
    var = ((flat - flat.mean(-1, keepdim=True))**2).sum(-1) / (BLOCK * BLOCK - 1)

    edges = torch.stack([blocks[..., 0, :], blocks[..., :, BLOCK - 1], blocks[..., BLOCK - 1, :], blocks[..., :, 0]],
                        -2)  # (N, nh, nw, 4, 16): top, right, bottom, left
    runs = edges.unfold(-1, SEGMENT, 1)  # (N, nh, nw, 4, 11, 6)
    run_std = _std(runs, -1, soft, eps).flatten(-2)  # (N, nh, nw, 44)

    centre = blocks[..., :, list(CENTRE_COLS)].reshape(n, nh, nw, -1)
    surround = blocks[..., :, list(SURROUND_COLS)].reshape(n, nh, nw, -1)

    if soft:
        active = torch.sigmoid((var - ACTIVITY_THRESHOLD) / tau)
        artifact = 1 - torch.exp(F.logsigmoid((run_std - IMPAIRED_THRESHOLD) / tau).sum(-1))
        sigma = torch.sqrt(var + eps)
        c_var = ((centre - centre.mean(-1, keepdim=True))**2).sum(-1) / (centre.shape[-1] - 1)
        s_var = ((surround - surround.mean(-1, keepdim=True))**2).sum(-1) / (surround.shape[-1] - 1)
        # std(centre) / std(surround), 0 when both vanish, finite gradient everywhere
        ratio = torch.sqrt(c_var / (s_var + eps) + eps) - eps**0.5
        diff = smooth_abs(sigma - ratio, eps)
        beta = diff / (0.5 * (sigma + ratio + diff))
        noisy = torch.sigmoid((sigma - 2 * beta) / tau)
        dist = active * (artifact * (1 - var) + noisy * var)
        score = 100 * (dist.flatten(1).sum(1) + 1) / (active.flatten(1).sum(1) + 1)
        return score, active, artifact, noisy, dist

    active = var > ACTIVITY_THRESHOLD
    artifact = (run_std < IMPAIRED_THRESHOLD).any(-1) & active
    sigma = torch.sqrt(var)
    ratio = _std(centre, -1, False, 0.0) / _std(surround, -1, False, 0.0)
    ratio = torch.nan_to_num(ratio, nan=0.0, posinf=float('inf'))
    beta = (sigma - ratio).abs() / torch.maximum(sigma, ratio)  # NaN when ratio is inf: not noisy, as MATLAB
    noisy = (sigma > 2 * beta) & active
    zero = torch.zeros_like(var)
    dist = torch.where(active, torch.where(artifact, 1 - var, zero) + torch.where(noisy, var, zero), zero)
    score = 100 * (dist.flatten(1).sum(1) + 1) / (active.flatten(1).sum(1).to(var.dtype) + 1)
    return score, active, artifact, noisy, dist


def _to_pixels(block_map, h, w):
    return block_map.repeat_interleave(BLOCK, -2).repeat_interleave(BLOCK, -1)[..., :h, :w]


def piqe(img, soft=False, tau=0.02, quantize=None, data_range=None, dtype=None):
    """PIQE score and spatial masks of each image.

    Args:
        img: torch tensor (B, 3, H, W) RGB or (B, 1, H, W) luma with values in
            [0, data_range] (default 1), or a numpy image (H, W, 3) BGR / (H, W[, 1]) grey,
            uint8 or float in 0..255 (BasicSR's metric convention). Any size >= 1x1: sides
            that are not multiples of 16 are padded by replication as in MATLAB (an image
            smaller than one block is scored as that single padded block).
        soft: differentiable surrogates with temperature ``tau`` (see module docstring).
        tau: temperature (> 0); ignored when ``soft=False``.
        quantize: round the 0..255 luma to integers as MATLAB does. Default True in exact
            mode, False in soft mode (True there = straight-through rounding).
        data_range: value of white (default 1 for tensors, 255 for numpy arrays).
        dtype: computation dtype; default float64 in exact mode, the input's dtype in soft mode.

    Returns:
        :class:`PIQEResult` (score (B,), activity_mask, artifact_mask, noise_mask (B, H, W)).
        Score in [0, 100], higher is worse; a uniform image scores 100.
    """
    tau = check_tau(tau, soft)
    lum, _ = to_luma255(img, argname='img', data_range=data_range, soft=soft, dtype=dtype)
    if quantize is None:
        quantize = not soft
    if quantize:
        lum = ste_round(lum) if soft else matlab_round(lum)
    h, w = lum.shape[-2:]
    score, active, artifact, noisy, _ = _piqe_blocks(_pad16(lum), soft, tau)
    return PIQEResult(score, _to_pixels(active, h, w), _to_pixels(artifact, h, w), _to_pixels(noisy, h, w))


def piqe_feature_maps(feat, soft=True, tau=0.02, norm='minmax'):
    """PIQE of every channel of feature maps (B, C, H, W), any value range (for SLKD).

    Each (sample, channel) map is mapped to 0..255 by :func:`normalize_feature_maps`
    (``norm``: 'minmax' | 'std' | 'none'), not rounded, padded to a multiple of 16 by
    replication, and scored as a grey image. Computed in ``feat.dtype``. Soft by default.

    Returns :class:`PIQEBlockMaps`: score (B, C) and activity / artifact / noise /
    distortion block maps (B, C, ceil(H/16), ceil(W/16)), memberships in [0, 1].
    """
    tau = check_tau(tau, soft)
    lum = normalize_feature_maps(feat, norm)
    b, c = feat.shape[:2]
    out = _piqe_blocks(_pad16(lum), soft, tau)
    score = out[0].view(b, c)
    maps = [o.reshape(b, c, *o.shape[1:]).to(lum.dtype) for o in out[1:]]
    return PIQEBlockMaps(score, *maps)
