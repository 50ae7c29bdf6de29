"""Task balance of the curriculum sampler (pure maths, numpy only): task labels of a set, the
``task_quota`` option as shares, the systematic placement of a global batch's slots on the
tasks and the within-task draw. ``TripleDCurriculumSampler`` (curriculum_sampler.py) calls
them; its module docstring explains the draw."""
import numpy as np

from tripled_basicsr.options import task_shares

QUOTA_KEY = 'datasets.train.sampler.task_quota'


def task_labels(dataset):
    """``(task_names, task_index (N,) int64)`` when every sample of ``dataset`` has a task label,
    else None (single-task or packed sets, or partly labelled ones)."""
    task = getattr(dataset, 'task', None)
    if task is None or len(task) != len(dataset) or any(not t for t in task):
        return None
    names = sorted(set(str(t) for t in task))
    lookup = {t: i for i, t in enumerate(names)}
    return names, np.array([lookup[str(t)] for t in task], dtype=np.int64)


def resolve_task_quota(option, task_names, counts, recorded=None):
    """The ``task_quota`` option -> ``(shares (T,) aligned with task_names, summing to 1, how)``.

    ``option``: None (the quota the distiller recorded, ``recorded`` = {task: share}; equal
    when there is none or it does not name exactly these tasks), ``'equal'``,
    ``'proportional'`` (to ``counts``, the samples per task in the set) or {task: share}
    naming every task, shares >= 0 summing to 1 (0 leaves a task out).
    """
    names = list(task_names)
    t = len(names)
    counts = np.asarray(counts, dtype=np.float64)
    if option is None:
        if recorded and set(recorded) == set(names):
            q = np.array([float(recorded[n]) for n in names])
            if np.isfinite(q).all() and (q >= 0).all() and q.sum() > 0:
                return q / q.sum(), 'recorded by the distiller'
        why = 'the set records no quota' if not recorded else 'the recorded quota does not name exactly these tasks'
        return np.full(t, 1.0 / t), f'equal ({why})'
    if option == 'equal':
        return np.full(t, 1.0 / t), 'equal'
    if option == 'proportional':
        return counts / counts.sum(), 'proportional to the samples per task'
    if not isinstance(option, dict):
        raise ValueError(f'{QUOTA_KEY} must be ~ (the distiller\'s quota), equal, proportional or a mapping '
                         f'{{task: share}}; got {option!r}.')
    shares = task_shares(QUOTA_KEY, option, names)
    q = np.array([shares[str(n)] for n in names])
    return q / q.sum(), 'as given'


def systematic_task_slots(quota, g, u):
    """Task index (G,) of each slot of a global batch, ascending: systematic sampling of the
    quota with offset ``u`` in [0, 1). Task ``t`` gets ``floor(G q_t)`` or ``ceil(G q_t)``
    slots, ``G q_t`` on average over ``u``; a task with share 0 gets none."""
    cum = np.cumsum(np.asarray(quota, dtype=np.float64))
    cum[-1] = 1.0  # rounding: every position lands on a task
    pos = (float(u) + np.arange(int(g))) / int(g)
    return np.searchsorted(cum, pos, side='right').astype(np.int64)


def within_task_probabilities(p1, p2, beta, task_index, n_tasks):
    """``(1 - beta) * p1|t + beta * p2|t`` per sample, each part normalised inside its task
    (``p1``: non-negative stage-1 weights, zero outside the stage-1 pools; ``p2``: stage-2
    probabilities). Every task's block sums to 1: a task whose part is all zero (no stage-1
    sample, or weights that underflow) is uniform over its samples in that part."""
    size = np.bincount(task_index, minlength=n_tasks).astype(np.float64)

    def per_task(p):
        tot = np.bincount(task_index, weights=p, minlength=n_tasks)
        empty = (tot <= 0)[task_index]
        return np.where(empty, 1.0 / np.maximum(size, 1)[task_index], p / np.where(tot > 0, tot, 1.0)[task_index])
    q = np.zeros(len(task_index))
    if beta < 1:
        q += (1 - beta) * per_task(np.asarray(p1, dtype=np.float64))
    if beta > 0:
        q += beta * per_task(np.asarray(p2, dtype=np.float64))
    return q


def draw_within_tasks(q, task_index, slots, rng):
    """Fill each slot with a sample of the slot's task: Gumbel top-k over the within-task
    probabilities ``q`` (without replacement while the task has enough samples with q > 0,
    with replacement beyond), then shuffle the slots. Returns (G,) indices."""
    q = np.asarray(q, dtype=np.float64)
    keys = np.full(len(q), -np.inf)
    gumbel = rng.gumbel(size=len(q))
    pos = q > 0
    keys[pos] = np.log(q[pos]) + gumbel[pos]
    out = np.empty(len(slots), dtype=np.int64)
    for t in np.unique(slots):
        where = np.flatnonzero(slots == t)
        members = np.flatnonzero((task_index == t) & pos)
        c = len(where)
        if c <= len(members):
            top = members[np.argsort(-keys[members], kind='stable')[:c]]
        else:
            top = rng.choice(members, size=c, replace=True, p=q[members] / q[members].sum())
        out[where] = top
    return out[rng.permutation(len(out))]


def same_quota(a, b):
    """Two recorded quotas ({task: share} or None) are the same (shares within 1e-9)."""
    if a is None or b is None:
        return a is b
    return set(a) == set(b) and all(abs(float(a[k]) - float(b[k])) < 1e-9 for k in a)
