"""TripleDCurriculumSampler: the two-stage, uncertainty-weighted curriculum (sampler maths
and state only; docs/curriculum.md explains it).

BasicSR glue (building it from ``datasets.train.sampler``, the train loader, the link to the
model) is in ``train_loader.py``; models feed losses back through
``tripled_basicsr.models.sampler_feedback.SamplerFeedbackMixin``.

``TripleDCurriculumSampler``, options under ``datasets.train.sampler``
(defaults in :data:`DEFAULTS`, explained in docs/curriculum.md)::

    curriculum: true          # false: no curriculum - uniform draws (times sample_weights, with task_balance
                              # per task); the keys below are then not used. Our recipes set false: the
                              # curriculum lost on the real-data study (benchmarks/RESULTS.md)
    stage2_start: 0.5         # stage-1 iterations: a float <= 1 is a fraction of train.total_iter,
                              # an int an absolute iteration count; 0 = no stage 1
    ramp: 0                   # iterations (or fraction) of linear blend from stage 1 to stage 2
    complexity_weight: 0.5    # a in exp((a*c + b*u~) / tau)
    uncertainty_weight: 1.0   # b
    temperature: 1.0          # tau
    online_uncertainty: true  # blend an EMA of per-sample training loss into u (needs a model that feeds losses back, e.g. TripleDModel)
    ema: 0.9                  # EMA decay of the per-sample loss
    online_mix: 0.5           # u~ = (1 - online_mix) * u_offline + online_mix * rank(EMA loss)
    floor: 0.05               # stage-2 probabilities are mixed with uniform: p >= floor / N
    feedback_delay: auto      # steps between a loss and the draws it affects (auto: loader prefetch depth)
    seed: ~                   # default: manual_seed
    sample_weights: true      # multiply draw probabilities by the distilled set's per-sample weights
                              # (`weight` in tripled_meta.json, written by calibration.mode: weights)
    trace_file: ~             # debugging: append every drawn step as a JSON line (to a file it created)
    task_balance: false       # multi-task sets: draw each batch slot's task by task_quota first, then a
                              # sample of that task by the curriculum probabilities restricted to it
    task_quota: ~             # ~ = the quota the distiller recorded (equal when none) | equal |
                              # proportional (to the set's samples per task) | {task: share, ...}

How drawing works. Training step ``s`` (0-based; iteration ``s + 1``) consumes one global
batch of ``G = batch_size * world_size`` indices. The global batch of step ``s`` is a pure
function of (seed, s, the probabilities for step s): a fresh generator seeded with
``[seed, s]`` draws it (Gumbel top-k, i.e. without replacement inside a step when the pool
is large enough). Every rank computes the same global batch and takes its own slice
``[rank * B:(rank + 1) * B]``. Indices are drawn lazily, step by step, as the DataLoader
asks for them, so the stage is exact (it follows the step being drawn, even when no model
talks to the sampler) and loss feedback reaches the draws after the loader's prefetch
depth. To make runs reproducible under prefetching and across ``--auto_resume``, the
draws of step ``s`` use only the loss feedback of steps ``<= s - 1 - feedback_delay``;
with ``feedback_delay`` at least the prefetch depth that feedback has always arrived.
The saved state (seed, step, EMA, feedback not yet folded into it) therefore reproduces
the same next indices as an uninterrupted run.

Task balance (``task_balance: true``, multi-task sets). The same generator first places
the ``G`` slots of the step on the tasks by systematic sampling of the quota (task ``t``
gets ``floor`` or ``ceil`` of ``G * q_t`` slots, exactly ``G * q_t`` on average), then fills
each task's slots by Gumbel top-k over the within-task distribution
``(1 - beta) * p1|t + beta * p2|t`` (each part normalised inside task ``t``; ``p1`` is the
stage-1 pool of that task, so "easy" means easy for that task), then shuffles the slots so
every rank's slice mixes tasks. A task without stage-1 samples is drawn from all its
samples in stage 1 (logged). The maths is in the pure functions
``resolve_task_quota``, ``systematic_task_slots``, ``within_task_probabilities`` and
``draw_within_tasks`` of task_balance.py; the option checks are in curriculum_options.py.
"""
import hashlib
import math
import os

import numpy as np
import torch
from torch.utils.data.sampler import Sampler

