"""SLKDModel through stock BasicSR entry points: `basicsr/train.py` in script form (U-Net recipe with
teachers trained by the teacher recipes, a stock RRDBNet pair, TripleDDataset + curriculum sampler),
resume, export + `basicsr/test.py`, DDP on CPU."""
import os
import re
import shutil

import pytest
import torch
import yaml

from conftest import basicsr_checkout, free_port, run_py, write_pairs
from tripled_basicsr.utils.io import file_sha256

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = os.path.join(REPO, 'options', 'cpu')
ENV = {'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def dump(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


def train(co, opt, name, *extra):
    r = run_py(['basicsr/train.py', '-opt', dump(co / f'{name}.yml', opt), *extra], cwd=co, env=ENV)
    assert r.returncode == 0, r.stdout[-4000:]
    return r


@pytest.fixture(scope='module')
def checkout(tmp_path_factory):
    """A BasicSR checkout with datasets/cpu/slkd_pairs and CPU teachers trained by the teacher recipes."""
    co = basicsr_checkout(tmp_path_factory.mktemp('slkd'))
    gt, lq, _ = write_pairs(str(co / 'datasets' / 'cpu' / 'slkd_pairs'), n=4, size=(48, 48), scale=1)
    (co / 'pretrained').mkdir()
    for t in ('a', 'b'):
        opt = load(os.path.join(CPU, 'slkd_teachers', f'teacher_{t}_cpu.yml'))
        opt['train']['total_iter'] = 2
        r = train(co, opt, f'teacher_{t}')
        assert 'Dataset [PairedImageDataset] - slkd_pairs is built' in r.stdout
        shutil.copy(co / 'experiments' / f'slkd_cpu_teacher_{t}' / 'models' / 'net_g_latest.pth',
                    co / 'pretrained' / f'slkd_cpu_teacher_{t}.pth')
    return co


def teacher_hashes(co):
    return {t: file_sha256(str(co / 'pretrained' / f'slkd_cpu_teacher_{t}.pth')) for t in 'ab'}


@pytest.mark.slow
def test_unet_recipe_trains_resumes_exports_and_evaluates(checkout):
    co = checkout
    hashes = teacher_hashes(co)
    opt = load(os.path.join(CPU, 'slkd_derain_cpu.yml'))
    opt['train']['scheduler']['periods'] = [6]  # the resumed run goes on to 6 iterations
    r = train(co, opt, 'derain')
    assert 'Model [SLKDModel] is created' in r.stdout
    assert 'SLKD terms on: l_pix, l_okd, l_nc, l_nc_feat, l_et, l_et_feat' in r.stdout
    assert re.search(r'l_nc: [0-9.e+-]+ l_nc_feat: .* l_et: ', r.stdout)
    exp = co / 'experiments' / 'slkd_derain_cpu'
    assert (exp / 'training_states' / '4.state').is_file() and (exp / 'models' / 'slkd_4.pth').is_file()
    assert teacher_hashes(co) == hashes

    # resume: BasicSR rewrites pretrain_network_teacher_* to the models folder; the model recovers them
    r = train(co, opt, 'derain', '--auto_resume', '--force_yml', 'train:total_iter=6')
    assert 'Resuming training from epoch' in r.stdout and 'iter: 4.' in r.stdout
    assert 'Set pretrain_network_teacher_a to' in r.stdout  # stock check_resume did rewrite it
    assert (exp / 'training_states' / '6.state').is_file()
    assert teacher_hashes(co) == hashes
    assert not (exp / 'models' / 'net_teacher_a_6.pth').exists()

    # the exported student is the bare arch; stock test.py evaluates it
    from tripled_basicsr.archs.unet_arch import TripleDUNet
    weights = exp / 'models' / 'net_g_latest.pth'
    params = torch.load(weights, weights_only=True)['params']
    net_opt = {k: v for k, v in opt['network_g'].items() if k != 'type'}
    TripleDUNet(**net_opt).load_state_dict(params, strict=True)
    test_opt = {'name': 'slkd_eval', 'model_type': 'SRModel', 'scale': 1, 'num_gpu': 0, 'manual_seed': 0,
                'datasets': {'test_1': {'name': 'pairs', 'type': 'PairedImageDataset',
                                        'dataroot_gt': 'datasets/cpu/slkd_pairs/gt',
                                        'dataroot_lq': 'datasets/cpu/slkd_pairs/lq', 'io_backend': {'type': 'disk'}}},
                'network_g': opt['network_g'],
                'path': {'pretrain_network_g': str(weights), 'strict_load_g': True, 'param_key_g': 'params'},
                'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}}
    r = run_py(['basicsr/test.py', '-opt', dump(co / 'test.yml', test_opt)], cwd=co, env=ENV)
    assert r.returncode == 0, r.stdout[-3000:]
    psnr = re.search(r'# psnr: ([0-9.]+)', r.stdout)
    assert psnr and 5 < float(psnr.group(1)) < 80


@pytest.mark.slow
def test_resume_with_changed_student_is_refused(checkout):
    co = checkout
    opt = load(os.path.join(CPU, 'slkd_deblur_cpu.yml'))
    opt['train']['total_iter'] = 2
    train(co, opt, 'deblur')
    opt['network_g']['width'] = 8
    opt['train']['total_iter'] = 4
    r = run_py(['basicsr/train.py', '-opt', dump(co / 'deblur2.yml', opt), '--auto_resume'], cwd=co, env=ENV)
    assert r.returncode != 0
    assert 'network_g differs from the student being resumed (width: 6 -> 8)' in r.stdout
    assert not (co / 'experiments' / 'slkd_deblur_cpu' / 'training_states' / '4.state').exists()


@pytest.mark.slow
def test_stock_rrdbnet_pair_in_script_form(checkout, tmp_path):
    co = checkout
    from basicsr.archs import build_network
    t = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 1, 'num_feat': 16, 'num_block': 2,
         'num_grow_ch': 8}
    s = dict(t, num_feat=4, num_block=1, num_grow_ch=4)
    for name in ('rrdb_a', 'rrdb_b'):
        torch.save({'params': build_network(dict(t)).state_dict()}, co / 'pretrained' / f'{name}.pth')
    hashes = {n: file_sha256(str(co / 'pretrained' / f'{n}.pth')) for n in ('rrdb_a', 'rrdb_b')}
    opt = load(os.path.join(CPU, 'slkd_derain_cpu.yml'))
    opt['name'] = 'slkd_rrdb'
    opt.update(network_g=s, network_teacher_a=t, network_teacher_b=t)
    opt['path'].update(pretrain_network_teacher_a='pretrained/rrdb_a.pth',
                       pretrain_network_teacher_b='pretrained/rrdb_b.pth')
    # RRDBNet x1 works at 1/4 resolution (pixel unshuffle): tap the body for L_NC and conv_hr for L_ET
    opt['slkd'].update(encoder_taps={'student': ['conv_body'], 'teacher_a': ['conv_body']},
                       decoder_taps={'student': ['conv_hr'], 'teacher_b': ['conv_hr']})
    opt['train']['nc_opt']['scales'] = 1
    opt['train']['total_iter'] = 2
    r = train(co, opt, 'rrdb')
    assert 'SLKD adapters (conv1x1): 2 tap pair(s)' in r.stdout and 'End of training' in r.stdout
    assert {n: file_sha256(str(co / 'pretrained' / f'{n}.pth')) for n in hashes} == hashes
    params = torch.load(co / 'experiments' / 'slkd_rrdb' / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    build_network(dict(s)).load_state_dict(params, strict=True)


@pytest.mark.slow
def test_distilled_set_with_curriculum_sampler(checkout):
    """options/cpu/slkd_denoise_cpu.yml: TripleDDataset + TripleDCurriculumSampler, losses fed back."""
    co = checkout
    from conftest import make_image
    import numpy as np
    from tripled_basicsr.data.distilled_format import DistilledWriter
    rng = np.random.default_rng(3)
    with DistilledWriter(str(co / 'datasets' / 'cpu' / 'tripled_x1'), scale=1, tile_size=0) as w:
        for i in range(8):  # a distilled set: curriculum labels per sample
            gt = make_image(rng, 40, 40)
            lq = np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255).astype(np.uint8)
            w.add(f'p{i:03d}', gt, lq, complexity=i / 7, uncertainty=0.5, stage=1 if i < 4 else 2, cluster=0)
    opt = load(os.path.join(CPU, 'slkd_denoise_cpu.yml'))
    r = train(co, opt, 'denoise')
    assert 'Dataset [TripleDDataset] - tripled_x1 is built' in r.stdout and 'End of training' in r.stdout
    assert 'no curriculum sampler is active' not in r.stdout
    state = torch.load(co / 'experiments' / 'slkd_denoise_cpu' / 'training_states' / '4.state', weights_only=False)
    sampler = state['tripled_sampler']
    fed = [v for v in sampler['ema_base'] if v == v and v != 0] + [p for p in sampler['pending'] if p[1]]
    assert fed, sampler  # per-sample losses reached the sampler


@pytest.mark.slow
def test_ddp_two_cpu_processes(checkout):
    co = checkout
    opt = load(os.path.join(CPU, 'slkd_derain_cpu.yml'))
    opt['name'] = 'slkd_ddp'
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    opt['train']['total_iter'] = 2
    hashes = teacher_hashes(co)
    r = run_py(['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
                'basicsr/train.py', '-opt', dump(co / 'ddp.yml', opt), '--launcher', 'pytorch'], cwd=co, env=ENV)
    assert r.returncode == 0, r.stdout[-4000:]
    assert 'World size (gpu number): 2' in r.stdout and 'End of training' in r.stdout
    assert teacher_hashes(co) == hashes
    params = torch.load(co / 'experiments' / 'slkd_ddp' / 'models' / 'net_g_latest.pth', weights_only=True)['params']
    assert not any(k.startswith('module.') for k in params)
