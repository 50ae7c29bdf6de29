"""The selection strategy picks the subset; the curriculum splits it in two stages."""
from dataclasses import dataclass

import numpy as np

from tripled_basicsr.distill.options import is_multi


@dataclass
class Selection:
    picked: object  # (n,) positions into Scores.valid, in source order
    stages: object  # (n,) curriculum stage (1 easy, 2 the rest) of each picked unit


def _select_pool(sel, feats, c, u, n, ctx):
    from tripled_basicsr.distill.registry import SELECTION
    picked, _ = SELECTION.call(sel, feats, c, u, n, ctx)
    picked = np.asarray(picked, np.int64)
    if len(picked) != n or len(np.unique(picked)) != n:
        raise RuntimeError(f'selection {sel["type"]!r} returned {len(picked)} items ({len(np.unique(picked))} '
                           f'unique), expected {n}.')
    return picked


def select(run, sc):
    """The selection strategy picks ``sc.n`` positions; the curriculum splits them in two stages.
    Several tasks: each task's quota is picked inside the task and its stages use the task's
    own complexities (easy_quantile inside each task). -> Selection."""
    from tripled_basicsr.distill.selection import curriculum_stages
    sel, q = run.opt['selection'], run.opt['curriculum']['easy_quantile']
    if not is_multi(run.opt):
        picked = _select_pool(sel, sc.feats, sc.c, sc.u, sc.n, sc.ctx)
        return Selection(picked=picked, stages=curriculum_stages(sc.c[picked], q))
    picked, stages = [], []
    for t, rows in sc.task_rows.items():
        if sc.task_n[t] == 0:
            continue
        local = _select_pool(sel, sc.feats[rows], sc.c[rows], sc.u[rows], sc.task_n[t], sc.ctx['tasks'][t])
        picked.append(rows[local])
        stages.append(curriculum_stages(sc.c[rows[local]], q))
    picked, stages = np.concatenate(picked), np.concatenate(stages)
    order = np.argsort(picked, kind='stable')  # subset in source order (tasks in the order of `sources:`)
    return Selection(picked=picked[order], stages=stages[order])
