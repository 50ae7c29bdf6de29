"""Every tripled_*.yml recipe (full and CPU-sized) names registered components with valid keys."""
import glob
import os

import pytest
import yaml
from basicsr.archs import build_network
from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY

from tripled_basicsr.data.curriculum_sampler import DEFAULTS, resolve_iteration
from tripled_basicsr.data.sampler_registry import SAMPLER_REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(REPO, 'options', 'tripled_*.yml')) +
                 glob.glob(os.path.join(REPO, 'options', 'cpu', 'tripled_*.yml')))


def test_recipes_exist():
    names = {os.path.basename(p) for p in RECIPES}
    assert {'tripled_uhd.yml', 'tripled_swinir_dn.yml', 'tripled_srvgg_x4.yml', 'tripled_uhd_cpu.yml',
            'tripled_swinir_dn_cpu.yml', 'tripled_srvgg_x4_cpu.yml'} <= names


@pytest.mark.parametrize('path', RECIPES, ids=os.path.basename)
def test_recipe(path):
    with open(path) as f:
        opt = yaml.load(f, Loader=yaml.SafeLoader)
    assert opt['model_type'] in MODEL_REGISTRY
    train = opt['datasets']['train']
    assert train['type'] == 'TripleDDataset' and train['io_backend'] == {'type': 'lmdb'}
    sampler = train['sampler']
    assert sampler['type'] in SAMPLER_REGISTRY
    assert set(sampler) - {'type'} <= set(DEFAULTS)
    total = int(float(opt['train']['total_iter']))
    resolve_iteration(sampler.get('stage2_start', DEFAULTS['stage2_start']), total, 'stage2_start')
    assert set(opt['train'].get('curriculum') or {}) <= {'feedback_loss'}
    for phase, ds in opt['datasets'].items():
        assert ds['type'] in DATASET_REGISTRY, phase
    net = dict(opt['network_g'])
    if 'cpu' not in path and net['type'] == 'SwinIR':
        net['img_size'] = 32  # same arch, smaller attention masks: build faster
    build_network(net)
    assert train['gt_size'] % opt['scale'] == 0
