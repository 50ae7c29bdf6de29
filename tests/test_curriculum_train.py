"""Curriculum training through stock BasicSR ``basicsr/train.py`` (script form) on CPU:
TripleDDataset + TripleDCurriculumSampler + TripleDModel, and the CPU recipes."""
import os
import signal

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import basicsr_checkout, run_py
from test_curriculum_sampler import make_distilled

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_OPTIONS = os.path.join(REPO, 'options', 'cpu')
HARD = (2, 5, 10, 13)  # heavy-noise samples: high training loss
ENV = {'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}  # also keeps CPU runs deterministic


def make_distilled_sr(root, n=8, size=64, scale=4, seed=1):
    from tripled_basicsr.data.distilled_format import DistilledWriter
    rng = np.random.default_rng(seed)
    with DistilledWriter(str(root), scale=scale, tile_size=0) as w:
        for i in range(n):
            gt = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3)).astype(np.uint8), (5, 5), 1.5)
            lq = cv2.resize(gt, (size // scale, size // scale), interpolation=cv2.INTER_AREA)
            w.add(f'p{i:03d}', gt, lq, complexity=i / (n - 1), uncertainty=0.5, stage=1 if i < n // 2 else 2,
                  cluster=0)
    return str(root)


def load_opt(name):
    """A CPU recipe with the curriculum turned on: the recipes ship with `curriculum: false`,
    these tests train the curriculum itself."""
    with open(os.path.join(CPU_OPTIONS, name)) as f:
        opt = yaml.safe_load(f)
    opt['datasets']['train']['sampler']['curriculum'] = True
    return opt


def dump(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def read_trace(path, pid=None):
    """step -> global indices of the last record for that step (optionally of one process)."""
    from tripled_basicsr.data.sampler_utils import read_trace as records
    return {rec['step']: rec for rec in records(path) if pid is None or rec['pid'] == pid}


@pytest.fixture(scope='module')
def work(tmp_path_factory):
    d = basicsr_checkout(tmp_path_factory.mktemp('cur'))
    make_distilled(d / 'datasets' / 'cpu' / 'tripled_x1', n=16, size=48, tile_size=32, hard=HARD)
    make_distilled_sr(d / 'datasets' / 'cpu' / 'tripled_x4')
    return d


def uhd_opt(name, trace, **sampler):
    opt = load_opt('tripled_uhd_cpu.yml')
    opt['name'] = name
    opt['datasets']['train']['sampler'].update(trace_file=trace, **sampler)
    opt['logger'].update(save_checkpoint_freq=8)
    opt['val']['val_freq'] = 1000
    return opt


@pytest.fixture(scope='module')
def uninterrupted(work):
    trace = str(work / 'trace_a.jsonl')
    yml = dump(work / 'a.yml', uhd_opt('cur_a', trace))
    r = run_py(['basicsr/train.py', '-opt', yml], cwd=work, env=ENV)
    assert r.returncode == 0, r.stdout[-4000:]
    return work, trace, r.stdout


def test_stage1_draws_only_stage1_samples(uninterrupted):
    work, trace, out = uninterrupted
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    ds = TripleDDataset({'dataroot': str(work / 'datasets/cpu/tripled_x1'), 'phase': 'train', 'gt_size': 32})
    recs = read_trace(trace)
    # one record per step; BasicSR loads one batch past total_iter before it stops
    assert sorted(recs) == list(range(25))
    for step, rec in recs.items():
        if step < 12:  # stage2_start 0.5 of total_iter 24
            assert rec['stage_blend'] == 0 and all(ds.stage[i] == 1 for i in rec['global']), step
        else:
            assert rec['stage_blend'] == 1
    assert any(ds.stage[i] == 2 for step in range(12, 24) for i in recs[step]['global'])
    # logged (and in TensorBoard): stage, sampler entropy, share of stage-2 samples
    assert 'curriculum_stage: 1.0000e+00' in out and 'curriculum_stage: 2.0000e+00' in out
    assert 'sampler_entropy' in out and 'stage2_share' in out
    assert 'Curriculum sampler TripleDCurriculumSampler: 8 of 16 samples in stage 1' in out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ev = EventAccumulator(str(work / 'tb_logger' / 'cur_a'))
    ev.Reload()
    assert {'curriculum_stage', 'sampler_entropy', 'stage2_share'} <= set(ev.Tags()['scalars'])


def test_online_uncertainty_moves_stage2_weights_to_high_loss(uninterrupted):
    work, _, _ = uninterrupted
    from tripled_basicsr.data.curriculum_sampler import TripleDCurriculumSampler
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    ds = TripleDDataset({'dataroot': str(work / 'datasets/cpu/tripled_x1'), 'phase': 'train', 'gt_size': 32})
    state = torch.load(work / 'experiments/cur_a/training_states/24.state', weights_only=False)
    saved = state['tripled_sampler']
    assert saved['step'] == 24 and saved['draws'] == 24 * 4
    kw = dict(batch_size=4, total_iter=24, **{k: v for k, v in load_opt('tripled_uhd_cpu.yml')['datasets']['train']
                                              ['sampler'].items() if k != 'type'})
    fresh, trained = TripleDCurriculumSampler(ds, **kw), TripleDCurriculumSampler(ds, **kw)
    trained.load_state_dict(saved)
    before, after = fresh.probabilities(30), trained.probabilities(30)
    ema = trained.loss_ema()
    hard = np.array(HARD)
    easy = np.array([i for i in range(16) if i not in HARD and not np.isnan(ema[i])])
    assert not np.isnan(ema[hard]).any()
    assert ema[hard].min() > ema[easy].max()  # the EMA sees which samples are hard
    gain = after / before
    assert gain[hard].mean() > 1.1 * gain[easy].mean()


# Runs stock basicsr/train.py (script form) and SIGKILLs the process from inside while it
# writes ``16.state``: a crash during a checkpoint save, at a defined point (no polling).
KILL_DURING_SAVE = """
import os, runpy, signal, sys
import torch
_save = torch.save
def save(obj, f, *args, **kwargs):
    if '16.state' in str(getattr(f, 'name', f)):
        f.write(b'PK partial'); f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(obj, f, *args, **kwargs)
torch.save = save
sys.argv = ['basicsr/train.py', '-opt', sys.argv[1]]
runpy.run_path('basicsr/train.py', run_name='__main__')
"""


def test_auto_resume_continues_same_curriculum(uninterrupted):
    work, trace_a, _ = uninterrupted
    trace_b = str(work / 'trace_b.jsonl')
    yml = dump(work / 'b.yml', uhd_opt('cur_b', trace_b))
    # killed while saving its second checkpoint (16.state): 8.state (mid-way through stage 1) is the last good one
    r = run_py(['-c', KILL_DURING_SAVE, yml], cwd=work, env=ENV)
    assert r.returncode == -signal.SIGKILL, r.stdout[-3000:]
    states = work / 'experiments/cur_b/training_states'
    names = sorted(os.listdir(states))
    assert len(names) == 2 and names[0].startswith('.16.state.tmp-ckpt-') and names[1] == '8.state', names
    k = 8
    trace_c = str(work / 'trace_c.jsonl')
    dump(work / 'b.yml', uhd_opt('cur_b', trace_c))
    r = run_py(['basicsr/train.py', '-opt', yml, '--auto_resume'], cwd=work, env=ENV)
    assert r.returncode == 0, r.stdout[-4000:]
    assert f'Curriculum sampler resumed at step {k}' in r.stdout
    assert 'removing' in r.stdout and '.16.state.tmp-ckpt-' in r.stdout  # the killed save's temp file
    a, c = read_trace(trace_a), read_trace(trace_c)
    assert min(c) == k and max(c) == 24
    for step in range(k, 24):  # same next indices as the uninterrupted run, into stage 2
        assert c[step]['global'] == a[step]['global'], step
    final_a = torch.load(work / 'experiments/cur_a/training_states/24.state', weights_only=False)['tripled_sampler']
    final_c = torch.load(states / '24.state', weights_only=False)['tripled_sampler']
    assert final_c['step'] == 24
    np.testing.assert_allclose(np.nan_to_num(final_c['ema_base'], nan=-1), np.nan_to_num(final_a['ema_base'], nan=-1),
                               rtol=1e-5)


def test_resume_state_of_other_distilled_set_is_error(uninterrupted, tmp_path):
    work, _, _ = uninterrupted
    from tripled_basicsr.data.curriculum_sampler import TripleDCurriculumSampler
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    other = make_distilled(tmp_path / 'other', n=16, size=48, prefix='o')
    ds = TripleDDataset({'dataroot': other, 'phase': 'train', 'gt_size': 32})
    s = TripleDCurriculumSampler(ds, batch_size=4, total_iter=24)
    state = torch.load(work / 'experiments/cur_a/training_states/8.state', weights_only=False)
    with pytest.raises(ValueError, match='different distilled set.*tripled_x1.*start a new experiment'):
        s.load_state_dict(state['tripled_sampler'], source='8.state')


def test_stock_srmodel_with_curriculum_sampler(work):
    trace = str(work / 'trace_sr.jsonl')
    opt = uhd_opt('cur_srmodel', trace, stage2_start=4)
    opt['model_type'] = 'SRModel'
    opt['train']['total_iter'] = 8
    opt['train'].pop('curriculum')
    opt['logger'].update(print_freq=2, use_tb_logger=False)
    r = run_py(['basicsr/train.py', '-opt', dump(work / 'sr.yml', opt)], cwd=work, env=ENV)
    assert r.returncode == 0, r.stdout[-4000:]
    assert 'online uncertainty stays offline' in r.stdout
    recs = read_trace(trace)
    stage = np.array([1] * 8 + [2] * 8)
    assert sorted(recs) == list(range(9))
    assert all((stage[recs[s]['global']] == 1).all() for s in range(4))


def test_stock_paired_dataset_with_sampler_fails_clearly(work):
    from conftest import write_pairs
    gt, lq, _ = write_pairs(str(work / 'pairs'), n=4, size=(48, 48))
    opt = load_opt('tripled_swinir_dn_cpu.yml')
    opt['name'] = 'cur_paired'
    tr = opt['datasets']['train']
    tr.update(type='PairedImageDataset', dataroot_gt=gt, dataroot_lq=lq, io_backend={'type': 'disk'})
    tr.pop('dataroot')
    del opt['datasets']['val']
    opt.pop('val')
    r = run_py(['-m', 'tripled_basicsr.train', '-opt', dump(work / 'paired.yml', opt)], cwd=work, env=ENV)
    assert r.returncode != 0
    assert 'PairedImageDataset does not have' in r.stdout and 'TripleDDataset' in r.stdout


@pytest.mark.parametrize('recipe', ['tripled_swinir_dn_cpu.yml', 'tripled_srvgg_x4_cpu.yml'])
def test_cpu_recipes_train(work, recipe):
    r = run_py(['basicsr/train.py', '-opt', os.path.join(CPU_OPTIONS, recipe)], cwd=work, env=ENV)
    assert r.returncode == 0, r.stdout[-4000:]
    name = load_opt(recipe)['name']
    assert os.path.isfile(work / 'experiments' / name / 'models' / 'net_g_latest.pth')
    assert 'curriculum_stage' in r.stdout and '# psnr' in r.stdout
