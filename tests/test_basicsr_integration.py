"""Stock BasicSR entry points see the plugin: script form from a checkout, -m forms, ours."""
import os
import re
import sys

import pytest
import torch
import yaml

from conftest import TINY_MSRRESNET_X2, basicsr_checkout, free_port, run_py, tiny_sr_train_opt, write_packed_pairs
from tripled_basicsr import compat


def train_opt(dataroot, name, total_iter=4):
    opt = tiny_sr_train_opt(name, {
        'train': {'name': 'train', 'type': 'TripleDDataset', 'dataroot': dataroot, 'io_backend': {'type': 'lmdb'},
                  'gt_size': 32, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 1,
                  'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None},
        'val': {'name': 'val', 'type': 'TripleDDataset', 'dataroot': dataroot, 'io_backend': {'type': 'lmdb'}},
    }, total_iter)
    opt['val'] = {'val_freq': 2, 'save_img': False,
                  'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False}}}
    return opt


def eval_opt(dataroot, name, weights):
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {'test_1': {'name': 'packed', 'type': 'TripleDDataset', 'dataroot': dataroot,
                                'io_backend': {'type': 'lmdb'}}},
        'network_g': dict(TINY_MSRRESNET_X2),
        'path': {'pretrain_network_g': weights, 'strict_load_g': True, 'param_key_g': 'params'},
        'val': {'save_img': True, 'suffix': None,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2, 'test_y_channel': False}}},
    }


@pytest.fixture(scope='module')
def packed(tmp_path_factory):
    return write_packed_pairs(tmp_path_factory.mktemp('data'), tile_size=32)[1]


def dump(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f)
    return str(path)


def test_basicsr_checkout_script_train_then_test(tmp_path, packed):
    """`python basicsr/train.py -opt X.yml` from a checkout, then `basicsr/test.py` on the result."""
    co = basicsr_checkout(tmp_path)
    r = run_py(['basicsr/train.py', '-opt', dump(co / 'train.yml', train_opt(packed, 'script_run'))], cwd=co)
    assert r.returncode == 0, r.stdout[-3000:]
    assert 'Dataset [TripleDDataset] - train is built' in r.stdout
    exp = co / 'experiments' / 'script_run'
    assert (exp / 'models' / 'net_g_latest.pth').is_file() and (exp / 'training_states' / '4.state').is_file()
    weights = str(exp / 'models' / 'net_g_latest.pth')
    r = run_py(['basicsr/test.py', '-opt', dump(co / 'test.yml', eval_opt(packed, 'script_test', weights))], cwd=co)
    assert r.returncode == 0, r.stdout[-3000:]
    psnr = re.search(r'# psnr: ([0-9.]+)', r.stdout)
    assert psnr and 5 < float(psnr.group(1)) < 60
    assert len(os.listdir(co / 'results' / 'script_test' / 'visualization' / 'packed')) == 4


def test_module_forms_root_at_cwd_and_cpu_auto_resume(tmp_path, packed):
    """`python -m basicsr.train` and `python -m tripled_basicsr.train` put experiments/ under the cwd,
    and --auto_resume works on a CPU-only machine (stock BasicSR calls torch.cuda there)."""
    site = os.path.dirname(os.path.dirname(__import__('basicsr').__file__))
    yml = dump(tmp_path / 'a.yml', train_opt(packed, 'mod_run', total_iter=2))
    r = run_py(['-m', 'basicsr.train', '-opt', yml], cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:]
    assert (tmp_path / 'experiments' / 'mod_run' / 'training_states' / '2.state').is_file()
    assert not os.path.exists(os.path.join(site, 'experiments', 'mod_run'))
    r = run_py(['-m', 'tripled_basicsr.train', '-opt', yml, '--auto_resume', '--force_yml', 'train:total_iter=4'],
               cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:]
    assert 'Resuming training from epoch' in r.stdout and 'iter: 2.' in r.stdout
    assert (tmp_path / 'experiments' / 'mod_run' / 'training_states' / '4.state').is_file()
    state = torch.load(tmp_path / 'experiments' / 'mod_run' / 'training_states' / '4.state', weights_only=False)
    assert state['iter'] == 4


def test_autoload_is_lazy_and_can_be_switched_off(tmp_path):
    probe = ('import sys; print("finder", any(type(f).__name__ == "TripleDAutoloadFinder" for f in sys.meta_path));'
             'print("heavy", "torch" in sys.modules or "tripled_basicsr" in sys.modules)')
    r = run_py(['-c', probe], cwd=tmp_path)
    assert 'finder True' in r.stdout and 'heavy False' in r.stdout, r.stdout
    r = run_py(['-c', probe], cwd=tmp_path, env={'TRIPLED_BASICSR_AUTOLOAD': '0'})
    assert 'finder False' in r.stdout, r.stdout
    r = run_py(['-c', 'import basicsr; from basicsr.utils.registry import DATASET_REGISTRY as R;'
                'print("registered", "TripleDDataset" in R)'], cwd=tmp_path)
    assert 'registered True' in r.stdout, r.stdout


def test_compat_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv('TRIPLED_BASICSR_ROOT', raising=False)
    monkeypatch.chdir(tmp_path)
    assert compat.resolve_root('/x/lib/python3.11/site-packages') == str(tmp_path)
    assert compat.resolve_root('/home/me/BasicSR') == '/home/me/BasicSR'
    monkeypatch.setenv('TRIPLED_BASICSR_ROOT', '/data/runs')
    assert compat.resolve_root('/home/me/BasicSR') == '/data/runs'
    opt = compat._RootPinnedOptions({'root_path': '/good'})
    opt['root_path'] = '/site-packages'
    assert opt['root_path'] == '/good'


def test_functional_tensor_alias_provides_rgb_to_grayscale():
    from torchvision.transforms.functional_tensor import rgb_to_grayscale
    img = torch.rand(1, 3, 4, 4)
    assert rgb_to_grayscale(img).shape == (1, 1, 4, 4)
    assert sys.modules['torchvision.transforms.functional_tensor'].rgb_to_grayscale is rgb_to_grayscale


def test_ddp_training_on_cpu_with_gloo(tmp_path, packed):
    """`torchrun --nproc_per_node=2 -m tripled_basicsr.train --launcher pytorch` on CPU: stock BasicSR
    would ask for NCCL and CUDA devices; compat switches to gloo and CPU DDP."""
    opt = train_opt(packed, 'ddp_run', total_iter=2)
    opt['datasets']['train']['batch_size_per_gpu'] = 1
    yml = dump(tmp_path / 'ddp.yml', opt)
    r = run_py(['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
                '-m', 'tripled_basicsr.train', '-opt', yml, '--launcher', 'pytorch'], cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:]
    assert 'World size (gpu number): 2' in r.stdout and 'End of training' in r.stdout
    assert (tmp_path / 'experiments' / 'ddp_run' / 'models' / 'net_g_latest.pth').is_file()


def test_uhd_test_recipe_matches_training_recipe():
    """options/test_tripled_uhd.yml must load what options/tripled_uhd.yml trains."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(repo, 'options', 'tripled_uhd.yml')) as f:
        train = yaml.safe_load(f)
    with open(os.path.join(repo, 'options', 'test_tripled_uhd.yml')) as f:
        test = yaml.safe_load(f)
    assert test['network_g'] == train['network_g']
    assert test['scale'] == train['scale']
    assert test['path']['pretrain_network_g'] == f'experiments/{train["name"]}/models/net_g_latest.pth'
    from basicsr.utils.registry import METRIC_REGISTRY
    assert all(m['type'] in METRIC_REGISTRY for m in test['val']['metrics'].values())
