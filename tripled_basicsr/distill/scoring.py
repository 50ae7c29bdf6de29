"""Complexity c_i and uncertainty u_i, both in [0, 1] (docs/method.md, "Scores").

Pure functions over arrays; the registered strategies at the bottom are what the YAML
``complexity: {type: ...}`` / ``uncertainty: {type: ...}`` sections name.
"""
import numpy as np
import torch

from tripled_basicsr.distill.registry import COMPLEXITY, UNCERTAINTY
from tripled_basicsr.options import choice, integer, number
from tripled_basicsr.utils.device import resolve_device

STAT_NAMES = ('entropy', 'gradient', 'token_var')


# ---------------------------------------------------------------- helpers
def rank_normalize(x):
    """Average ranks scaled to [0, 1]: min -> 0, max -> 1, ties share a value; N == 1 -> 0.5.

    Args:
        x (array-like): (N,) finite values.
    Returns:
        ndarray: (N,) float64 in [0, 1].
    """
    from scipy.stats import rankdata
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x
    if not np.isfinite(x).all():
        raise ValueError('rank_normalize: input contains NaN or inf.')
    if x.size == 1 or np.all(x == x[0]):
        return np.full(x.shape, 0.5)
    r = rankdata(x, method='average') - 1.0
    return r / (x.size - 1)


def image_stats(img):
    """Cheap per-image statistics for complexity, from a decoded (reduced) image.

    Args:
        img (ndarray): HxWx3 uint8 BGR.
    Returns:
        dict: ``entropy`` Shannon entropy (bits, 0..8) of the 256-bin grayscale histogram;
        ``gradient`` mean Sobel gradient magnitude of the grayscale image in [0, 1] units.
    """
    import cv2
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    p = hist / max(hist.sum(), 1.0)
    p = p[p > 0]
    entropy = float(-(p * np.log2(p)).sum())
    g = gray.astype(np.float32) / 255.0
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    gradient = float(np.sqrt(gx * gx + gy * gy).mean())
    return {'entropy': entropy, 'gradient': gradient}


def ridge_fit_predict(feats, target, alpha=1.0, chunk=65536):
    """Ridge regression of ``target`` on standardised features; returns in-sample predictions.

    Normal equations accumulated in chunks, so memory is O(D^2) beyond the inputs.
    ``alpha`` is relative: the penalty is ``alpha * trace(X^T X) / D``.

    Args:
        feats (ndarray): (N, D) float features.
        target (ndarray): (N,) float.
    Returns:
        ndarray: (N,) float64 predictions.
    """
    n, d = feats.shape
    mean = np.zeros(d)
    for s in range(0, n, chunk):
        mean += feats[s:s + chunk].astype(np.float64).sum(0)
    mean /= n
    t_mean = float(np.mean(target))
    xtx = np.zeros((d, d))
    xty = np.zeros(d)
    for s in range(0, n, chunk):
        x = feats[s:s + chunk].astype(np.float64) - mean
        xtx += x.T @ x
        xty += x.T @ (np.asarray(target[s:s + chunk], np.float64) - t_mean)
    lam = alpha * max(np.trace(xtx) / d, 1e-12)
    w = np.linalg.solve(xtx + lam * np.eye(d), xty)
    pred = np.empty(n)
    for s in range(0, n, chunk):
        pred[s:s + chunk] = (feats[s:s + chunk].astype(np.float64) - mean) @ w + t_mean
    return pred


def knn_mean_cosine_distance(feats, k=10, query_chunk=2048, db_chunk=65536, device='auto', progress=False):
    """Mean cosine distance of each row to its k nearest other rows, never building N x N.

    Queries and database are both processed in chunks with a running top-k, so memory is
    O(query_chunk * (db_chunk + k)). Rows are L2-normalised here.

    Args:
        feats (ndarray): (N, D) float.
        k (int): neighbours (clipped to N - 1).
    Returns:
        ndarray: (N,) float64 in [0, 2]; zeros when N == 1.
    """
    n = feats.shape[0]
    k = int(min(k, n - 1))
    if k < 1:
        return np.zeros(n)
    dev = resolve_device(device)
    out = np.empty(n)
    x_all = torch.as_tensor(np.asarray(feats, np.float32))
    x_all = torch.nn.functional.normalize(x_all, dim=1)
    from tqdm import tqdm
    for qs in tqdm(range(0, n, query_chunk), desc='knn rarity', unit='chunk', disable=not progress, leave=False):
        q = x_all[qs:qs + query_chunk].to(dev)
        best = torch.full((q.shape[0], k), -float('inf'), device=dev)
        for ds in range(0, n, db_chunk):
            db = x_all[ds:ds + db_chunk].to(dev)
            sim = q @ db.T
            # exclude self-matches
            rows = torch.arange(q.shape[0], device=dev)
            cols = rows + qs - ds
            valid = (cols >= 0) & (cols < db.shape[0])
            sim[rows[valid], cols[valid]] = -float('inf')
            cand = torch.cat([best, sim], dim=1)
            best = torch.topk(cand, k, dim=1).values
        out[qs:qs + q.shape[0]] = (1.0 - best.clamp(-1, 1)).mean(1).double().cpu().numpy()
    return out


