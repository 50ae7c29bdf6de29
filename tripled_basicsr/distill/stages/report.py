"""MMD of the subset to the source, next to random and top-complexity subsets of the same size."""
from dataclasses import dataclass, field

import numpy as np

from tripled_basicsr.distill.options import is_multi


@dataclass
class MmdReport:
    mmd: dict  # summary.mmd
    tasks: dict = field(default_factory=dict)  # several tasks: summary.tasks


def _mmd_report(feats, picked, c, ropt, seed, tag=()):
    """MMD of ``feats[picked]`` to (a bank of) ``feats``, next to random and top-complexity
    subsets of the same size; ``tag`` extends the random streams (one per task)."""
    from tripled_basicsr.utils.distribution import median_bandwidth, mmd_numpy
    n_pool, n = len(feats), len(picked)
    rng = np.random.default_rng([seed, 7, *tag])
    m = ropt['mmd_samples']
    bank_idx = np.sort(rng.choice(n_pool, min(m, n_pool), replace=False))
    bank = feats[bank_idx]
    bw = median_bandwidth(bank)

    def mmd_of(idx):
        idx = np.asarray(idx)
        if len(idx) > m:
            idx = np.sort(np.random.default_rng([seed, 8, *tag]).choice(idx, m, replace=False))
        return mmd_numpy(feats[idx], bank, bw)

    rand = [mmd_of(np.random.default_rng([seed, 100 + r, *tag]).choice(n_pool, n, replace=False))
            for r in range(ropt['random_repeats'])]
    return {'subset': mmd_of(picked), 'random_mean': float(np.mean(rand)), 'random_std': float(np.std(rand)),
            'random_repeats': len(rand), 'top_complexity': mmd_of(np.argsort(-c, kind='stable')[:n]),
            'bandwidth': bw, 'bank_size': int(len(bank_idx))}


def report(run, sc, sel):
    """MMD of the subset to the source, next to random and top-complexity subsets of the same size.
    Several tasks: also per task (the task's picks vs random picks of the same size from the task).
    -> MmdReport."""
    ropt, seed = run.opt['report'], run.opt['selection']['seed']
    out = MmdReport(mmd=_mmd_report(sc.feats, sel.picked, sc.c, ropt, seed))
    if not is_multi(run.opt):
        return out
    from tripled_basicsr.distill.tasks import quota_shares
    sizes = {t: len(rows) for t, rows in sc.task_rows.items()}
    shares = dict(zip(sizes, quota_shares(run.opt['selection']['task_quota'], sizes).tolist()))
    picked_set = np.zeros(len(sc.valid), bool)
    picked_set[sel.picked] = True
    for j, (t, rows) in enumerate(sc.task_rows.items()):
        local = np.flatnonzero(picked_set[rows])
        mmd = _mmd_report(sc.feats[rows], local, sc.c[rows], ropt, seed, (j,)) if len(local) else None
        out.tasks[t] = {'N': int(len(rows)), 'n': int(len(local)), 'quota': len(local) / len(sel.picked),
                        'share': shares[t], 'mmd': mmd}
    return out
