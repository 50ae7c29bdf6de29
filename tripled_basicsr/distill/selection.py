"""Distribution-aware selection (docs/method.md, "Selection") and the baselines it is compared with.

* ``kmeans``: deterministic k-means++ seeding + Lloyd (mini-batch updates for large N),
  assignments computed in chunks, on L2-normalised features.
* ``cluster_quotas``: n split over clusters proportionally to their sizes (largest remainder).
* ``gumbel_topk``: sampling without replacement with p_i ~ exp(s_i) via the Gumbel-top-k trick.
* registered strategies ``kcenter`` (coverage), ``importance`` (random units tilted by a proxy
  model's difficulty), ``tripled`` (the paper's stratified draw), ``herding`` (kernel herding: MMD to the full set), ``facility`` (facility location),
  ``random``, ``top_complexity``.
"""
import math

import numpy as np

from tripled_basicsr.distill.registry import SELECTION
from tripled_basicsr.options import OptionError, choice, integer, number


def auto_clusters(n, lo=2, hi=256):
    """``clusters: auto`` -> round(sqrt(n)) clipped to [lo, hi] and to n.

    sqrt(n) keeps ~sqrt(n) picks per stratum, so both the number of strata and the
    within-stratum choice grow with the budget; the cap keeps k-means cheap for millions.
    """
    return int(max(1, min(n, max(lo, min(hi, round(math.sqrt(n)))))))


def resolve_clusters(clusters, n, error=OptionError):
    """The number of k-means strata for ``selection.clusters`` (an int or 'auto') and budget n."""
    if clusters not in (None, 'auto') and (isinstance(clusters, bool) or not isinstance(clusters, int)):
        raise error(f'selection.clusters must be an integer >= 1 or "auto"; got {clusters!r}.')
    k = auto_clusters(n) if clusters in (None, 'auto') else int(clusters)
    if k < 1:
        raise error(f'selection.clusters must be >= 1 or "auto"; got {clusters!r}.')
    if k > n:
        raise error(f'selection.clusters = {k} is larger than the subset size n = {n} (ratio/num): some '
                    f'clusters could get no sample. Use clusters <= {n} or "auto".')
    return k


