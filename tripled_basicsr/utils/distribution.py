"""Distances between two sets of feature vectors: multi-scale RBF MMD and a diagonal
Gaussian KL. Pure torch maths, no BasicSR: the distiller's report and calibration and the
``FeatureDistributionLoss`` (losses/distribution_loss.py) all use this one copy.
"""
import numpy as np
import torch

DEFAULT_SCALES = (0.5, 1.0, 2.0, 4.0)


def median_bandwidth(x, max_points=2048, seed=0):
    """Median pairwise Euclidean distance of (a sample of) x: the RBF bandwidth heuristic."""
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).float()
    if x.shape[0] > max_points:
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(x.shape[0], generator=g)[:max_points]]
    d = torch.cdist(x, x)
    iu = torch.triu_indices(x.shape[0], x.shape[0], 1)
    vals = d[iu[0], iu[1]]
    med = float(vals.median()) if vals.numel() else 1.0
    return med if med > 0 else 1.0


def _kernel_mean(a, b, bandwidth, scales, chunk=4096):
    """Mean over all pairs of sum_s exp(-|a-b|^2 / (2 (s*bw)^2)) / len(scales), in row chunks."""
    total = a.new_zeros(())
    gammas = [1.0 / (2.0 * (s * bandwidth) ** 2) for s in scales]
    for i in range(0, a.shape[0], chunk):
        d2 = torch.cdist(a[i:i + chunk], b).pow(2)
        k = sum(torch.exp(-g * d2) for g in gammas) / len(gammas)
        total = total + k.sum()
    return total / (a.shape[0] * b.shape[0])


def mmd_rbf(x, y, bandwidth=None, scales=DEFAULT_SCALES):
    """Biased (V-statistic) squared MMD with a multi-scale RBF kernel; >= 0, 0 for equal sets.

    Differentiable in x and y.

    Args:
        x (Tensor): (n, D) features; y (Tensor): (m, D).
        bandwidth (float | None): base RBF bandwidth; None -> median heuristic on y.
        scales (tuple): multipliers of the bandwidth (multi-kernel MMD).
    Returns:
        Tensor: scalar.
    """
    if bandwidth is None:
        bandwidth = median_bandwidth(y.detach())
    kxx = _kernel_mean(x, x, bandwidth, scales)
    kyy = _kernel_mean(y, y, bandwidth, scales)
    kxy = _kernel_mean(x, y, bandwidth, scales)
    return (kxx + kyy - 2 * kxy).clamp_min(0)


def gaussian_kl(x, y, eps=1e-5):
    """KL(N(mu_x, diag var_x) || N(mu_y, diag var_y)) per dimension, averaged over D."""
    mx, my = x.mean(0), y.mean(0)
    vx, vy = x.var(0, unbiased=False) + eps, y.var(0, unbiased=False) + eps
    return 0.5 * (torch.log(vy / vx) + (vx + (mx - my) ** 2) / vy - 1).mean()


def feature_distribution_loss(pred, target, mmd_weight=1.0, kl_weight=0.0, bandwidth=None, scales=DEFAULT_SCALES):
    """mmd_weight * MMD^2(pred, target) + kl_weight * KL(pred || target) of (n, D) / (m, D) features."""
    loss = pred.new_zeros(())
    if mmd_weight:
        loss = loss + mmd_weight * mmd_rbf(pred, target, bandwidth, scales)
    if kl_weight:
        loss = loss + kl_weight * gaussian_kl(pred, target)
    return loss


def mmd_numpy(x, y, bandwidth=None, scales=DEFAULT_SCALES):
    """``mmd_rbf`` on numpy arrays -> float."""
    with torch.no_grad():
        xt = torch.as_tensor(np.asarray(x, np.float32))
        yt = torch.as_tensor(np.asarray(y, np.float32))
        return float(mmd_rbf(xt, yt, bandwidth, scales))
