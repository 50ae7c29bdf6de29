"""Several tasks in one distillation (``sources:``; docs/distill.md, "Several tasks (all-in-one)").

An all-in-one user has one paired set per degradation (rain, haze, noise, ...), of very
different sizes. The distiller lists them as one ``MultiSource`` (unit keys prefixed
``<task>_``, ``task_of(i)``), splits the subset size over the tasks by
``selection.task_quota`` (``task_counts``, largest remainder) and then runs the usual
selection inside each task (stages/scores.py, stages/select.py).

The quota maths are pure functions (``quota_shares``, ``allocate``, ``task_counts``) so they
are tested on numbers; every error names the option and says what to do.
"""
import re

import numpy as np

from tripled_basicsr.options import OptionError, task_shares
from tripled_basicsr.utils.tasknames import MEAN_NAME

# a task name becomes a key prefix (LMDB keys: ASCII, no dot, no path separator) and a label
# in logs and TensorBoard tags
TASK_NAME = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$')
RESERVED = (MEAN_NAME,)  # the per-task validation summary's name of the mean over tasks
QUOTA_WORDS = ('proportional', 'equal')
SUM_TOLERANCE = 1e-6


def check_task_name(path, name):
    if not isinstance(name, str) or not name:
        raise OptionError(f'{path} is required: a short name of the task (e.g. rain, haze, noise); got {name!r}.')
    if not TASK_NAME.match(name):
        raise OptionError(f'{path} {name!r} may only hold letters, digits, "_" and "-" (it prefixes every key of '
                          f'the task, at most 64 characters); rename the task.')
    if name.lower() in RESERVED:
        raise OptionError(f'{path} {name!r} is reserved (the per-task validation summary calls the mean over '
                          f'tasks "{name}"); rename the task.')
    return name


def check_task_quota(value, tasks):
    """``selection.task_quota`` -> 'proportional' | 'equal' | {task: share} (float), checked
    against the task names: every task named, shares >= 0 summing to 1 (tolerance 1e-6)."""
    path = 'selection.task_quota'
    if isinstance(value, str):
        if value not in QUOTA_WORDS:
            raise OptionError(f'{path} must be proportional, equal or a mapping {{task: share}}; got {value!r}.')
        return value
    if not isinstance(value, dict) or not value:
        raise OptionError(f'{path} must be proportional, equal or a mapping {{task: share}} naming every task; '
                          f'got {value!r}.')
    return task_shares(path, value, tasks, SUM_TOLERANCE)


def quota_shares(task_quota, sizes):
    """Share of the subset of each task: ``proportional`` (to its units), ``equal`` or the
    dict's values, in the order of ``sizes`` (a {task: units} dict). -> float64 array."""
    tasks = list(sizes)
    n = np.asarray([sizes[t] for t in tasks], np.float64)
    if task_quota == 'proportional':
        return n / n.sum()
    if task_quota == 'equal':
        return np.full(len(tasks), 1.0 / len(tasks))
    return np.asarray([float(task_quota[t]) for t in tasks], np.float64)


def allocate(n, shares):
    """Split ``n`` units over tasks by ``shares`` (largest remainder).

    Every task with a share > 0 gets at least one unit (taken from the task most above its share),
    a task with share 0 gets none, and the counts sum to ``n``. Ties of the remainder go to
    the larger share, then the earlier task. Raises ValueError when ``n`` is smaller than the
    number of tasks with a share > 0. -> int64 array.
    """
    shares = np.asarray(shares, np.float64)
    if shares.ndim != 1 or len(shares) == 0 or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(f'shares must be >= 0 with a positive sum; got {shares.tolist()}.')
    shares = shares / shares.sum()
    positive = shares > 0
    if n < int(positive.sum()):
        raise ValueError(f'cannot give each of {int(positive.sum())} tasks at least one of {n} units.')
    exact = shares * n
    q = np.floor(exact + 1e-9).astype(np.int64)
    rem = exact - q
    order = sorted(range(len(shares)), key=lambda j: (-rem[j], -shares[j], j))
    for j in order[:n - int(q.sum())]:
        q[j] += 1
    for j in np.flatnonzero(positive & (q == 0)):  # a positive share never ends with no unit: the
        surplus = np.where(q > 1, q - exact, -np.inf)  # task most above its exact share gives one
        donor = int(np.argmax(surplus))
        q[donor] -= 1
        q[j] += 1
    return q


def task_counts(n, task_quota, sizes, unit='pairs', what='selection.ratio'):
    """Per-task subset sizes for a total of ``n`` units -> {task: count}, summing to ``n``.

    ``sizes``: {task: usable units}. Errors (OptionError, naming the option): a task whose
    share rounds to 0 units, a task with fewer units than its quota asks for.
    """
    tasks = list(sizes)
    shares = quota_shares(task_quota, sizes)
    quota_opt = 'selection.task_quota' + ('' if isinstance(task_quota, str) else '.{}')
    for t, s in zip(tasks, shares):
        if s > 0 and s * n < 0.5:
            raise OptionError(
                f'task {t}: its share {s:.4g} of the {n} {unit} of the subset is {s * n:.2g} {unit}, which rounds '
                f'to 0: raise {what} (or selection.num), or give task {t} a larger share '
                f'({quota_opt.format(t)}).')
    counts = allocate(n, shares)
    for t, c in zip(tasks, counts):
        if c > sizes[t]:
            raise OptionError(f'task {t} has {sizes[t]} {unit} but its quota asks for {int(c)}: lower {what} (or '
                              f'selection.num) or give it a smaller share (selection.task_quota).')
    return {t: int(c) for t, c in zip(tasks, counts)}


