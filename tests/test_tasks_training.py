"""Multi-task training: task labels in TripleDDataset, task-balanced curriculum draws,
per-task loss EMAs, per-task validation summaries (training and test), the all-in-one recipes."""
import hashlib
import json
import os

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import capture_log, run_py, write_pairs
from test_curriculum_sampler import FakeSet, make_distilled
from tripled_basicsr.data import curriculum_sampler as cs
from tripled_basicsr.data.curriculum_sampler import (TripleDCurriculumSampler, draw_within_tasks,
                                                     resolve_task_quota, systematic_task_slots,
                                                     within_task_probabilities)
from tripled_basicsr.models.task_eval import format_summary, summarise_tasks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
TASKS = {'haze': 6, 'noise': 3, 'rain': 12}  # samples per task (unequal on purpose)
QUOTA = {'haze': 0.3, 'noise': 0.2, 'rain': 0.5}


def make_multitask(root, tasks=TASKS, quota=QUOTA, size=32, seed=0, no_stage1=()):
    """A distilled dir as the multi-source distiller writes it: ``task`` per sample, stage 1 =
    the easier half *within each task*, keys ``<task>_<i>``, ``summary.tasks[*].quota``."""
    from tripled_basicsr.data.distilled_format import DistilledWriter
    rng = np.random.default_rng(seed)
    with DistilledWriter(str(root), scale=1, tile_size=0, tool='distill') as w:
        for task, n in tasks.items():
            for i in range(n):
                gt = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3)).astype(np.uint8), (5, 5), 1.5)
                lq = np.clip(gt + rng.normal(0, 5 + 10 * i / n, gt.shape), 0, 255).astype(np.uint8)
                c = i / max(1, n - 1)
                stage = 2 if task in no_stage1 else (1 if i < max(1, n // 2) else 2)
                w.add(f'{task}_{i:04d}', gt, lq, complexity=c, uncertainty=0.5, cluster=0, stage=stage, task=task)
        if quota is not None:
            w.set_summary({'tasks': {t: {'N': 10 * n, 'n': n, 'quota': quota[t], 'mmd': {}} for t, n in tasks.items()},
                           'task_quota': quota})
    return str(root)


class FakeTaskSet(FakeSet):
    """FakeSet with task labels: ``counts`` samples per task, stage 1 = lower half per task."""

    def __init__(self, counts=(8, 4, 2), names=('a', 'b', 'c'), quota=None, stage1=True, task=None):
        n = sum(counts)
        task = np.array(task if task is not None else [t for t, c in zip(names, counts) for _ in range(c)],
                        dtype=object)
        stage = np.concatenate([[1] * (c // 2) + [2] * (c - c // 2) for c in counts]) if stage1 else None
        super().__init__(n, stage=stage, prefix='t')
        self.task, self.task_quota = task, quota


def sampler(ds, **kw):
    args = dict(num_replicas=1, rank=0, batch_size=4, total_iter=100, seed=3)
    for k in list(kw):
        if k in args or k in ('enlarge_ratio', 'prefetch_depth'):
            args[k] = kw.pop(k)
    return TripleDCurriculumSampler(ds, **args, **kw)


def stream(s):
    """Indices over epochs, as the DataLoader asks for them (a new iterator per epoch)."""
    while True:
        yield from s


def tree_hash(root):
    h = hashlib.sha1()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(f.encode())
            with open(os.path.join(d, f), 'rb') as fh:
                h.update(fh.read())
    return h.hexdigest()


# ----------------------------------------------------------------------------- dataset
def test_dataset_task_fields_and_collate(tmp_path):
    from basicsr.data import build_dataloader

    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    root = make_multitask(tmp_path / 'mt')
    ds = TripleDDataset({'name': 'mt', 'dataroot': root, 'phase': 'train', 'gt_size': 16, 'scale': 1,
                         'batch_size_per_gpu': 4, 'num_worker_per_gpu': 0})
    assert ds.task_names == ['haze', 'noise', 'rain']
    assert list(ds.task) == ['haze'] * 6 + ['noise'] * 3 + ['rain'] * 12
    assert ds.task_quota == QUOTA
    # stage labels come per task from the distiller
    assert [int(ds.stage[i]) for i in range(6)] == [1, 1, 1, 2, 2, 2]
    item = ds[7]
    assert item['task'] == 'noise' and item['key'] == 'noise_0001'
    loader = build_dataloader(ds, ds.opt, num_gpu=0, dist=False, sampler=None, seed=0)
    batch = next(iter(loader))
    assert isinstance(batch['task'], list) and len(batch['task']) == 4 and set(batch['task']) <= set(ds.task_names)
    assert batch['lq'].shape == (4, 3, 16, 16)


def test_single_task_set_has_no_labels(tmp_path):
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    ds = TripleDDataset({'dataroot': make_distilled(tmp_path / 'one', n=4, size=16), 'phase': 'val'})
    assert ds.task_names == [] and ds.task_quota is None and set(ds.task) == {''}
    assert ds[0]['task'] == ''
    assert cs.task_labels(ds) is None


# ----------------------------------------------------------------------------- quota maths
def test_resolve_task_quota():
    names, counts = ['a', 'b', 'c'], [8, 4, 2]
    q, how = resolve_task_quota(None, names, counts, {'a': 0.5, 'b': 0.25, 'c': 0.25})
    np.testing.assert_allclose(q, [0.5, 0.25, 0.25])
    assert how == 'recorded by the distiller'
    q, how = resolve_task_quota(None, names, counts, None)
    np.testing.assert_allclose(q, [1 / 3] * 3)
    assert how.startswith('equal') and 'no quota' in how
    q, how = resolve_task_quota(None, names, counts, {'a': 0.5, 'z': 0.5})  # does not match the labels
    np.testing.assert_allclose(q, [1 / 3] * 3)
    np.testing.assert_allclose(resolve_task_quota('equal', names, counts)[0], [1 / 3] * 3)
    np.testing.assert_allclose(resolve_task_quota('proportional', names, counts)[0], [8 / 14, 4 / 14, 2 / 14])
    np.testing.assert_allclose(resolve_task_quota({'a': 0.2, 'b': 0.8, 'c': 0}, names, counts)[0], [0.2, 0.8, 0])


@pytest.mark.parametrize('option,match', [
    ({'a': 0.5, 'b': 0.3, 'c': 0.1, 'zz': 0.1}, r"task_quota.zz: there is no task 'zz'; the tasks are a, b, c"),
    ({'a': 0.5, 'b': 0.3, 'c': 0.1}, 'sum to 0.9, not 1'),
    ({'a': 1.2, 'b': -0.2, 'c': 0}, r'task_quota.b is -0.2: a share cannot be negative'),
    ({'a': 0.5, 'b': 0.5}, r"no share to task\(s\) c: name every task"),
    ({'a': 'half', 'b': 0.5, 'c': 0}, 'must be a number'),
    ('balanced', 'equal, proportional or a mapping'),
])
def test_bad_task_quota(option, match):
    with pytest.raises(ValueError, match=match) as exc:
        resolve_task_quota(option, ['a', 'b', 'c'], [8, 4, 2])
    assert 'datasets.train.sampler.task_quota' in str(exc.value)
    with pytest.raises(ValueError, match='datasets.train.sampler.task_quota'):  # the same through the sampler
        sampler(FakeTaskSet(), task_balance=True, task_quota=option)


def test_systematic_slots_floor_ceil_and_mean():
    quota = np.array([0.5, 0.3, 0.2, 0.0])
    g = 7
    counts = np.array([np.bincount(systematic_task_slots(quota, g, u), minlength=4) for u in np.linspace(0, 1, 1000,
                                                                                                   endpoint=False)])
    assert (counts.sum(1) == g).all() and (counts[:, 3] == 0).all()
    assert (counts >= np.floor(g * quota)).all() and (counts <= np.ceil(g * quota)).all()
    np.testing.assert_allclose(counts.mean(0), g * quota, atol=0.01)
    assert (np.diff(systematic_task_slots(quota, g, 0.3)) >= 0).all()


def test_within_task_probabilities_normalise_per_task():
    task = np.array([0, 0, 0, 1, 1])
    p1 = np.array([1, 1, 0, 0, 2.0])  # stage-1 pools: {0, 1} and {4}
    p2 = np.array([0.1, 0.2, 0.3, 0.1, 0.3])
    q = within_task_probabilities(p1, p2, 0.0, task, 2)
    np.testing.assert_allclose(q, [0.5, 0.5, 0, 0, 1])
    q = within_task_probabilities(p1, p2, 1.0, task, 2)
    np.testing.assert_allclose(q, [1 / 6, 2 / 6, 3 / 6, 0.25, 0.75])
    q = within_task_probabilities(p1, p2, 0.5, task, 2)
    np.testing.assert_allclose(np.bincount(task, weights=q), [1, 1])
    # a task whose part is all zero is uniform over its samples (never an empty task)
    q = within_task_probabilities(np.array([1, 1, 0, 0, 0.0]), p2, 0.0, task, 2)
    np.testing.assert_allclose(q, [0.5, 0.5, 0, 0.5, 0.5])


def test_draw_within_tasks_respects_slots_and_support():
    task = np.array([0, 0, 0, 1, 1, 2])
    q = np.array([0.5, 0.5, 0.0, 0.5, 0.5, 1.0])
    slots = np.array([0, 0, 1, 1, 1, 2])  # task 1: 3 slots, 2 samples -> with replacement
    out = draw_within_tasks(q, task, slots, np.random.default_rng(0))
    assert sorted(task[out].tolist()) == slots.tolist()
    assert 2 not in out.tolist()  # q = 0: never drawn
    assert sorted(out[task[out] == 0].tolist()) == [0, 1]  # enough samples: without replacement


# ----------------------------------------------------------------------------- sampler
def test_task_balance_draw_proportions_match_quota():
    ds = FakeTaskSet(counts=(24, 6, 2), quota={'a': 0.2, 'b': 0.3, 'c': 0.5})
    # a strong complexity tilt: without balance the weights would move mass between tasks
    s = sampler(ds, task_balance=True, stage2_start=0.3, complexity_weight=3.0, online_uncertainty=False)
    assert s.quota_source == 'recorded by the distiller'
    drawn = np.concatenate([s.draw(step) for step in range(600)])
    share = np.bincount(s.task_index[drawn], minlength=3) / len(drawn)
    np.testing.assert_allclose(share, [0.2, 0.3, 0.5], atol=0.01)
    for step in (0, 50):
        p = s.probabilities(step)
        assert p.sum() == pytest.approx(1)
        np.testing.assert_allclose(np.bincount(s.task_index, weights=p), [0.2, 0.3, 0.5])
    # every batch holds each task floor/ceil(G q) times (systematic slots)
    for step in range(20):
        c = np.bincount(s.task_index[s.draw(step)], minlength=3)
        assert (c >= np.floor(4 * s.task_quota)).all() and (c <= np.ceil(4 * s.task_quota)).all()
    plain = sampler(ds, stage2_start=0.3, complexity_weight=3.0, online_uncertainty=False)
    plain_share = np.bincount(s.task_index[np.concatenate([plain.draw(t) for t in range(600)])], minlength=3) / 2400
    assert plain_share[0] > 0.4 and plain_share[2] < 0.2  # without balance: far from the quota


def test_task_balance_stage1_pools_per_task():
    ds = FakeTaskSet(counts=(8, 4, 2), quota=None)
    s = sampler(ds, task_balance=True, stage2_start=40, task_quota='equal', online_uncertainty=False)
    stage1 = set(np.flatnonzero(ds.stage == 1).tolist())
    for step in range(40):
        d = s.draw(step)
        assert set(d.tolist()) <= stage1, step
    late = np.concatenate([s.draw(step) for step in range(40, 100)])
    assert (ds.stage[late] == 2).any()
    # every task's stage-1 samples are reached, at the same rate per task (equal quota)
    early = np.concatenate([s.draw(step) for step in range(40)])
    assert set(early.tolist()) == stage1
    np.testing.assert_allclose(np.bincount(s.task_index[early], minlength=3) / len(early), [1 / 3] * 3, atol=0.05)


def test_task_without_stage1_sample_falls_back_to_all_its_samples(monkeypatch):
    msgs = capture_log(monkeypatch, cs)
    stage = np.array([1, 1, 2, 2, 1, 2, 2, 2])  # task c (samples 6, 7) has no stage-1 sample
    ds = FakeTaskSet(counts=(4, 2, 2))
    ds.stage = stage
    s = sampler(ds, task_balance=True, task_quota='equal', stage2_start=20, online_uncertainty=False)
    assert s.stage1_fallback_tasks == ['c']
    assert any("['c'] have no sample labelled stage 1" in m for m in msgs)
    early = np.concatenate([s.draw(step) for step in range(20)])
    assert set(early.tolist()) == {0, 1, 4, 6, 7}


def test_task_balance_needs_labels():
    with pytest.raises(ValueError, match='task_balance: true needs a multi-task distilled set.*no per-sample task '
                                         'labels.*sources:.*task_balance: false'):
        sampler(FakeSet(8), task_balance=True)
    part = FakeTaskSet(counts=(4, 4), names=('a', 'b'), task=['a'] * 4 + ['b'] * 3 + [''])
    with pytest.raises(ValueError, match='1 of 8 samples without a task label'):
        sampler(part, task_balance=True)
    sampler(FakeSet(8))  # without task_balance nothing changes
    with pytest.raises(TypeError, match="task_balance must be true or false; got 'yes'"):
        sampler(FakeTaskSet(), task_balance='yes')


def test_task_balance_on_real_single_task_set_is_clear_error(tmp_path):
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    root = make_distilled(tmp_path / 'one', n=4, size=16)
    before = tree_hash(root)
    ds = TripleDDataset({'dataroot': root, 'phase': 'train', 'gt_size': 16})
    with pytest.raises(ValueError, match='task_balance: true.*one.*no per-sample task labels'):
        sampler(ds, task_balance=True)
    assert tree_hash(root) == before


def test_ddp_ranks_agree_and_resume_draws_equal():
    ds = FakeTaskSet(counts=(8, 4, 2), quota={'a': 0.5, 'b': 0.25, 'c': 0.25})
    kw = dict(task_balance=True, stage2_start=5, online_mix=1.0, num_replicas=2, batch_size=2)
    r0, r1 = sampler(ds, rank=0, **kw), sampler(ds, rank=1, **kw)
    it0, it1 = stream(r0), stream(r1)
    rng = np.random.default_rng(0)
    losses = rng.uniform(size=len(ds))
    for step in range(12):
        a, b = [next(it0) for _ in range(2)], [next(it1) for _ in range(2)]
        g = r0.draw(step).tolist()
        assert g == r1.draw(step).tolist() and a == g[:2] and b == g[2:]
        both = np.array(a + b)  # what all_gather gives every rank
        for s in (r0, r1):
            s.update(both, losses[both], step=step)
        if step == 6:
            state = r0.state_dict(consumed_step=7)
    assert state['task_balance'] is True and state['task_quota'] == {'a': 0.5, 'b': 0.25, 'c': 0.25}
    resumed = sampler(ds, rank=0, **kw)
    resumed.load_state_dict(state)
    it = stream(resumed)
    for step in range(7, 12):
        assert [next(it) for _ in range(2)] == r0.draw(step).tolist()[:2]


def _ddp_worker(rank, world, port, out_dir):
    from conftest import ddp_sampler_options, gloo_process_group
    with gloo_process_group(rank, world, port):
        from test_tasks_training import FakeTaskSet, stream
        from tripled_basicsr.data.train_loader import build_sampler
        s = build_sampler(FakeTaskSet(counts=(10, 6, 4)),
                          ddp_sampler_options(rank, world, task_balance=True, task_quota='equal'))
        it, records = stream(s), []
        for step in range(10):
            local = [next(it) for _ in range(3)]
            s.update(torch.tensor(local), torch.tensor([float(i) + rank for i in local], dtype=torch.float64),
                     step=step)
            records.append({'local': local, 'global': s.draw(step).tolist()})
        with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
            json.dump({'records': records, 'task_loss': s.task_loss_ema()}, f)


@pytest.mark.slow
def test_two_processes_agree_on_task_balanced_draws(tmp_path):
    import torch.multiprocessing as mp

    from conftest import free_port
    mp.spawn(_ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1))
    task = FakeTaskSet(counts=(10, 6, 4)).task
    for a, b in zip(r0['records'], r1['records']):
        assert a['global'] == b['global'] and a['local'] == a['global'][:3] and b['local'] == b['global'][3:]
        assert sorted(np.bincount([ord(task[i]) - ord('a') for i in a['global']], minlength=3)) == [2, 2, 2]
    assert r0['task_loss'] == r1['task_loss'] and set(r0['task_loss']) == {'a', 'b', 'c'}


def test_old_state_without_task_fields_loads_and_changed_balance_warns(monkeypatch):
    msgs = capture_log(monkeypatch, cs)
    ds = FakeTaskSet()
    old = sampler(ds)
    old.update(np.arange(4), np.ones(4), step=0)
    state = old.state_dict()
    for k in ('task_balance', 'task_quota'):
        state.pop(k)
    sampler(ds).load_state_dict(state)
    assert not msgs
    sampler(ds, task_balance=True).load_state_dict(state, source='8.state')
    assert any('8.state was drawn with task_balance False' in m for m in msgs)


def test_task_loss_ema_and_model_log_entries():
    from tripled_basicsr.models.sampler_feedback import SamplerFeedbackMixin
    ds = FakeTaskSet(counts=(2, 2), names=('a', 'b'))
    s = sampler(ds, stage2_start=0, ema=0.5)
    assert s.task_loss_ema() == {}
    s.update(np.array([0, 1, 2]), np.array([1.0, 3.0, 0.5]), step=0)
    s.update(np.array([0]), np.array([3.0]), step=1)
    assert s.task_loss_ema() == pytest.approx({'a': (2.0 + 3.0) / 2, 'b': 0.5})

    class Base:
        def get_current_log(self):
            return {'l_pix': 0.1}

    class M(SamplerFeedbackMixin, Base):
        pass

    m = M()
    m.sampler = s
    assert m.get_current_log() == pytest.approx({'l_pix': 0.1, 'task_loss/a': 2.5, 'task_loss/b': 0.5})
    assert sampler(FakeSet(4), stage2_start=0).task_loss_ema() == {}  # no labels: nothing logged


def test_task_quota_without_balance_is_ignored_with_warning(monkeypatch):
    msgs = []
    monkeypatch.setattr(cs, '_logger', lambda: type('L', (), {'warning': lambda self, m: msgs.append(m),
                                                              'info': lambda self, m: None})())
    s = sampler(FakeTaskSet(), task_quota='equal')
    assert not s.task_balance and any('task_balance is false' in m for m in msgs)


# ----------------------------------------------------------------------------- per-task summary maths
def test_summarise_tasks_groups_sets_and_means_tasks():
    per_task, mean, sets = summarise_tasks([
        ('Rain100L', 'rain', {'psnr': 30.0, 'ssim': 0.9}), ('Rain100H', 'rain', {'psnr': 26.0, 'ssim': 0.8}),
        ('SOTS', 'haze', {'psnr': 24.0, 'ssim': 0.7})])
    assert list(per_task) == ['rain', 'haze'] and sets['rain'] == ['Rain100L', 'Rain100H']
    assert per_task['rain'] == pytest.approx({'psnr': 28.0, 'ssim': 0.85})
    assert mean == pytest.approx({'psnr': 26.0, 'ssim': 0.775})  # each task counts once
    line = format_summary(200, per_task, mean, sets)
    assert line == ('Per-task validation @ 200: rain (Rain100L, Rain100H) psnr 28.0000 ssim 0.8500 | haze (SOTS) '
                    'psnr 24.0000 ssim 0.7000 | mean (2 tasks) psnr 26.0000 ssim 0.7750')


def test_reserved_task_name_is_error():
    from tripled_basicsr.models.task_eval import check_task_names
    opt = {'is_train': True, 'datasets': {'train': {'name': 't'}, 'val_1': {'name': 'a'},
                                          'val_2': {'name': 'b', 'task': 'mean'}}}
    with pytest.raises(ValueError, match="datasets.val_2.task .*'mean'.*reserved"):
        check_task_names(opt)
    opt['datasets']['val_2']['task'] = 'haze'
    check_task_names(opt)


# ----------------------------------------------------------------------------- real runs
def _train_opt(name, root, val_a, val_b, total_iter=4):
    from conftest import tiny_sr_train_opt
    val = {'type': 'PairedImageDataset', 'io_backend': {'type': 'disk'}, 'filename_tmpl': '{}'}
    datasets = {
        'train': {'name': 'mt', 'type': 'TripleDDataset', 'dataroot': root, 'io_backend': {'type': 'lmdb'},
                  'gt_size': 16, 'use_hflip': False, 'use_rot': False, 'num_worker_per_gpu': 0,
                  'batch_size_per_gpu': 3, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None,
                  'sampler': {'type': 'TripleDCurriculumSampler', 'stage2_start': 0.5, 'task_balance': True,
                              'task_quota': 'equal'}},
        'val_1': dict(val, name='rain_val', task='rain', dataroot_gt=val_a[0], dataroot_lq=val_a[1]),
        'val_2': dict(val, name='haze_val', task='haze', dataroot_gt=val_b[0], dataroot_lq=val_b[1]),
    }
    opt = tiny_sr_train_opt(name, datasets, total_iter, model_type='TripleDModel')
    opt['scale'] = 1
    opt['network_g'] = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_conv': 1,
                        'upscale': 1, 'act_type': 'prelu'}
    opt['logger'].update(print_freq=2, save_checkpoint_freq=1000, use_tb_logger=True)
    opt['val'] = {'val_freq': 2, 'save_img': False,
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
                              'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False}}}
    return opt


@pytest.mark.slow
def test_training_logs_per_task_summary_and_tb_scalars(tmp_path):
    root = make_multitask(tmp_path / 'datasets' / 'mt', tasks={'haze': 4, 'rain': 6},
                          quota={'haze': 0.4, 'rain': 0.6})
    val_a = write_pairs(str(tmp_path / 'val_rain'), n=2, size=(24, 24), seed=1)[:2]
    val_b = write_pairs(str(tmp_path / 'val_haze'), n=2, size=(24, 24), seed=2)[:2]
    opt = _train_opt('mt_run', root, val_a, val_b)
    yml = tmp_path / 'mt.yml'
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    r = run_py(['-m', 'tripled_basicsr.train', '-opt', str(yml)], cwd=tmp_path, env=ENV)
    assert r.returncode == 0, r.stdout[-4000:]
    out = r.stdout
    assert 'Task balance over 2 tasks, quota equal: haze 0.500, rain 0.500' in out
    assert 'task_loss/haze' in out and 'task_loss/rain' in out
    lines = [ln for ln in out.splitlines() if 'Per-task validation @' in ln]
    # validation at iterations 2 and 4, and BasicSR's final validation (again at 4): one line per round
    assert len(lines) == 3, out[-3000:]
    assert 'Per-task validation @ 2: rain (rain_val) psnr' in lines[0] and '| haze (haze_val) psnr' in lines[0]
    assert '| mean (2 tasks) psnr' in lines[0] and 'ssim' in lines[0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ev = EventAccumulator(str(tmp_path / 'tb_logger' / 'mt_run'))
    ev.Reload()
    tags = set(ev.Tags()['scalars'])
    assert {'metrics_task/rain/psnr', 'metrics_task/haze/ssim', 'metrics_task/mean/psnr', 'task_loss/rain',
            'metrics/rain_val/psnr'} <= tags
    rain = [e.value for e in ev.Scalars('metrics_task/rain/psnr')]
    per_set = [e.value for e in ev.Scalars('metrics/rain_val/psnr')]
    haze = [e.value for e in ev.Scalars('metrics_task/haze/psnr')]
    mean = [e.value for e in ev.Scalars('metrics_task/mean/psnr')]
    assert rain == pytest.approx(per_set, abs=1e-4)
    assert mean == pytest.approx([(a + b) / 2 for a, b in zip(rain, haze)], abs=1e-4)

    # test pipeline over several test sets: the same summary, no TensorBoard
    model = tmp_path / 'experiments' / 'mt_run' / 'models' / 'net_g_latest.pth'
    test_opt = {k: opt[k] for k in ('model_type', 'scale', 'num_gpu', 'manual_seed', 'network_g')}
    test_opt.update(name='mt_test', path={'pretrain_network_g': str(model), 'strict_load_g': True},
                    val={'save_img': False, 'metrics': opt['val']['metrics']},
                    datasets={'test_1': dict(opt['datasets']['val_1'], task='rain'),
                              'test_2': dict(opt['datasets']['val_2'], name='haze_sots', task='haze'),
                              'test_3': dict(opt['datasets']['val_2'], name='haze_other', task='haze')})
    tyml = tmp_path / 'mt_test.yml'
    tyml.write_text(yaml.safe_dump(test_opt, sort_keys=False))
    r = run_py(['-m', 'tripled_basicsr.test', '-opt', str(tyml)], cwd=tmp_path, env=ENV)
    assert r.returncode == 0, r.stdout[-4000:]
    lines = [ln for ln in r.stdout.splitlines() if 'Per-task validation @ mt_test:' in ln]
    assert len(lines) == 1 and 'haze (haze_sots, haze_other) psnr' in lines[0] and 'mean (2 tasks)' in lines[0]


# ----------------------------------------------------------------------------- recipes
ALLINONE_TASKS = ['rain', 'haze', 'noise', 'blur', 'lowlight']


def _load_recipe(name):
    from tripled_basicsr.utils.io import load_yaml_safe
    return load_yaml_safe(os.path.join(REPO, 'options', name))


@pytest.mark.parametrize('name', ['tripled_allinone.yml', 'tripled_allinone_cpu.yml'])
def test_allinone_recipes_name_a_task_per_val_set(name):
    opt = _load_recipe(name)
    assert opt['model_type'] == 'TripleDModel' and opt['datasets']['train']['type'] == 'TripleDDataset'
    assert opt['datasets']['train']['sampler']['task_balance'] is True
    vals = [d for k, d in opt['datasets'].items() if k.startswith('val')]
    assert sorted({d['task'] for d in vals}) == sorted(ALLINONE_TASKS)


@pytest.mark.slow
def test_allinone_cpu_recipe_trains(tmp_path):
    """The CPU recipe on a stand-in for the distiller's output (same layout: five tasks), a few
    iterations instead of the recipe's few hundred."""
    opt = _load_recipe('tripled_allinone_cpu.yml')
    make_multitask(tmp_path / opt['datasets']['train']['dataroot'],
                   tasks=dict(zip(ALLINONE_TASKS, (8, 6, 4, 3, 2))), size=64,
                   quota=dict(zip(ALLINONE_TASKS, (0.35, 0.25, 0.2, 0.12, 0.08))))
    for k, d in opt['datasets'].items():
        if k.startswith('val'):
            gt, lq, _ = write_pairs(str(tmp_path / os.path.dirname(d['dataroot_gt'])), n=1, size=(64, 64))
            assert (gt, lq) == (str(tmp_path / d['dataroot_gt']), str(tmp_path / d['dataroot_lq']))
    opt['train']['total_iter'] = 4
    opt['val']['val_freq'] = 4
    opt['logger'].update(print_freq=2, use_tb_logger=False)
    yml = tmp_path / 'cpu.yml'
    yml.write_text(yaml.safe_dump(opt, sort_keys=False))
    r = run_py(['-m', 'tripled_basicsr.train', '-opt', str(yml)], cwd=tmp_path, env=ENV)
    assert r.returncode == 0, r.stdout[-4000:]
    assert 'Task balance over 5 tasks' in r.stdout and 'mean (5 tasks) psnr' in r.stdout
    assert json.loads(json.dumps(opt))  # plain YAML types only
