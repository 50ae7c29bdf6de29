"""`torchrun --nproc_per_node=2` (gloo, CPU), killed and resumed, gives the same subset as
one process; the output trains under BasicSR; the CLI reports errors cleanly."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import free_port
from tripled_basicsr.distill._testing import tiny_options, write_pairs


def meta(out):
    with open(os.path.join(out, 'tripled_meta.json'), encoding='utf-8') as f:
        return json.load(f)


def write_opt(path, opt):
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f)
    return path


def env():
    e = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    e.pop('TRIPLED_DISTILL_INTERRUPT_AFTER', None)
    return e


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('distill_dist_src')
    return write_pairs(str(root), num=40, size=48, seed=3)


def test_cli_error_is_one_clear_line(data, tmp_path, capsys):
    from tripled_basicsr.distill.__main__ import main
    gt, lq = data
    opt = write_opt(tmp_path / 'bad.yml', tiny_options(gt, lq, str(tmp_path / 'o'), selection={'ratio': 0.001}))
    assert main(['-opt', str(opt), '--quiet']) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: OptionError: selection.ratio 0.001 of 40 pairs') and '\n' not in err
    assert not os.path.exists(tmp_path / 'o') and not os.path.exists(tmp_path / 'o.work')


@pytest.mark.slow
def test_output_trains_with_stock_basicsr(data, tmp_path):
    gt, lq = data
    out = str(tmp_path / 'distilled')
    from tripled_basicsr.distill import run_distill
    run_distill(tiny_options(gt, lq, out, selection={'ratio': 0.5}), progress=False)
    train = {
        'name': 'distill_train_smoke', 'model_type': 'SRModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'train': {'name': 'tripled', 'type': 'TripleDDataset', 'dataroot': out,
                               'io_backend': {'type': 'lmdb'}, 'gt_size': 32, 'use_hflip': True, 'use_rot': True,
                               'num_worker_per_gpu': 0, 'batch_size_per_gpu': 4, 'dataset_enlarge_ratio': 1,
                               'prefetch_mode': None}},
        'network_g': {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_conv': 2,
                      'upscale': 1, 'act_type': 'prelu'},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'scheduler': {'type': 'MultiStepLR',
                  'milestones': [100], 'gamma': 0.5}, 'total_iter': 3, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 1000, 'use_tb_logger': False, 'wandb': None},
        'dist_params': {'backend': 'gloo', 'port': 29500},
    }
    opt = write_opt(tmp_path / 'train.yml', train)
    e = env()
    e['TRIPLED_BASICSR_ROOT'] = str(tmp_path)
    r = subprocess.run([sys.executable, '-m', 'tripled_basicsr.train', '-opt', str(opt)], capture_output=True,
                       text=True, env=e, cwd=str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert 'End of training' in r.stdout + r.stderr


def _torchrun(opt_path, extra_env=None):
    e = env()
    e.update(extra_env or {})
    return subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--nnodes=1',
                           f'--master_port={free_port()}', '-m', 'tripled_basicsr.distill', '-opt', str(opt_path),
                           '--quiet'], capture_output=True, text=True, env=e, timeout=300)


@pytest.mark.slow
def test_two_process_gloo_killed_and_resumed_equals_single_process(data, tmp_path):
    """torchrun with 2 gloo ranks, both killed (SIGKILL) after the first round of the feature
    stage; a second torchrun resumes from exactly the rows rank 0 had marked done. Every row
    is computed by the 2-process runs, and the result equals an uninterrupted single process:
    same features, same subset, same labels."""
    gt, lq = data
    ref, out = str(tmp_path / 'ref'), str(tmp_path / 'out')
    from tripled_basicsr.distill import run_distill
    run_distill(tiny_options(gt, lq, ref), progress=False)
    opt = write_opt(tmp_path / 'o.yml', tiny_options(gt, lq, out))
    r = _torchrun(opt, {'TRIPLED_DISTILL_INTERRUPT_AFTER': '-1'})
    assert r.returncode != 0 and 'SIGKILL' in r.stdout + r.stderr, r.stderr[-2000:]
    assert not os.path.exists(out)
    done = int(np.fromfile(out + '.work/done.u8', np.uint8).sum())
    assert done % 16 == 0 and done < 40  # whole rounds of 2 ranks x 8 pairs, never a partial one
    r = _torchrun(opt)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    # every rank waits for rank 0's write before tearing down its process group (a rank that left
    # early was aborted by gloo at exit: 'terminate called without an active exception')
    assert 'terminate called' not in r.stderr, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1].startswith('distilled 10 of 40 pairs')  # --quiet: one line, rank 0
    m1, m2 = meta(ref), meta(out)
    assert m2['summary']['features']['world_size'] == 2 and m1['summary']['features']['world_size'] == 1
    assert m2['summary']['features']['resumed_from'] == done
    assert m2['summary']['features']['embedded_this_run'] == 40 - done
    assert [s['key'] for s in m1['samples']] == [s['key'] for s in m2['samples']]
    for a, b in zip(m1['samples'], m2['samples']):
        assert a['stage'] == b['stage'] and a['cluster'] == b['cluster']
        assert abs(a['complexity'] - b['complexity']) < 1e-6 and abs(a['uncertainty'] - b['uncertainty']) < 1e-6
    f1 = np.fromfile(ref + '.work/features.f16', np.float16).astype(np.float32)
    f2 = np.fromfile(out + '.work/features.f16', np.float16).astype(np.float32)
    np.testing.assert_allclose(f1, f2, atol=2e-3)


@pytest.mark.slow
def test_two_ranks_share_the_proxy_difficulty_and_pick_the_same_subset(data, tmp_path):
    """`importance` (the default rule) under torchrun: both ranks fit the same proxy and score
    half of the images each before rank 0 goes on alone (timed before k-means); one process
    computes it when the selection asks (after). Same values, same subset."""
    gt, lq = data
    ref, out = str(tmp_path / 'ref'), str(tmp_path / 'out')
    sel = {'type': 'importance', 'ratio': 0.25, 'seed': 0}
    from tripled_basicsr.distill import run_distill
    run_distill(tiny_options(gt, lq, ref, selection=sel), progress=False)
    r = _torchrun(write_opt(tmp_path / 'o.yml', tiny_options(gt, lq, out, selection=sel)))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    m1, m2 = meta(ref), meta(out)
    t1, t2 = list(m1['summary']['timings']), list(m2['summary']['timings'])
    assert t2.index('difficulty') < t2.index('kmeans') < t1.index('difficulty')
    assert [s['key'] for s in m1['samples']] == [s['key'] for s in m2['samples']] and len(m1['samples']) == 10


def test_shipped_option_files_are_valid(tmp_path):
    from tripled_basicsr.distill.options import merge_options
    from tripled_basicsr.utils.io import load_yaml_safe
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ('distill_demo.yml', 'distill_uhd.yml'):
        opt = load_yaml_safe(os.path.join(root, 'options', name))
        opt['source']['dataroot_gt'] = opt['source']['dataroot_lq'] = str(tmp_path)  # existence not needed here
        merged = merge_options(opt)
        assert merged['selection']['type'] == 'importance' and merged['output']['path']
        assert merged['source']['crop_size'] >= 48 and merged['calibration']['enabled'] is False


@pytest.mark.slow
def test_defaults_under_torchrun_equal_one_process(tmp_path, monkeypatch):
    """The default options (crop_size auto, backbone auto resolved on rank 0 and shared,
    importance, codec auto) under torchrun with 2 gloo ranks give the single-process subset."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    gt, lq = write_pairs(str(tmp_path / 'src'), num=8, size=144, seed=4, sigma=5)
    from tripled_basicsr.distill import run_distill

    def opt(out):
        return {'source': {'dataroot_gt': gt, 'dataroot_lq': lq}, 'output': {'path': out},
                'features': {'num_workers': 0, 'device': 'cpu', 'batch_size': 8}, 'selection': {'ratio': 0.1},
                'report': {'plot': False, 'random_repeats': 2}}
    ref, out = str(tmp_path / 'ref'), str(tmp_path / 'out')
    run_distill(opt(ref), progress=False)
    r = _torchrun(write_opt(tmp_path / 'o.yml', opt(out)), {'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1].startswith('distilled 8 of 72 crops (11.11 % of the pixels)')
    m1, m2 = meta(ref), meta(out)
    assert m2['summary']['features']['world_size'] == 2
    for m in (m1, m2):
        used = m['provenance']['options']
        assert (used['source']['crop_size'], used['features']['backbone'], used['output']['codec']) == \
            (48, 'tripled_stats', 'raw')
    assert [(s['key'], s['box']) for s in m1['samples']] == [(s['key'], s['box']) for s in m2['samples']]