def knn_mean_cosine_distance_bruteforce(feats, k=10):
    """Reference O(N^2)-memory version of ``knn_mean_cosine_distance`` (for tests)."""
    x = np.asarray(feats, np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    k = min(k, x.shape[0] - 1)
    top = -np.sort(-sim, axis=1)[:, :k]
    return (1.0 - top).mean(1)


# ---------------------------------------------------------------- complexity strategies
@COMPLEXITY.register('vit_entropy', checks={'alpha': lambda p, v: number(p, v, lo=0, lo_open=True)})
def vit_entropy(feats, stats, ctx, alpha=1.0):
    """Ridge head on the ViT features fitted to the grayscale Shannon entropy, rank-normalised.

    Our reading of the paper's "ViT trained to predict corrected image entropy": the
    regression is fitted per dataset, so it needs no extra trained weights; predicting
    entropy from features (rather than using it raw) smooths out histogram artefacts such
    as flat backgrounds with noise.
    """
    return rank_normalize(ridge_fit_predict(feats, stats['entropy'], alpha=alpha))


@COMPLEXITY.register('feature_variance')
def feature_variance(feats, stats, ctx):
    """Variance of the ViT patch tokens within each image (diverse content -> high)."""
    return rank_normalize(stats['token_var'])


@COMPLEXITY.register('pixel_entropy')
def pixel_entropy(feats, stats, ctx):
    """Shannon entropy of the grayscale histogram of the decoded image."""
    return rank_normalize(stats['entropy'])


@COMPLEXITY.register('gradient')
def gradient_energy(feats, stats, ctx):
    """Mean Sobel gradient magnitude of the decoded image."""
    return rank_normalize(stats['gradient'])


# ---------------------------------------------------------------- uncertainty strategies
@UNCERTAINTY.register('knn_rarity', checks={
    'k': lambda p, v: integer(p, v, lo=1), 'scope': lambda p, v: choice(p, v, ('auto', 'global', 'cluster')),
    'global_max': lambda p, v: integer(p, v, lo=1), 'query_chunk': lambda p, v: integer(p, v, lo=1),
    'db_chunk': lambda p, v: integer(p, v, lo=1)})
def knn_rarity(feats, stats, ctx, k=10, scope='auto', global_max=200000, query_chunk=2048, db_chunk=65536):
    """Rarity: mean cosine distance to the k nearest neighbours, rank-normalised.

    ``scope``: ``global`` (all N, chunked: O(N^2 D) time, bounded memory), ``cluster``
    (neighbours searched inside each k-means cluster: O(sum n_c^2 D)), or ``auto``
    (global up to ``global_max`` items, cluster beyond).
    """
    n = feats.shape[0]
    labels = ctx.get('labels')
    if scope == 'auto':
        scope = 'global' if n <= global_max or labels is None else 'cluster'
    progress = ctx.get('progress', False)
    device = ctx.get('device', 'auto')
    if scope == 'global':
        d = knn_mean_cosine_distance(feats, k, query_chunk, db_chunk, device=device, progress=progress)
    elif scope == 'cluster':
        if labels is None:
            raise ValueError('knn_rarity scope "cluster" needs cluster labels.')
        d = np.empty(n)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            d[idx] = knn_mean_cosine_distance(feats[idx], k, query_chunk, db_chunk, device=device)
    else:
        raise ValueError(f'uncertainty.scope must be global, cluster or auto; got {scope!r}.')
    return rank_normalize(d)


@UNCERTAINTY.register('centroid_distance')
def centroid_distance(feats, stats, ctx):
    """Cosine distance to the own k-means centroid, rank-normalised (cheap O(N D))."""
    labels = ctx['labels']
    d = np.empty(feats.shape[0])
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        cen = feats[idx].mean(0)
        cen = cen / max(np.linalg.norm(cen), 1e-12)
        d[idx] = 1.0 - feats[idx] @ cen
    return rank_normalize(d)


@UNCERTAINTY.register('none')
def no_uncertainty(feats, stats, ctx):
    """Constant 0.5: selection inside clusters is driven by complexity only."""
    return np.full(feats.shape[0], 0.5)
