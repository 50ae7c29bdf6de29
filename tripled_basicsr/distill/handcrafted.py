"""Offline features that need no weights: restoration statistics (``features.backbone: tripled_stats``).

Without pretrained weights a random-init ViT gives random projections; these hand-crafted
statistics describe what matters to restoration instead, per image (or crop):

* colour: mean and std of R, G, B; mean |R - G| and |B - G| (0 for grey images)      8
* tone: 8-bin luminance histogram                                                      8
* gradients: mean |dx|, |dy|; gradient magnitude at scales 1, 1/2, 1/4                5
* frequency: log energy in 6 radial FFT bands (fractions of the total)                 6
* natural-scene statistics (BRISQUE-style MSCN coefficients): variance, mean |c|,
  mean horizontal and vertical neighbour products                                      4
* noise: Immerkaer's blind noise level of the luminance                                1

32 dimensions. The module has the timm interface the feature stage uses
(``forward_features`` / ``forward_head``, ``pretrained_cfg``), so it runs through the same
batched, resumable, distributed pipeline as a ViT. The distiller z-scores the dimensions
over the dataset before the usual L2 normalisation (distill/stages/scores.py), since their units differ.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

NAME = 'tripled_stats'
DIM = 32


def _blur(x, k=7, sigma=7 / 6):
    r = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    x = F.conv2d(F.pad(x, (k // 2, k // 2, 0, 0), mode='reflect'), g.view(1, 1, 1, k))
    return F.conv2d(F.pad(x, (0, 0, k // 2, k // 2), mode='reflect'), g.view(1, 1, k, 1))


def restoration_stats(x):
    """(B, 3, S, S) RGB in [0, 1] -> (B, 32) float32 statistics (module docstring)."""
    x = x.float().clamp(0, 1)
    b = x.shape[0]
    y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]  # (B, 1, S, S)
    out = [x.mean((2, 3)), x.std((2, 3)), (x[:, 0] - x[:, 1]).abs().mean((1, 2))[:, None],
           (x[:, 2] - x[:, 1]).abs().mean((1, 2))[:, None]]
    idx = (y.flatten(1) * 8).long().clamp(0, 7)
    hist = torch.zeros(b, 8, device=x.device).scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float32))
    out.append(hist / idx.shape[1])
    dx, dy = (y[..., :, 1:] - y[..., :, :-1]).abs(), (y[..., 1:, :] - y[..., :-1, :]).abs()
    out += [dx.mean((1, 2, 3))[:, None], dy.mean((1, 2, 3))[:, None]]
    z = y
    for _ in range(3):
        gx, gy = z[..., :, 1:] - z[..., :, :-1], z[..., 1:, :] - z[..., :-1, :]
        out.append((gx[..., :-1, :] ** 2 + gy[..., :, :-1] ** 2).sqrt().mean((1, 2, 3))[:, None])
        z = F.avg_pool2d(z, 2) if min(z.shape[-2:]) >= 4 else z
    spec = torch.fft.rfft2(y[:, 0] - y[:, 0].mean((1, 2), keepdim=True)).abs() ** 2
    fy = torch.fft.fftfreq(y.shape[-2], device=x.device)[:, None]
    fx = torch.fft.rfftfreq(y.shape[-1], device=x.device)[None, :]
    rad = (fx ** 2 + fy ** 2).sqrt() / math.sqrt(0.5)  # 0 .. 1
    edges = torch.tensor([0, 1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.01], device=x.device)
    total = spec.sum((1, 2)).clamp_min(1e-12)
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = ((rad >= lo) & (rad < hi)).float()
        out.append(torch.log10((spec * m).sum((1, 2)) / total + 1e-6)[:, None])
    mu = _blur(y)
    sd = (_blur(y * y) - mu * mu).clamp_min(0).sqrt()
    c = (y - mu) / (sd + 1 / 255)
    out += [c.var((1, 2, 3))[:, None], c.abs().mean((1, 2, 3))[:, None],
            (c[..., :, 1:] * c[..., :, :-1]).mean((1, 2, 3))[:, None],
            (c[..., 1:, :] * c[..., :-1, :]).mean((1, 2, 3))[:, None]]
    k = torch.tensor([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=y.dtype, device=x.device).view(1, 1, 3, 3)
    r = F.conv2d(y, k).abs()
    out.append((math.sqrt(math.pi / 2) * r.mean((1, 2, 3)) / 6.0)[:, None])
    return torch.cat(out, 1).float()


class RestorationStats(nn.Module):
    """timm-like wrapper: ``forward_features`` -> (B, 32) statistics; no weights."""

    def __init__(self):
        super().__init__()
        # identity normalisation: embed() then hands us the [0, 1] RGB input unchanged
        self.pretrained_cfg = {'mean': (0.0, 0.0, 0.0), 'std': (1.0, 1.0, 1.0)}
        self.num_prefix_tokens = 0
        self.tripled_weights = 'none (hand-crafted statistics)'

    def forward_features(self, x):
        return restoration_stats(x)

    def forward_head(self, feats, pre_logits=True):
        return feats


def standardized_features(feat, kinds_count, views_per_kind, chunk=65536):
    """(N, V, D) stored statistics -> (N, kinds*D) float32: views averaged, each dimension
    z-scored over the N rows (two chunked passes), then L2-normalised like ViT features."""
    import numpy as np
    n, v, d = feat.shape

    def rows(s):
        x = np.asarray(feat[s:s + chunk], np.float32).reshape(-1, kinds_count, views_per_kind, d)
        return x.mean(2).reshape(x.shape[0], -1).astype(np.float64)

    total = np.zeros(kinds_count * d)
    sq = np.zeros(kinds_count * d)
    for s in range(0, n, chunk):
        x = rows(s)
        total += x.sum(0)
        sq += (x * x).sum(0)
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(sq / max(n, 1) - mean * mean, 0.0))
    std[std < 1e-8] = 1.0  # constant dimensions carry no information: leave them at 0
    out = np.empty((n, kinds_count * d), np.float32)
    for s in range(0, n, chunk):
        z = (rows(s) - mean) / std
        out[s:s + chunk] = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return out