from tripled_basicsr.data.curriculum_options import DEFAULTS, read_options, resolve_iteration, settings  # noqa: F401
from tripled_basicsr.data.sampler_registry import SAMPLER_REGISTRY
from tripled_basicsr.data.sampler_utils import JsonlTrace, all_gather_cat
from tripled_basicsr.data.task_balance import (QUOTA_KEY, draw_within_tasks, resolve_task_quota,  # noqa: F401
                                               same_quota, systematic_task_slots, task_labels,
                                               within_task_probabilities)


def _logger():
    from basicsr.utils import get_root_logger
    return get_root_logger()


def dataset_fingerprint(dataset):
    """Identifies a distilled set: sha1 over its sample keys, in order, and their count."""
    h = hashlib.sha1(f'{len(dataset.keys)}\n'.encode())
    for k in dataset.keys:
        h.update(k.encode('utf-8', 'replace') + b'\n')
    return h.hexdigest()


def _dense_rank01(x):
    """Rank-normalise to [0, 1] (ties share a rank); constant input -> 0.5."""
    u, inv = np.unique(x, return_inverse=True)
    if len(u) == 1:
        return np.full(len(x), 0.5)
    return inv.astype(np.float64) / (len(u) - 1)




@SAMPLER_REGISTRY.register()
class TripleDCurriculumSampler(Sampler):
    """Two-stage, uncertainty-weighted curriculum over a TripleDDataset.

    Args:
        dataset: a dataset with per-sample arrays ``complexity``, ``uncertainty`` (float, NaN
            unknown), ``stage`` (1/2, 0 unknown) and ``keys`` (e.g. TripleDDataset).
        num_replicas, rank (int): DDP world size and this process's rank.
        batch_size (int): indices per step on this rank (the DataLoader's batch size).
        total_iter (int): ``train.total_iter``; resolves fractional ``stage2_start``/``ramp``.
        seed (int): seed of the global draw sequence (same on every rank).
        enlarge_ratio (float): BasicSR's ``dataset_enlarge_ratio``; only sets ``__len__``.
        prefetch_depth (int): how many steps ahead the loader draws (``feedback_delay: auto``).
        **options: the ``sampler`` options (see the module docstring and :data:`DEFAULTS`).
    """

    def __init__(self, dataset, num_replicas=1, rank=0, batch_size=1, total_iter=1, seed=0, enlarge_ratio=1,
                 prefetch_depth=0, **options):
        o = self.options = read_options(options)
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.batch_size = int(batch_size)
        self.total_iter = int(total_iter)
        self.global_batch = self.batch_size * self.num_replicas
        self.seed = int(o['seed'] if o['seed'] is not None else seed)
        self.enlarge_ratio = enlarge_ratio
        self._check_dataset(dataset)
        self.num_samples = len(dataset)
        s = settings(o, self.total_iter, prefetch_depth)
        self.stage2_start, self.ramp, self.feedback_delay = s['stage2_start'], s['ramp'], s['feedback_delay']
        self.a, self.b, self.temperature, self.floor = s['a'], s['b'], s['temperature'], s['floor']
        self.ema_decay, self.online, self.online_mix = s['ema_decay'], s['online'], s['online_mix']
        if self.stage2_start == self.total_iter and self.stage2_start > 0:
            _logger().warning(f'datasets.train.sampler.stage2_start = train.total_iter ({self.total_iter}): '
                              f'training never reaches curriculum stage 2.')
        self.trace_file = o['trace_file']
        root = self.dataroot = getattr(dataset, 'root', '?')
        self._setup_scores(dataset, root)
        self.weight = self._sample_weights(dataset, o['sample_weights'], root)
        self._setup_tasks(dataset, o, self.stage, root)
        self.fingerprint = dataset_fingerprint(dataset)
        self._reset_progress()

    def _setup_scores(self, dataset, root):
        """Stages, the stage-1 pool, complexity and offline uncertainty (NaN: unknown) of the set."""
        n = self.num_samples
        stage = self.stage = np.asarray(dataset.stage, dtype=np.int64)
        self.complexity = np.asarray(dataset.complexity, dtype=np.float64)
        u = np.asarray(dataset.uncertainty, dtype=np.float64)
        if self.stage2_start > 0:
            if (stage == 0).any():
                raise ValueError(f'{root}: {int((stage == 0).sum())} of {n} samples have no curriculum stage, so '
                                 f'curriculum stage 1 (stage2_start > 0) cannot be built. Create the set with '
                                 f'`python -m tripled_basicsr.distill`, or set datasets.train.sampler.stage2_start: 0.')
            self.stage1_pool = np.flatnonzero(stage == 1)
            if len(self.stage1_pool) == 0:
                raise ValueError(f'{root}: no sample is labelled stage 1, so curriculum stage 1 is empty. Re-distill '
                                 f'with a larger stage-1 quantile, or set datasets.train.sampler.stage2_start: 0.')
        else:
            self.stage1_pool = np.flatnonzero(stage <= 1)
        if self.a != 0 and np.isnan(self.complexity).any():
            raise ValueError(f'{root}: complexity is unknown for {int(np.isnan(self.complexity).sum())} samples; '
                             f'set datasets.train.sampler.complexity_weight: 0 or use a distilled set.')
        if self.b != 0 and np.isnan(u).any():
            if not self.online:
                raise ValueError(f'{root}: uncertainty is unknown for {int(np.isnan(u).sum())} samples; set '
                                 f'datasets.train.sampler.uncertainty_weight: 0, online_uncertainty: true, or use a '
                                 f'distilled set.')
            _logger().info('TripleDCurriculumSampler: unknown offline uncertainty counts as 0.5 until the sample '
                           'has a training loss.')
        self.complexity = np.nan_to_num(self.complexity, nan=0.5)
        self.u_offline = np.nan_to_num(u, nan=0.5)

    def _sample_weights(self, dataset, use, root):
        """Per-sample draw weights of the set (``weight`` in tripled_meta.json), mean 1; all 1 unless ``use``."""
        n = self.num_samples
        w = np.asarray(getattr(dataset, 'weight', np.ones(n)), dtype=np.float64)
        if not use:
            w = np.ones(n)
        if w.shape != (n,) or not np.isfinite(w).all() or (w <= 0).any():
            raise ValueError(f'{root}: per-sample weights must be finite and > 0 (tripled_meta.json `weight`); '
                             f're-distill the set or set datasets.train.sampler.sample_weights: false.')
        return w / w.mean()

    def _reset_progress(self):
        """No step drawn or trained on yet, no loss feedback."""
        n = self.num_samples
        self.epoch = 0
        self._committed = 0  # first step of the next epoch iterator (end of the last finished one)
        self._consumed = 0  # steps known to be trained on (from update() / resume)
        self._last_drawn = -1
        # online uncertainty: EMA folded in through step ``_base_through``, later feedback pending
        self._ema_base = np.full(n, np.nan)
        self._base_through = -1
        self._pending = {}  # step -> (indices int64 array, losses float64 array)
        self._nan_warned = False
        self._late_warned = False
        self._cache = (None, None)
        self._trace = JsonlTrace(self.trace_file, self.rank, sources={'datasets.train.dataroot': self.dataroot}
                                 if self.dataroot not in (None, '?') else ())

    def _setup_tasks(self, dataset, o, stage, root):
        """Task labels (also for the per-task loss log) and, with ``task_balance``, the quota and
        the per-task stage-1 pools."""
        labels = task_labels(dataset)
        self.task_names, self.task_index = labels if labels else ([], None)
        if not isinstance(o['task_balance'], bool):
            raise TypeError(f'datasets.train.sampler.task_balance must be true or false; got {o["task_balance"]!r}.')
        self.task_balance = o['task_balance']
        self.task_quota, self.quota_source, self.stage1_fallback_tasks = None, None, []
        if not self.task_balance:
            if o['task_quota'] is not None:
                _logger().warning(f'{QUOTA_KEY} is set but datasets.train.sampler.task_balance is false; the quota '
                                  f'is ignored (set task_balance: true to use it).')
            return
        if labels is None:
            task = getattr(dataset, 'task', None)
            what = ('has no per-sample task labels (a single-source or packed set)' if task is None
                    or not any(task) else f'has {sum(1 for t in task if not t)} of {len(task)} samples without a '
                                          f'task label')
            raise ValueError(f'datasets.train.sampler.task_balance: true needs a multi-task distilled set, but {root} '
                             f'{what}. Distill several sources into one set (`sources:` with a `task:` each, see '
                             f'docs/distill.md), or set task_balance: false.')
        counts = np.bincount(self.task_index, minlength=len(self.task_names))
        self.task_quota, self.quota_source = resolve_task_quota(
            o['task_quota'], self.task_names, counts, getattr(dataset, 'task_quota', None))
        if self.stage2_start > 0:
            # stage-1 pools per task: a task without an easy sample would otherwise get no draw in stage 1
            pool = stage == 1
            for t, name in enumerate(self.task_names):
                mine = self.task_index == t
                if not pool[mine].any():
                    pool |= mine
                    self.stage1_fallback_tasks.append(name)
            if self.stage1_fallback_tasks:
                _logger().warning(f'{root}: task(s) {self.stage1_fallback_tasks} have no sample labelled stage 1; in '
                                  f'curriculum stage 1 they are drawn from all their samples.')
            self.stage1_pool = np.flatnonzero(pool)

    def task_loss_ema(self):
        """{task: mean of the per-sample loss EMA over the task's samples seen so far} (empty
        without task labels or before any feedback)."""
        if self.task_index is None:
            return {}
        ema = self.loss_ema()
        out = {}
        for t, name in enumerate(self.task_names):
            v = ema[self.task_index == t]
            v = v[~np.isnan(v)]
            if len(v):
                out[name] = float(v.mean())
        return out

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_dataset(dataset):
        missing = [a for a in ('stage', 'complexity', 'uncertainty', 'keys') if not hasattr(dataset, a)]
        if missing:
            raise TypeError(f'datasets.train.sampler (TripleDCurriculumSampler) needs per-sample metadata (stage, '
                            f'complexity, uncertainty) that {type(dataset).__name__} does not have. Use `type: '
                            f'TripleDDataset` with `dataroot:` a distilled dir, or remove the `sampler` key.')

    # ------------------------------------------------------------------ sampler protocol
    @property
    def steps_per_epoch(self):
        return max(1, math.ceil(self.num_samples * self.enlarge_ratio / self.global_batch))

    def __len__(self):
        # whole steps only, so drop_last never discards a drawn index and step s is iteration s + 1
        return self.steps_per_epoch * self.batch_size

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        # A new iterator continues after the last finished epoch (an abandoned one, e.g. the
        # loader iterator stock CPUPrefetcher creates and drops before the first epoch, only
        # prefetched: its draws are discarded) or after the last trained step, if later.
        start = max(self._committed, self._consumed)
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        for step in range(start, start + self.steps_per_epoch):
            drawn = self.draw(step)
            self._last_drawn = step
            local = drawn[lo:hi]
            self._write_trace(step, drawn, local)
            for i in local:
                yield int(i)
        self._committed = start + self.steps_per_epoch

    def start_at(self, step):
        """Continue from a step (resume without a saved sampler state): next draw is ``step``."""
        self._committed = self._consumed = int(step)

    # ------------------------------------------------------------------ curriculum
    def stage_blend(self, step):
        """0 in stage 1, 1 in stage 2, linear in between during the ramp. ``step`` is 0-based."""
        if step < self.stage2_start:
            return 0.0
        if self.ramp <= 0:
            return 1.0
        return min(1.0, (step - self.stage2_start + 1) / self.ramp)

    def _online_u(self, through):
        """Offline uncertainty blended with the rank of the loss EMA after feedback of steps <= through."""
        ema = self._ema_view(through)
        if not self.online or self.online_mix == 0:
            return self.u_offline
        seen = ~np.isnan(ema)
        if not seen.any():
            return self.u_offline
        u = self.u_offline.copy()
        u[seen] = (1 - self.online_mix) * u[seen] + self.online_mix * _dense_rank01(ema[seen])
        return u

    def stage2_probabilities(self, through):
        logits = (self.a * self.complexity + self.b * self._online_u(through)) / self.temperature
        w = np.exp(logits - logits.max()) * self.weight
        p = w / w.sum()
        return (1 - self.floor) * p + self.floor / self.num_samples

    def _distributions(self, step):
        """``(p, q)`` for the draws of ``step``: the sampling distribution ``p`` (N,) and, with
        task balance, the within-task distributions ``q`` (each task's block sums to 1; else None)."""
        beta = self.stage_blend(step)
        through = step - 1 - self.feedback_delay
        key = (beta, min(through, self._latest_feedback()))
        if self._cache[0] == key:
            return self._cache[1]
        p2 = self.stage2_probabilities(through) if beta > 0 else None
        if self.task_balance:
            p1 = np.zeros(self.num_samples)
            p1[self.stage1_pool] = self.weight[self.stage1_pool]
            q = within_task_probabilities(p1, p2, beta, self.task_index, len(self.task_names))
            p = self.task_quota[self.task_index] * q
        else:
            q = None
            p = np.zeros(self.num_samples)
            if beta < 1:
                w1 = self.weight[self.stage1_pool]
                p[self.stage1_pool] = (1 - beta) * w1 / w1.sum()
            if beta > 0:
                p += beta * p2
        self._cache = (key, (p, q))
        return p, q

    def probabilities(self, step):
        """Sampling distribution (N,) for the draws of 0-based ``step`` (with task balance: the
        task's quota times the within-task probability)."""
        return self._distributions(step)[0]

    def entropy(self, step):
        """Normalised entropy in [0, 1] of the sampling distribution at ``step`` (1 = uniform)."""
        p = self.probabilities(step)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum() / math.log(self.num_samples)) if self.num_samples > 1 else 1.0

    def draw(self, step):
        """The global batch (G,) of 0-based ``step``: same on every rank, same after resume."""
        self._check_feedback_arrived(step)
        p, q = self._distributions(step)
        rng = np.random.default_rng([self.seed, int(step)])
        g = self.global_batch
        if self.task_balance:
            slots = systematic_task_slots(self.task_quota, g, rng.random())
            return draw_within_tasks(q, self.task_index, slots, rng)
        support = np.flatnonzero(p > 0)
        if g <= len(support):  # Gumbel top-k: weighted, without replacement inside the step
            keys = np.log(p[support]) + rng.gumbel(size=len(support))
            top = np.argpartition(-keys, g - 1)[:g]
            return support[top[np.argsort(-keys[top], kind='stable')]]
        return rng.choice(self.num_samples, size=g, replace=True, p=p)

    # ------------------------------------------------------------------ loss feedback
    def _latest_feedback(self):
        return max(self._pending) if self._pending else self._base_through

    def _check_feedback_arrived(self, step):
        need = step - 1 - self.feedback_delay
        if (self.online and self.stage_blend(step) > 0 and not self._late_warned and self._consumed > 0
                and need >= 0 and self._latest_feedback() < need):
            self._late_warned = True
            _logger().warning(f'TripleDCurriculumSampler: draws of step {step} need loss feedback of step {need}, '
                              f'which has not arrived; runs are not exactly reproducible. Raise '
                              f'datasets.train.sampler.feedback_delay (now {self.feedback_delay}).')

    def update(self, indices, losses, step=None):
        """Feed per-sample training losses back (online uncertainty).

        Args:
            indices: (B,) dataset indices of this rank's batch (tensor or array).
            losses: (B,) per-sample losses, same order. NaN/inf entries are ignored.
            step: 0-based step the batch belonged to (``current_iter - 1``); default: the next
                one after the last update. Under DDP every rank must call this (all_gather).
        """
        idx = torch.as_tensor(indices).detach().reshape(-1).to(torch.int64)
        loss = torch.as_tensor(losses).detach().reshape(-1).to(torch.float64)
        if idx.numel() != loss.numel():
            raise ValueError(f'update(): {idx.numel()} indices but {loss.numel()} losses.')
        step = self._consumed if step is None else int(step)
        idx, loss = all_gather_cat(idx, loss)  # every rank folds in the whole global batch
        idx, loss = idx.cpu().numpy(), loss.cpu().numpy()
        bad = ~np.isfinite(loss)
        if bad.any():
            if not self._nan_warned:
                self._nan_warned = True
                keys = [self.dataset.keys[i] for i in idx[bad][:5]]
                _logger().warning(f'TripleDCurriculumSampler: non-finite training loss for sample(s) {keys} at '
                                  f'iteration {step + 1}; ignored for the loss EMA (logged once).')
            idx, loss = idx[~bad], loss[~bad]
        self._consumed = max(self._consumed, step + 1)
        if not self.online:
            return
        if step <= self._base_through:
            return  # feedback for a step already folded in (e.g. replayed after resume)
        if step in self._pending:
            pi, pl = self._pending[step]
            idx, loss = np.concatenate([pi, idx]), np.concatenate([pl, loss])
        self._pending[step] = (idx, loss)
        # future draws are for steps > step, which use feedback <= step - feedback_delay
        self._fold(step - self.feedback_delay)

    @staticmethod
    def _apply(ema, decay, idx, loss):
        for i, v in zip(idx.tolist(), loss.tolist()):
            ema[i] = v if np.isnan(ema[i]) else decay * ema[i] + (1 - decay) * v

    def _fold(self, through):
        for s in sorted(k for k in self._pending if k <= through):
            self._apply(self._ema_base, self.ema_decay, *self._pending.pop(s))
            self._base_through = s
        self._base_through = max(self._base_through, min(through, self._consumed - 1))

    def _ema_view(self, through):
        steps = sorted(k for k in self._pending if k <= through)
        if not steps:
            return self._ema_base
        ema = self._ema_base.copy()
        for s in steps:
            self._apply(ema, self.ema_decay, *self._pending[s])
        return ema

    def loss_ema(self):
        """Per-sample loss EMA (N,) with all feedback so far (NaN: never seen)."""
        return self._ema_view(float('inf')).copy()

    # ------------------------------------------------------------------ state
    def state_dict(self, consumed_step=None):
        """Everything needed to continue the same curriculum (plain Python + numpy lists).

        ``consumed_step``: steps trained so far (BasicSR's ``current_iter``); the resumed
        sampler draws step ``consumed_step`` next.
        """
        step = self._consumed if consumed_step is None else int(consumed_step)
        return {
            'type': type(self).__name__, 'version': 1, 'fingerprint': self.fingerprint,
            'num_samples': self.num_samples, 'dataroot': self.dataroot, 'seed': self.seed, 'step': step,
            'draws': step * self.global_batch, 'global_batch': self.global_batch,
            'ema_base': self._ema_base.tolist(), 'base_through': self._base_through,
            'pending': [[s, i.tolist(), v.tolist()] for s, (i, v) in sorted(self._pending.items()) if s < step],
            'nan_warned': self._nan_warned, 'task_balance': self.task_balance, 'task_quota': self._quota_dict(),
        }

    def _quota_dict(self):
        if self.task_quota is None:
            return None
        return {n: float(v) for n, v in zip(self.task_names, self.task_quota)}

    def load_state_dict(self, state, source='the resume state'):
        if state.get('fingerprint') != self.fingerprint or state.get('num_samples') != self.num_samples:
            raise ValueError(
                f'{source} holds a curriculum for a different distilled set ({state.get("dataroot")!r}, '
                f'{state.get("num_samples")} samples) than datasets.train.dataroot ({self.dataroot!r}, '
                f'{self.num_samples} samples). Resume with the same distilled set, or start a new experiment '
                f'(another `name`, no --auto_resume / path.resume_state).')
        if state.get('global_batch', self.global_batch) != self.global_batch:
            _logger().warning(f'TripleDCurriculumSampler: global batch changed from {state["global_batch"]} to '
                              f'{self.global_batch} since {source}; the draw sequence continues by step.')
        self.seed = int(state['seed'])
        self.start_at(state['step'])
        self._ema_base = np.asarray(state['ema_base'], dtype=np.float64)
        self._base_through = int(state['base_through'])
        self._pending = {int(s): (np.asarray(i, np.int64), np.asarray(v, np.float64)) for s, i, v in state['pending']}
        self._nan_warned = bool(state.get('nan_warned', False))
        self._cache = (None, None)
        # states written before task balance existed have neither key (and drew without it)
        saved = (bool(state.get('task_balance', False)), state.get('task_quota'))
        mine = (self.task_balance, self._quota_dict())
        if saved[0] != mine[0] or (saved[0] and not same_quota(saved[1], mine[1])):
            _logger().warning(f'TripleDCurriculumSampler: {source} was drawn with task_balance {saved[0]} (quota '
                              f'{saved[1]}), the options now say task_balance {mine[0]} (quota {mine[1]}); the draws '
                              f'from here differ from those of the original run.')

    # ------------------------------------------------------------------ debugging
    def _write_trace(self, step, drawn, local):
        self._trace.write({'pid': os.getpid(), 'rank': self.rank, 'step': int(step),
                           'stage_blend': self.stage_blend(step), 'global': [int(i) for i in drawn],
                           'local': [int(i) for i in local]})
