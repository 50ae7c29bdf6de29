"""TripleDCurriculumSampler in-process: stages, weights, feedback, state, bad input."""
import os

import cv2
import numpy as np
import pytest
import torch

from conftest import capture_log, write_pairs
from tripled_basicsr.data import curriculum_sampler as cs
from tripled_basicsr.data.curriculum_sampler import TripleDCurriculumSampler, resolve_iteration
from tripled_basicsr.data.sampler_registry import SAMPLER_REGISTRY
from tripled_basicsr.data.train_loader import build_sampler


class FakeSet:
    """The per-sample arrays of a TripleDDataset, without images."""

    def __init__(self, n=16, stage=None, complexity=None, uncertainty=None, prefix='s'):
        self.keys = [f'{prefix}{i:03d}' for i in range(n)]
        self.complexity = np.linspace(0, 1, n) if complexity is None else np.asarray(complexity, float)
        self.uncertainty = np.full(n, 0.5) if uncertainty is None else np.asarray(uncertainty, float)
        self.stage = np.where(self.complexity < 0.5, 1, 2) if stage is None else np.asarray(stage)
        self.root = f'/fake/{prefix}{n}'

    def __len__(self):
        return len(self.keys)


def make_distilled(root, n=16, size=48, tile_size=0, hard=(), seed=0, prefix='s', stage=None):
    """A small distilled dir (scale 1). ``hard`` samples are bright texture with heavy noise
    (high training loss from the first iteration on), the others smooth and dark;
    stage 1 = the lower half of complexity."""
    from tripled_basicsr.data.distilled_format import DistilledWriter
    rng = np.random.default_rng(seed)
    with DistilledWriter(str(root), scale=1, tile_size=tile_size) as w:
        for i in range(n):
            gt = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
            if i not in hard:  # easy: smooth and dark
                gt = (cv2.GaussianBlur(gt, (5, 5), 2) // 4).astype(np.uint8)
            sigma = 60 if i in hard else 3
            lq = np.clip(gt + rng.normal(0, sigma, gt.shape), 0, 255).astype(np.uint8)
            c = i / (n - 1)
            st = (1 if c < 0.5 else 2) if stage is None else stage[i]
            w.add(f'{prefix}{i:03d}', gt, lq, complexity=c, uncertainty=0.5, stage=st, cluster=i % 3)
    return str(root)


def sampler(ds=None, **kw):
    args = dict(num_replicas=1, rank=0, batch_size=4, total_iter=40, seed=3)
    for k in list(kw):
        if k in args or k in ('enlarge_ratio', 'prefetch_depth'):
            args[k] = kw.pop(k)
    return TripleDCurriculumSampler(ds or FakeSet(), **args, **kw)


def take(it, n):
    return [next(it) for _ in range(n)]


def test_stage1_only_then_all():
    ds = FakeSet(16)
    s = sampler(ds, stage2_start=10, online_uncertainty=False, floor=0.2)
    assert s.stage2_start == 10
    draws = [s.draw(step) for step in range(40)]
    stage1 = set(np.flatnonzero(ds.stage == 1))
    for step in range(10):
        assert set(draws[step].tolist()) <= stage1
        assert len(set(draws[step].tolist())) == 4  # without replacement inside a step
    late = np.concatenate(draws[10:])
    assert (ds.stage[late] == 2).any() and (ds.stage[late] == 1).any()
    assert s.entropy(0) == pytest.approx(np.log(8) / np.log(16))
    assert 0.9 < s.entropy(20) <= 1.0  # mild tilt


def test_iteration_lazy_whole_steps_and_abandoned_iterator():
    s = sampler(FakeSet(10), batch_size=4, stage2_start=0)
    assert s.steps_per_epoch == 3 and len(s) == 12
    first = iter(s)
    take(first, 8)  # an abandoned (prefetch-only) iterator: its draws are discarded
    a = list(iter(s))
    assert len(a) == 12
    assert a == [int(i) for st in range(3) for i in s.draw(st)]
    b = list(iter(s))  # next epoch continues with step 3
    assert b[:4] == s.draw(3).tolist()


def test_ramp_blends_stages():
    s = sampler(stage2_start=0.25, ramp=0.25, total_iter=40)
    assert (s.stage2_start, s.ramp) == (10, 10)
    assert s.stage_blend(9) == 0 and s.stage_blend(10) == pytest.approx(0.1) and s.stage_blend(19) == 1
    p = s.probabilities(14)
    assert p.sum() == pytest.approx(1) and (p > 0).all()


def test_defaults_are_mild_and_start_easy():
    d = cs.DEFAULTS
    assert d['stage2_start'] > 0 and d['complexity_weight'] <= d['uncertainty_weight']
    s = sampler(FakeSet(16, uncertainty=np.linspace(0, 1, 16)), stage2_start=0)
    p = s.stage2_probabilities(-1)
    assert p.max() / p.min() < 5
    ess = 1 / (p ** 2).sum() / len(p)
    assert ess > 0.8  # worst case: complexity and uncertainty perfectly correlated


@pytest.mark.parametrize('value,expect', [(0.5, 20), (0, 0), (1.0, 40), (7, 7), (40, 40), (12.0, 12)])
def test_resolve_iteration(value, expect):
    assert resolve_iteration(value, 40, 'stage2_start') == expect


@pytest.mark.parametrize('value,match', [(41, 'beyond train.total_iter'), (-1, '>= 0'), (-0.2, '>= 0'),
                                         ('half', 'must be a number'), (2.5, 'whole number')])
def test_stage2_start_bad(value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        sampler(stage2_start=value)


def test_unknown_option():
    with pytest.raises(KeyError, match='stage_two'):
        sampler(stage_two=3)


def test_empty_stage1_pool():
    ds = FakeSet(8, stage=[2] * 8)
    with pytest.raises(ValueError, match='stage 1 is empty'):
        sampler(ds, stage2_start=0.5)
    sampler(ds, stage2_start=0)  # all stage 2 from the start is fine


def test_unknown_stage_or_complexity():
    with pytest.raises(ValueError, match='no curriculum stage'):
        sampler(FakeSet(8, stage=[0] * 8))
    with pytest.raises(ValueError, match='complexity_weight: 0'):
        sampler(FakeSet(8, complexity=[np.nan] * 8, stage=[1, 2] * 4))


def test_stock_paired_dataset_is_a_clear_error(tmp_path):
    from basicsr.data.paired_image_dataset import PairedImageDataset
    gt, lq, _ = write_pairs(str(tmp_path), n=4, size=(32, 32))
    ds_opt = {'name': 'p', 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq, 'phase': 'train',
              'io_backend': {'type': 'disk'}, 'gt_size': 16, 'scale': 1, 'batch_size_per_gpu': 2,
              'num_worker_per_gpu': 0, 'sampler': {'type': 'TripleDCurriculumSampler'}}
    opt = {'datasets': {'train': ds_opt}, 'train': {'total_iter': 10}, 'num_gpu': 0, 'manual_seed': 0}
    with pytest.raises(TypeError, match='PairedImageDataset does not have.*TripleDDataset'):
        build_sampler(PairedImageDataset(ds_opt), opt)


def test_online_uncertainty_moves_weight_to_high_loss():
    s = sampler(stage2_start=0, online_mix=1.0)
    before = s.probabilities(5).copy()
    hard = np.array([3, 9, 12])
    for step in range(5):
        idx = s.draw(step)
        s.update(torch.as_tensor(idx), torch.as_tensor(np.where(np.isin(idx, hard), 1.0, 0.1)), step=step)
    after = s.probabilities(40)
    assert (after[hard] / before[hard]).min() > 1.2
    seen = ~np.isnan(s.loss_ema())
    easy_seen = np.flatnonzero(seen & ~np.isin(np.arange(16), hard))
    assert after[hard].min() > after[easy_seen].max()
    off = sampler(stage2_start=0, online_uncertainty=False)
    off.update(np.arange(4), np.ones(4), step=0)
    assert np.isnan(off.loss_ema()).all()


def test_nan_loss_ignored_and_logged_once(monkeypatch):
    msgs = capture_log(monkeypatch, cs)
    s = sampler(stage2_start=0)
    s.update(np.array([0, 1]), np.array([np.nan, 0.5]), step=0)
    s.update(np.array([0, 2]), np.array([np.inf, 0.7]), step=1)
    ema = s.loss_ema()
    assert np.isnan(ema[0]) and ema[1] == 0.5 and ema[2] == pytest.approx(0.7)
    assert len([m for m in msgs if 'non-finite' in m]) == 1 and 's000' in msgs[0]


def test_state_round_trip_with_prefetch_delay():
    """Draws ahead of training (prefetch) + feedback delay: a restored sampler draws the
    same next batches as the uninterrupted one."""
    kw = dict(stage2_start=3, online_mix=1.0, feedback_delay=2, batch_size=2)
    a = sampler(**kw)
    rng = np.random.default_rng(0)
    losses = rng.uniform(size=16)
    its = [iter(a)]
    drawn = {}

    def next_batch():  # a new epoch iterator when one is exhausted, as the DataLoader does
        try:
            return [next(its[0]), next(its[0])]
        except StopIteration:
            its[0] = iter(a)
            return [next(its[0]), next(its[0])]

    queue = [next_batch() for _ in range(2)]  # loader prefetches 2 steps
    for step in range(12):
        batch = queue.pop(0)
        drawn[step] = batch
        queue.append(next_batch())  # the loader refills as a batch is consumed
        a.update(np.array(batch), losses[batch], step=step)
        if step == 6:
            state = a.state_dict(consumed_step=7)
    b = sampler(**kw)
    b.load_state_dict(state)
    it_b = iter(b)
    for step in range(7, 12):
        batch = [next(it_b), next(it_b)]
        assert batch == drawn[step]
        b.update(np.array(batch), losses[batch], step=step)


def test_resume_other_distilled_set_is_error():
    a = sampler(FakeSet(16, prefix='a'))
    a.update(np.arange(4), np.ones(4), step=0)
    b = sampler(FakeSet(16, prefix='b'))
    with pytest.raises(ValueError, match='different distilled set.*/fake/a16'):
        b.load_state_dict(a.state_dict(), source='x.state')
    c = sampler(FakeSet(16, prefix='a'))
    c.load_state_dict(a.state_dict())


def test_registry_allows_custom_strategy():
    @SAMPLER_REGISTRY.register()
    class TripleDTestReverseSampler(torch.utils.data.Sampler):
        def __init__(self, dataset, num_replicas=1, rank=0, batch_size=1, total_iter=1, seed=0, enlarge_ratio=1,
                     prefetch_depth=0, **opts):
            self.n, self.opts = len(dataset), opts

        def __iter__(self):
            return iter(range(self.n - 1, -1, -1))

        def __len__(self):
            return self.n

        def set_epoch(self, epoch):
            pass

    opt = {'datasets': {'train': {'batch_size_per_gpu': 2, 'sampler': {'type': 'TripleDTestReverseSampler', 'k': 1}}},
           'train': {'total_iter': 10}, 'num_gpu': 0, 'manual_seed': 0}
    s = build_sampler(FakeSet(4), opt)
    assert list(s) == [3, 2, 1, 0] and s.opts == {'k': 1}
    opt['datasets']['train']['sampler']['type'] = 'NoSuchSampler'
    with pytest.raises(KeyError, match='NoSuchSampler.*TripleDCurriculumSampler'):
        build_sampler(FakeSet(4), opt)


def test_real_dataset_and_trace(tmp_path):
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    root = make_distilled(tmp_path / 'd', n=8, size=32)
    ds = TripleDDataset({'dataroot': root, 'phase': 'train', 'gt_size': 16, 'scale': 1})
    trace = tmp_path / 'trace_{rank}.jsonl'
    s = sampler(ds, batch_size=2, stage2_start=2, trace_file=str(trace))
    items = list(iter(s))
    assert len(items) == 8
    from tripled_basicsr.data.sampler_utils import read_trace
    recs = read_trace(tmp_path / 'trace_0.jsonl')
    assert [r['step'] for r in recs] == [0, 1, 2, 3]
    assert all(ds.stage[i] == 1 for i in items[:4])
    assert os.path.basename(s.dataroot) == 'd'


def test_curriculum_false_draws_uniformly_from_the_first_step():
    ds = FakeSet()
    s = sampler(ds, curriculum=False, stage2_start=0.5, complexity_weight=3.0)  # curriculum keys unused
    n = len(ds)
    for step in (0, 10, 39):
        assert np.allclose(s.probabilities(step), 1.0 / n)
    assert s.stage2_start == 0 and not s.online
    drawn = set(iter(s))
    assert len(drawn) > n // 2  # stage-2 items too, from step 0 (a curriculum would start with stage 1 only)
    on = sampler(ds)
    assert set(np.flatnonzero(on.probabilities(0))) == set(np.flatnonzero(ds.stage == 1))
    with pytest.raises(TypeError, match='sampler.curriculum must be true or false'):
        sampler(ds, curriculum='no')