def _sq_dists(x, c, x_sq=None):
    """Squared Euclidean distances (B, K) between rows of x (B, D) and c (K, D)."""
    if x_sq is None:
        x_sq = (x * x).sum(1)
    d = x_sq[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def assign(x, centers, chunk=65536):
    """Nearest centre of each row, in chunks. Returns (labels (N,) int64, sq. distance (N,))."""
    n = x.shape[0]
    labels = np.empty(n, np.int64)
    dist = np.empty(n, np.float64)
    for s in range(0, n, chunk):
        d = _sq_dists(np.asarray(x[s:s + chunk], np.float32), centers.astype(np.float32))
        labels[s:s + chunk] = d.argmin(1)
        dist[s:s + chunk] = d[np.arange(d.shape[0]), labels[s:s + chunk]]
    return labels, dist


def kmeans_pp_init(x, k, rng, sample=20000):
    """k-means++ seeding on (a deterministic sample of) x -> (k, D) centres."""
    n = x.shape[0]
    if n > sample:
        x = x[np.sort(rng.choice(n, sample, replace=False))]
        n = sample
    x = np.asarray(x, np.float32)
    centers = np.empty((k, x.shape[1]), np.float32)
    centers[0] = x[rng.integers(n)]
    d = _sq_dists(x, centers[:1])[:, 0]
    for j in range(1, k):
        total = d.sum()
        if total <= 0:  # fewer distinct points than k: reuse points
            idx = int(rng.integers(n))
        else:
            idx = int(np.searchsorted(np.cumsum(d / total), rng.random(), side='right'))
            idx = min(idx, n - 1)
        centers[j] = x[idx]
        d = np.minimum(d, _sq_dists(x, centers[j:j + 1])[:, 0])
    return centers


def kmeans(x, k, seed=0, iters=50, tol=1e-5, minibatch_threshold=200000, batch_size=8192, progress=False):
    """Deterministic k-means.

    Args:
        x (ndarray): (N, D) float features (L2-normalised by the caller).
        k (int): clusters, 1 <= k <= N.
        seed (int): RNG seed (same seed, same result).
        iters (int): Lloyd iterations (or mini-batch epochs-equivalent steps for large N).
        minibatch_threshold (int): above this N use mini-batch updates (Sculley 2010),
            then one full chunked assignment.
    Returns:
        (labels (N,) int64, centers (k, D) float32)
    """
    from tqdm import tqdm
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f'k-means: clusters must be in 1..{n}, got {k}.')
    rng = np.random.default_rng(seed)
    centers = kmeans_pp_init(x, k, rng)
    if n > minibatch_threshold:
        counts = np.zeros(k)
        steps = iters * max(1, n // (batch_size * 10))
        for _ in tqdm(range(steps), desc='k-means (mini-batch)', disable=not progress, leave=False):
            b = np.asarray(x[rng.choice(n, batch_size, replace=False)], np.float32)
            lab, _ = assign(b, centers)
            for j in np.unique(lab):
                pts = b[lab == j]
                counts[j] += len(pts)
                eta = len(pts) / counts[j]
                centers[j] = (1 - eta) * centers[j] + eta * pts.mean(0)
        labels, _ = assign(x, centers)
        return labels, centers
    prev = None
    for _ in tqdm(range(iters), desc='k-means', disable=not progress, leave=False):
        labels, dist = assign(x, centers)
        sums = np.zeros((k, x.shape[1]), np.float64)
        np.add.at(sums, labels, np.asarray(x, np.float64))
        counts = np.bincount(labels, minlength=k)
        empty = np.flatnonzero(counts == 0)
        new = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        if len(empty):  # re-seed empty clusters with the farthest points, deterministically
            far = np.argsort(-dist, kind='stable')[:len(empty)]
            new[empty] = np.asarray(x[far], np.float32)
        shift = float(np.abs(new - centers).max())
        centers = new
        if prev is not None and np.array_equal(prev, labels) and not len(empty):
            break
        prev = labels
        if shift < tol:
            break
    labels, _ = assign(x, centers)
    return labels, centers


def cluster_quotas(sizes, n):
    """Split n picks over clusters proportionally to ``sizes`` (largest-remainder method).

    Ties in the remainder go to the larger cluster, then the lower id. Quotas never exceed
    the cluster size. Returns (K,) int64 summing to n.
    """
    sizes = np.asarray(sizes, np.int64)
    total = int(sizes.sum())
    if not 0 <= n <= total:
        raise ValueError(f'cannot pick {n} of {total} items.')
    exact = sizes * (n / total)
    q = np.floor(exact).astype(np.int64)
    rem = exact - q
    left = n - int(q.sum())
    order = sorted(range(len(sizes)), key=lambda j: (-rem[j], -sizes[j], j))
    for j in order:
        if left == 0:
            break
        if q[j] < sizes[j]:
            q[j] += 1
            left -= 1
    return q


def gumbel_topk(scores, m, rng):
    """Draw m of len(scores) indices without replacement, P ~ exp(scores) (Gumbel-top-k).

    Returns positions sorted by descending perturbed score.
    """
    g = rng.gumbel(size=len(scores))
    keys = np.asarray(scores, np.float64) + g
    return np.argsort(-keys, kind='stable')[:m]


def _check_budget(n, total):
    if not 1 <= n <= total:
        raise ValueError(f'selection needs 1 <= n <= N; got n = {n}, N = {total}.')


# ---------------------------------------------------------------- strategies
def _positive(path, v):
    return number(path, v, lo=0, lo_open=True)


@SELECTION.register('tripled', checks={'temperature': _positive})
def select_tripled(feats, c, u, n, ctx, complexity_weight=1.0, uncertainty_weight=1.0, temperature=2.0):
    """k-means strata, quota by cluster size, Gumbel-top-k inside each cluster with
    p_i ~ exp((a*c_i + b*u_i)/T). Returns (sorted indices (n,), labels (N,)).

    The strata come from ``ctx['labels']`` (the pipeline's k-means); without them k-means
    runs here with ``ctx['clusters']`` (an int or 'auto') and ``ctx['kmeans_iters']``.
    """
    total = feats.shape[0]
    _check_budget(n, total)
    if temperature <= 0:
        raise OptionError(f'selection.temperature must be > 0; got {temperature}.')
    seed = int(ctx.get('seed', 0))
    labels = ctx.get('labels')
    if labels is None:
        k = resolve_clusters(ctx.get('clusters', 'auto'), n)
        labels, _ = kmeans(feats, k, seed=seed, iters=int(ctx.get('kmeans_iters', 50)),
                           progress=ctx.get('progress', False))
    k = max(int(np.max(labels)) + 1, ctx['clusters'] if isinstance(ctx.get('clusters'), int) else 0)
    sizes = np.bincount(labels, minlength=k)
    quotas = cluster_quotas(sizes, n)
    score = (complexity_weight * np.asarray(c) + uncertainty_weight * np.asarray(u)) / temperature
    picked = []
    for j in range(k):
        if quotas[j] == 0:
            continue
        idx = np.flatnonzero(labels == j)
        sub = np.random.default_rng([seed, 2, j])
        picked.append(idx[gumbel_topk(score[idx], int(quotas[j]), sub)])
    sel = np.sort(np.concatenate(picked))
    ctx['quotas'] = quotas
    return sel, labels


@SELECTION.register('random')
def select_random(feats, c, u, n, ctx):
    """Uniform random subset (baseline)."""
    _check_budget(n, feats.shape[0])
    rng = np.random.default_rng([int(ctx.get('seed', 0)), 3])
    return np.sort(rng.choice(feats.shape[0], n, replace=False)), None


@SELECTION.register('top_complexity')
def select_top_complexity(feats, c, u, n, ctx):
    """The n most complex items (baseline; it trained worse than random in our measurements, docs/method.md)."""
    _check_budget(n, feats.shape[0])
    return np.sort(np.argsort(-np.asarray(c), kind='stable')[:n]), None


def _farthest_points(x, m, rng, chunk=65536):
    """k-center greedy on the rows of x: m row positions, the first the row closest to the
    mean, then repeatedly the row farthest from all chosen ones (ties broken by ``rng``).
    One running (N,) minimum distance, updated in chunks: O(N m D) time, O(N) memory."""
    total = x.shape[0]
    mean = np.asarray(x.mean(0), np.float32)[None]
    d0 = np.concatenate([_sq_dists(np.asarray(x[s:s + chunk], np.float32), mean)[:, 0]
                         for s in range(0, total, chunk)])
    first = int(np.flatnonzero(d0 == d0.min())[rng.integers((d0 == d0.min()).sum())])
    picked = [first]
    dmin = np.full(total, np.inf)
    for _ in range(m - 1):
        cen = np.asarray(x[picked[-1]], np.float32)[None]
        for s in range(0, total, chunk):
            d = _sq_dists(np.asarray(x[s:s + chunk], np.float32), cen)[:, 0]
            dmin[s:s + chunk] = np.minimum(dmin[s:s + chunk], d)
        dmin[picked] = -1.0
        far = np.flatnonzero(dmin == dmin.max())
        picked.append(int(far[rng.integers(len(far))]))
    return np.asarray(picked, np.int64)


@SELECTION.register('kcenter')
def select_kcenter(feats, c, u, n, ctx, chunk=65536):
    """Coverage: k-center greedy (farthest-point) on the L2-normalised features.

    Starts from the item closest to the feature mean, then repeatedly adds the item farthest
    from everything chosen so far, so the subset minimises (2-approximately) the largest
    distance of any source item to its nearest selected item. O(N n D) time, O(N) memory
    (rows are processed ``chunk`` at a time). Deterministic; ``seed`` only breaks exact ties.
    """
    _check_budget(n, feats.shape[0])
    return np.sort(_farthest_points(feats, n, np.random.default_rng([int(ctx.get('seed', 0)), 4]), chunk)), None


def _draw(path, v):
    return choice(path, v, ('systematic', 'independent'))


def _quota(path, v):
    return choice(path, v, ('weight', 'count'))


def _taps(path, v):
    v = integer(path, v, lo=1)
    if v % 2 == 0:
        raise OptionError(f'{path} must be an odd integer (the proxy filter is centred on its pixel); got {v}.')
    return v


# the keys `importance` and `systematic` share (checked when the options are read, before any work)
_TILT_CHECKS = {'power': lambda path, v: number(path, v, lo=0),
                'trim': lambda path, v: number(path, v, lo=0, hi=0.5),
                'taps': _taps,
                'quota': _quota}


def systematic_pps(weights, n, rng):
    """n distinct positions, inclusion probability ~ weight (capped at 1), by systematic sampling:
    one uniform offset, then a step of W / n along the cumulative weights, in the given order.
    Along an order that groups similar units, every group gets its expected share (give or take
    one): a stratified draw with far less variance than n independent draws. A unit heavier than
    the step is taken once and the rest of the budget re-spread over the others."""
    w = np.asarray(weights, np.float64).copy()
    total = len(w)
    sure = np.zeros(total, bool)
    while True:  # certainty units: weight >= W / (n - already sure)
        left = n - int(sure.sum())
        free = ~sure
        if left <= 0:
            break
        big = free & (w * left >= w[free].sum())
        if not big.any():
            break
        sure |= big
    left = n - int(sure.sum())
    out = np.flatnonzero(sure)[:n]
    if left > 0:
        idx = np.flatnonzero(~sure)
        cum = np.cumsum(w[idx])
        step = cum[-1] / left
        points = (rng.uniform(0, step) + step * np.arange(left))
        pos = np.minimum(np.searchsorted(cum, points, side='right'), len(idx) - 1)
        out = np.concatenate([out, idx[pos]])
    return out


@SELECTION.register('importance', checks={**_TILT_CHECKS, 'draw': _draw,
                                           'candidates': lambda path, v: number(path, v, lo=0)})
def select_importance(feats, c, u, n, ctx, power=1.0, trim=0.0, taps=7, draw='systematic', candidates=0.0,
                      quota='count'):
    """Importance sampling by proxy difficulty: n units drawn without replacement with
    p_i ~ d_i ** power, d_i the RMS residual of the pool's best linear restorer on unit i
    (distill/difficulty.py). Random crops tilted towards what the task finds hard: coverage of
    a random draw, more of the units where the test error lives. The default (``draw:
    systematic``, ``quota: count``) keeps each k-means stratum's share of units and tilts only
    inside it, which kept the tilt from loading the budget onto one kind of content. ``trim``
    leaves out that share of the hardest units first (outliers), never so many that fewer than
    n remain. Varies with ``seed`` (each seed a different subset)."""
    total = feats.shape[0]
    _check_budget(n, total)
    get = ctx.get('difficulty')
    if get is None:
        raise OptionError('selection.type importance needs the proxy difficulty of each unit, which the '
                          'distiller computes; it cannot run on features alone.')
    d = np.asarray(get(int(taps)), np.float64)
    if d.shape != (total,) or not np.isfinite(d).all():
        raise RuntimeError(f'proxy difficulty: expected {total} finite values, got shape {d.shape}.')
    ctx['difficulty_values'] = d
    pool = np.arange(total)
    if trim > 0:
        keep = max(n, total - int(math.floor(trim * total)))
        pool = np.argsort(d, kind='stable')[:keep]
    score = float(power) * np.log(np.maximum(d[pool], 1e-6))
    rng = np.random.default_rng([int(ctx.get('seed', 0)), 5])
    if candidates and candidates > 1 and n < len(pool):
        # coverage of a typical draw: ceil(candidates * n) units drawn as above, then k-center on their
        # features picks n of them (spread out, but never the pool's rare extremes a full k-center chases)
        m = min(len(pool), int(math.ceil(candidates * n)))
        cand = pool[gumbel_topk(score, m, rng)]
        far = _farthest_points(np.asarray(feats[np.sort(cand)], np.float32), n, rng)
        return np.sort(np.sort(cand)[far]), None
    if draw == 'systematic':  # along (k-means stratum, difficulty): every stratum and difficulty band its share
        labels = ctx.get('labels')
        lab = np.zeros(total, np.int64) if labels is None else np.asarray(labels, np.int64)
        order = np.lexsort((rng.random(len(pool)), d[pool], lab[pool]))  # equal difficulties: seeded order
        w = np.exp(score[order] - score.max())
        if quota == 'count':  # each stratum keeps its share of units; the tilt acts inside it only
            lo = lab[pool][order]
            size = np.bincount(lo).astype(np.float64)
            mass = np.bincount(lo, weights=w)
            w = w * (size / np.maximum(mass, 1e-300))[lo]
        picked = pool[order][systematic_pps(w, n, rng)]
        return np.sort(picked), None
    return np.sort(pool[gumbel_topk(score, n, rng)]), None


@SELECTION.register('systematic', checks=_TILT_CHECKS)
def select_systematic(feats, c, u, n, ctx, power=0.0, trim=0.0, taps=7, quota='weight'):
    """Stratified random units: the systematic draw of ``importance`` with no tilt.
    Every unit has the inclusion probability of a random draw (n / N), so the subset is random
    crops in expectation; but the draw walks the units ordered by k-means stratum and, inside a
    stratum, by proxy difficulty, so every stratum and every difficulty band gets its share on
    every seed: no seed over-samples the common flat patches or misses a kind of content.
    ``power`` > 0 tilts it towards difficulty (``importance`` with ``quota: weight``)."""
    return select_importance(feats, c, u, n, ctx, power=power, trim=trim, taps=taps, draw='systematic',
                             quota=quota)


def _gauss(x, c, sigma):
    """Gaussian kernel matrix (B, K) between rows of x and c."""
    return np.exp(-_sq_dists(np.asarray(x, np.float32), np.asarray(c, np.float32)) / (2.0 * sigma * sigma))


def _bandwidth(feats, bandwidth, ctx):
    """The Gaussian kernel sigma of ``herding`` / ``facility``: ``bandwidth``, or 0 = half the
    median pairwise distance (median heuristic on a seeded sample); recorded in ``ctx``."""
    from tripled_basicsr.utils.distribution import median_bandwidth
    sigma = float(bandwidth) or 0.5 * median_bandwidth(feats, seed=int(ctx.get('seed', 0)))
    ctx['bandwidth'] = sigma
    return sigma


_KERNEL_CHECKS = {'bandwidth': lambda path, v: number(path, v, lo=0)}


def kernel_density(x, sigma, rng, exact_max=32768, rff_dim=2048, chunk=4096):
    """p(x_i) = mean_j exp(-|x_i - x_j|^2 / (2 sigma^2)) for every row: exact (chunked,
    O(N^2 D)) up to ``exact_max`` rows, else random Fourier features (O(N rff_dim D))."""
    n = x.shape[0]
    p = np.empty(n, np.float64)
    if n <= exact_max:
        xa = np.asarray(x, np.float32)
        for s in range(0, n, chunk):
            p[s:s + chunk] = _gauss(xa[s:s + chunk], xa, sigma).mean(1)
        return p
    w = rng.normal(size=(x.shape[1], rff_dim)).astype(np.float32) / np.float32(sigma)
    b = rng.uniform(0, 2 * np.pi, rff_dim).astype(np.float32)

    def phi(s):
        return np.cos(np.asarray(x[s:s + chunk], np.float32) @ w + b) * np.float32(math.sqrt(2.0 / rff_dim))

    mu = sum(phi(s).sum(0, dtype=np.float64) for s in range(0, n, chunk)) / n
    for s in range(0, n, chunk):
        p[s:s + chunk] = phi(s) @ mu
    return p


def _herd(x, m, sigma, rng, chunk=65536):
    """Greedy kernel herding of m rows of x: each step adds the row that brings the subset's
    kernel mean closest (in MMD) to that of all rows. score_t(i) = (t+1) p(i) - sum_{s in S}
    k(x_s, x_i), updated by one kernel row per step: O(N m D) time, O(N) memory."""
    total = x.shape[0]
    p = kernel_density(x, sigma, rng)
    acc = np.zeros(total, np.float64)  # sum over chosen s of k(x_s, x_i)
    taken = np.zeros(total, bool)
    picked = []
    for t in range(m):
        score = (t + 1) * p - acc
        score[taken] = -np.inf
        best = np.flatnonzero(score == score.max())
        i = int(best[rng.integers(len(best))])
        picked.append(i)
        taken[i] = True
        for s in range(0, total, chunk):
            acc[s:s + chunk] += _gauss(x[s:s + chunk], x[i:i + 1], sigma)[:, 0]
    return np.asarray(picked, np.int64)


@SELECTION.register('herding', checks=_KERNEL_CHECKS)
def select_herding(feats, c, u, n, ctx, bandwidth=0.0):
    """Distribution matching: greedy kernel herding (MMD minimisation) on the L2-normalised
    features with a Gaussian kernel. The subset's kernel mean embedding is pulled towards
    the full set's, so dense regions get proportionally more items and no region is left
    out: a low-discrepancy version of a random draw. ``bandwidth``: the kernel sigma in
    feature units; 0 = half the median pairwise distance (median heuristic). Deterministic;
    ``seed`` picks the bandwidth sample and breaks exact ties.
    """
    _check_budget(n, feats.shape[0])
    sigma = _bandwidth(feats, bandwidth, ctx)
    return np.sort(_herd(feats, n, sigma, np.random.default_rng([int(ctx.get('seed', 0)), 5]))), None


def _facility_location(x, m, sigma, rng, clients=16384, chunk=4096, batch=64):
    """Lazy greedy facility location: m rows of x maximising sum over clients c of
    max_{s in S} k(c, x_s) (Gaussian kernel), clients = all rows or a seeded sample of
    ``clients`` of them. Gains only shrink as S grows (submodular), so a stale gain is an upper
    bound: refresh the ``batch`` best bounds at once (O(batch C D)) and take the best refreshed
    gain if it beats every bound left, which makes it the true greedy choice. The first gains
    cost O(N C D); memory O(N + C)."""
    import heapq
    n = x.shape[0]
    cl = np.asarray(x if n <= clients else x[np.sort(rng.choice(n, clients, replace=False))], np.float32)
    best = np.zeros(cl.shape[0], np.float64)
    gains = np.concatenate([_gauss(x[s:s + chunk], cl, sigma).sum(1) for s in range(0, n, chunk)])
    heap = [(-float(g), i) for i, g in enumerate(gains)]
    heapq.heapify(heap)
    picked = []
    while len(picked) < m:
        idx = [heapq.heappop(heap)[1] for _ in range(min(batch, len(heap)))]
        k = _gauss(x[idx], cl, sigma)
        g = np.maximum(k - best[None], 0.0).sum(1)
        j = int(np.argmax(g))  # first of equal gains: the lower heap position, deterministic
        take = not heap or g[j] >= -heap[0][0]
        if take:
            picked.append(idx[j])
            best = np.maximum(best, k[j])
        for t, i in enumerate(idx):
            if not (take and t == j):
                heapq.heappush(heap, (-float(g[t]), i))
    return np.asarray(picked, np.int64)


@SELECTION.register('facility', checks={**_KERNEL_CHECKS, 'clients': lambda path, v: integer(path, v, lo=1)})
def select_facility(feats, c, u, n, ctx, bandwidth=0.0, clients=16384):
    """Representative coverage: greedy facility location on the L2-normalised features with a
    Gaussian kernel. Each pick is the unit that most raises the summed similarity of every
    source unit (or of ``clients`` sampled ones) to its nearest pick: dense regions are
    covered first, then sparser ones, no unit counts twice. Between ``kcenter`` (every
    region, outliers first) and ``herding`` (the density, duplicates allowed). ``bandwidth``:
    kernel sigma, 0 = half the median pairwise distance. Deterministic per ``seed``.
    """
    _check_budget(n, feats.shape[0])
    sigma = _bandwidth(feats, bandwidth, ctx)
    rng = np.random.default_rng([int(ctx.get('seed', 0)), 6])
    return np.sort(_facility_location(feats, n, sigma, rng, int(clients))), None


def curriculum_stages(c_subset, easy_quantile=0.5):
    """Stage 1 (easy) for subset items with c below the ``easy_quantile`` quantile of the
    subset's complexities, stage 2 otherwise. At least one item is stage 1."""
    c_subset = np.asarray(c_subset, np.float64)
    if not 0 < easy_quantile <= 1:
        raise ValueError(f'curriculum.easy_quantile must be in (0, 1]; got {easy_quantile}.')
    if easy_quantile >= 1:
        return np.ones(len(c_subset), np.int64)
    thr = np.quantile(c_subset, easy_quantile)
    stage = np.where(c_subset < thr, 1, 2).astype(np.int64)
    if not (stage == 1).any():
        stage[np.argmin(c_subset)] = 1
    return stage