class MultiSource:
    """Several paired sources (PairedSource or CropSource), one per task, seen as one list of units.

    Unit ``i`` is unit ``i - offsets[t]`` of part ``t`` (parts in the order of ``sources:``);
    its key is ``<task>_<key>``. Same reading interface as PairedSource / CropSource (keys,
    kind, scale, skipped, read_bytes, read, read_pair, source_path, describe, provenance,
    crop and total_pixels for crop units) plus ``task_of(i)``, ``task_index`` and ``tasks``.

    Args:
        parts (list): (task, source, options of the entry, option path 'sources[i]').
    """

    def __init__(self, parts):
        self.parts = list(parts)
        self.tasks = [p[0] for p in self.parts]
        srcs = [p[1] for p in self.parts]
        sizes = [len(s) for s in srcs]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.task_index = np.repeat(np.arange(len(srcs)), sizes).astype(np.int64)
        self.keys = [f'{t}_{k}' for t, s in zip(self.tasks, srcs) for k in s.keys]
        seen = {}
        for i, k in enumerate(self.keys):
            if k in seen:
                a, b = self.parts[self.task_index[seen[k]]], self.parts[self.task_index[i]]
                raise OptionError(f'key {k!r} is in two sources ({a[3]}, task {a[0]}, and {b[3]}, task {b[0]}) after '
                                  f'the task prefix; rename a task or a file so every key is unique.')
            seen[k] = i
        self._check_same_pairs()
        self.scale = srcs[0].scale
        self.kind = 'lmdb' if srcs[0].kind == 'lmdb' else 'folder'
        self.crop = int(getattr(srcs[0], 'crop', 0) or 0)
        if self.crop:
            self.total_pixels = int(sum(s.total_pixels for s in srcs))
            self.small_images = [f'{t}_{k}' for t, s in zip(self.tasks, srcs) for k in s.small_images]
        self.skipped = [dict(e, task=t) for t, s in zip(self.tasks, srcs) for e in s.skipped]

    def _check_same_pairs(self):
        """The same (GT, LQ) pair listed by two tasks would count twice (a shared GT folder with
        different LQ folders, e.g. noise at two levels, is fine)."""
        owner = {}
        for t, (task, src, _, path) in enumerate(self.parts):
            base = getattr(src, 'base', src)  # crop units: the whole images they come from
            for j in range(len(base)):
                pair = (base.source_path(j, 'gt'), base.source_path(j, 'lq'))
                if pair in owner and owner[pair][0] != t:
                    other = self.parts[owner[pair][0]]
                    raise OptionError(f'{path} (task {task}) and {other[3]} (task {other[0]}) both list the pair '
                                      f'{pair[0]} / {pair[1]}: a pair belongs to one task. Remove it from one '
                                      f'of them (or point them at different folders).')
                owner[pair] = (t, j)

    def __len__(self):
        return len(self.keys)

    def _loc(self, index):
        t = int(self.task_index[index])
        return self.parts[t][1], int(index) - int(self.offsets[t])

    def task_of(self, index):
        return self.tasks[int(self.task_index[index])]

    def options_of(self, index):
        """The (merged) ``sources[i]`` entry of unit ``index`` and its option path."""
        p = self.parts[int(self.task_index[index])]
        return p[2], p[3]

    def sizes(self, rows=None):
        """{task: number of units} (of ``rows``, unit indices, when given)."""
        idx = self.task_index if rows is None else self.task_index[np.asarray(rows, np.int64)]
        counts = np.bincount(idx, minlength=len(self.tasks))
        return {t: int(c) for t, c in zip(self.tasks, counts)}

    def source_path(self, index, which='gt'):
        src, j = self._loc(index)
        return src.source_path(j, which)

    def read_bytes(self, index, which='gt'):
        src, j = self._loc(index)
        return src.read_bytes(j, which)

    def read(self, index, which='gt', **kw):
        src, j = self._loc(index)
        return src.read(j, which, **kw)

    def read_pair(self, index):
        src, j = self._loc(index)
        return src.read_pair(j)

    def provenance(self, index):
        """Crop units: the image key (task-prefixed), image index and GT box; {} for whole images."""
        src, j = self._loc(index)
        if not hasattr(src, 'provenance'):
            return {}
        d = src.provenance(j)
        d['image_key'] = f'{self.task_of(index)}_{d["image_key"]}'
        return d

    def lmdb_roots(self):
        """(label, root) of every LMDB read (the work dir records their size + mtime)."""
        return [(f'{t}/{w}', getattr(s, f'dataroot_{w}')) for t, s, _, _ in self.parts for w in ('gt', 'lq')]

    def describe(self):
        out = {'kind': 'tasks', 'scale': self.scale, 'num_units': len(self), 'tasks': []}
        for t, s, _, path in self.parts:
            out['tasks'].append({'task': t, 'option': path, **s.describe()})
        return out
