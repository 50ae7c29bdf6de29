"""Usable rows, pair features, k-means strata, complexity c and uncertainty u in [0, 1]."""
import time
from dataclasses import dataclass, field

import numpy as np

from tripled_basicsr.distill.options import is_multi
from tripled_basicsr.distill.stages import timed
from tripled_basicsr.distill.stages.features import task_budget, unit_budget


@dataclass
class Scores:
    valid: object  # (N_usable,) source indices with features
    unusable: list  # units whose features failed (dicts, as FeatureSetup.skipped)
    n: int  # subset size
    feats: object  # (N_usable, D) float32, L2-normalised
    stats: dict  # {'entropy' | 'gradient' | 'token_var': (N_usable,)}
    k: int = 0  # strata over all tasks
    labels: object = None  # (N_usable,) stratum ids (-1: a task of share 0)
    c: object = None  # (N_usable,) complexity in [0, 1]
    u: object = None  # (N_usable,) uncertainty in [0, 1]
    ctx: dict = field(default_factory=dict)  # strategy context (several tasks: {'tasks': {task: ctx}})
    task_rows: dict = field(default_factory=dict)  # several tasks: {task: positions into valid}
    task_n: dict = field(default_factory=dict)  # several tasks: {task: units to select}


def _strata(opt, feats, n, progress, clusters=None):
    """k-means strata of one pool of items, k from selection.clusters and the budget n. -> (k, labels)."""
    from tripled_basicsr.distill.selection import kmeans, resolve_clusters
    sel = opt['selection']
    k = resolve_clusters(sel['clusters'] if clusters is None else clusters, n)
    labels, _ = kmeans(feats, k, seed=sel['seed'], iters=sel['kmeans_iters'], progress=progress)
    return k, labels


def _scores(opt, feats, stats, k, labels, progress, device, difficulty=None):
    """Complexity c and uncertainty u in [0, 1] of one pool of items. -> (c, u, ctx)."""
    from tripled_basicsr.distill.registry import COMPLEXITY, UNCERTAINTY
    sel = opt['selection']
    ctx = {'seed': sel['seed'], 'labels': labels, 'clusters': k, 'kmeans_iters': sel['kmeans_iters'],
           'progress': progress, 'device': str(device), 'difficulty': difficulty}
    out = []
    for name, reg in (('complexity', COMPLEXITY), ('uncertainty', UNCERTAINTY)):
        arr = np.asarray(reg.call(opt[name], feats, stats, ctx), np.float64)
        if arr.shape != (len(feats),) or not np.isfinite(arr).all():
            raise RuntimeError(f'{name} strategy {opt[name]["type"]!r} returned an invalid array '
                               f'(shape {arr.shape}, finite: {np.isfinite(arr).all()}).')
        out.append(np.clip(arr, 0, 1))
    return out[0], out[1], ctx


def _difficulty(run, source, rows):
    """A callable taps -> proxy difficulty of the source units ``rows`` (distill/difficulty.py),
    computed (timed as 'difficulty') only when a strategy asks for it, in the feature stage's
    decode workers (features.num_workers); under torchrun taken from ``run.difficulty``, which
    all ranks computed together, when it was computed for the same taps."""
    def get(taps):
        pre = run.difficulty
        if pre is not None and pre['taps'] == int(taps):
            full = np.full(len(source), np.nan)
            full[pre['rows']] = pre['values']
            return full[rows]
        from tripled_basicsr.distill.difficulty import unit_difficulty
        t = time.time()
        d = unit_difficulty(source, rows, taps=taps, seed=run.opt['selection']['seed'], progress=run.progress,
                            workers=int(run.opt['features']['num_workers']))
        run.timings['difficulty'] = run.timings.get('difficulty', 0.0) + time.time() - t
        return d
    return get


DIFFICULTY_STRATEGIES = ('importance', 'systematic')


def spread_difficulty(run, fs):
    """Under torchrun, before rank 0 goes on alone: every rank scores a block of the images for
    the proxy difficulty the selection will ask for (the default ``importance`` and
    ``systematic``), so that pass scales with the ranks like the feature stage. Sets
    ``run.difficulty``; nothing on one process (the selection computes it when asked)."""
    sel = run.opt['selection']
    if run.world <= 1 or sel['type'] not in DIFFICULTY_STRATEGIES:
        return
    from tripled_basicsr.distill.difficulty import DEFAULT_TAPS, unit_difficulty
    from tripled_basicsr.distill.dist import on_rank0
    valid = on_rank0(lambda: _usable(fs.store.open('r'), fs.source)[0], run.rank, run.world, share=True)
    taps = int(sel.get('taps', DEFAULT_TAPS))
    t = time.time()
    values = unit_difficulty(fs.source, valid, taps=taps, seed=sel['seed'], progress=run.progress and run.rank == 0,
                             workers=int(run.opt['features']['num_workers']), rank=run.rank, world=run.world)
    run.difficulty = {'taps': taps, 'rows': valid, 'values': values}
    run.timings['difficulty'] = time.time() - t


def _usable(store, source):
    """Rows with features, and the failed ones as skipped entries. -> (valid, unusable)."""
    done = np.asarray(store.done)
    valid = np.flatnonzero(done == 1)
    errors = store.errors()
    unusable = [{'key': source.keys[i], 'gt_path': source.source_path(i, 'gt'),
                 'lq_path': source.source_path(i, 'lq'), 'reason': errors.get(i, '')}
                for i in np.flatnonzero(done == 2)]
    if len(valid) == 0:
        raise RuntimeError('No usable pairs: every pair was skipped (see errors above / work dir errors.json).')
    return valid, unusable


def _pair_features(opt, fs, store, valid):
    """(N_usable, D) pair features; hand-crafted statistics (different units) are z-scored first."""
    from tripled_basicsr.distill import handcrafted
    if opt['features']['backbone'] == handcrafted.NAME:
        from tripled_basicsr.distill.handcrafted import standardized_features
        return standardized_features(store.feat, len(fs.kinds), fs.views_per_kind)[valid]
    from tripled_basicsr.distill.features import pair_features
    return pair_features(store.feat, len(fs.kinds), fs.views_per_kind)[valid]


def _task_scores(run, fs, device, sc):
    """Several tasks: strata and scores inside each task, filled into ``sc``."""
    opt, n_valid = run.opt, len(sc.valid)
    sc.labels = np.full(n_valid, -1, np.int64)
    sc.c, sc.u = np.full(n_valid, 0.5), np.full(n_valid, 0.5)
    sc.k, sc.ctx = 0, {'tasks': {}}
    clusters = opt['selection']['clusters']
    for t, rows in sc.task_rows.items():
        n_t = sc.task_n[t]
        if n_t == 0:  # share 0: the task is listed (and reported) but gives no unit
            continue
        # an integer `clusters` applies per task, at most the task's budget
        k_t = clusters if clusters == 'auto' else min(int(clusters), n_t)
        t0 = time.time()
        k, labels = _strata(opt, sc.feats[rows], n_t, run.progress, k_t)
        t1 = time.time()
        sc.c[rows], sc.u[rows], sc.ctx['tasks'][t] = _scores(opt, sc.feats[rows], {k: v[rows] for k, v in
                                                                                   sc.stats.items()},
                                                             k, labels, run.progress, device,
                                                             _difficulty(run, fs.source, sc.valid[rows]))
        run.timings['kmeans'] += t1 - t0
        run.timings['scoring'] = run.timings.get('scoring', 0.0) + time.time() - t1
        sc.labels[rows] = labels + sc.k
        sc.k += k


def scores(run, fs, device):
    """Usable rows, pair features, k-means strata, complexity c and uncertainty u in [0, 1]
    of the units in ``fs.store``. -> Scores.

    Several tasks: the units of the subset are split over the tasks first (task_budget), then
    strata and scores are computed inside each task, on its own features: the strata of one
    task do not depend on the others, and c / u are ranks within the task, so the selection
    pressure (temperature) and the curriculum's "easy" mean the same in every task. Cluster
    ids are made unique over tasks (offset by the earlier tasks' clusters).
    """
    opt, store, source = run.opt, fs.store.open('r'), fs.source
    valid, unusable = _usable(store, source)
    n_valid = len(valid)
    n = unit_budget(opt, source, n_valid) if n_valid != len(source) else fs.n_budget
    multi = is_multi(opt)
    task_n, task_rows = {}, {}
    if multi:
        task_n = task_budget(opt, source, n, valid) if n_valid != len(source) else dict(fs.task_budget)
        tix = source.task_index[valid]
        task_rows = {t: np.flatnonzero(tix == j) for j, t in enumerate(source.tasks)}

    with timed(run, 'kmeans'):
        feats = _pair_features(opt, fs, store, valid)
        stats_arr = np.asarray(store.stats, np.float64)[valid]
        stats = {'entropy': stats_arr[:, 0], 'gradient': stats_arr[:, 1], 'token_var': stats_arr[:, 2]}
        sc = Scores(valid=valid, unusable=unusable, n=n, feats=feats, stats=stats, task_rows=task_rows,
                    task_n=task_n)
        if not multi:
            sc.k, sc.labels = _strata(opt, feats, n, run.progress)
    if not multi:
        with timed(run, 'scoring'):
            sc.c, sc.u, sc.ctx = _scores(opt, feats, stats, sc.k, sc.labels, run.progress, device,
                                         _difficulty(run, source, valid))
        return sc
    _task_scores(run, fs, device, sc)
    return sc
