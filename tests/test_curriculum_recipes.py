"""Every tripled_*.yml recipe (full and CPU-sized) loads through BasicSR's ``parse_options``
(made safe by compat) and builds: dataset on a generated distilled set of the recipe's scale,
the curriculum sampler from its options, a model type that feeds losses back, and a network
whose output matches the GT patch. Every options file of the repo loads safely."""
import glob
import os
import sys

import cv2
import numpy as np
import pytest
import torch
from basicsr.archs import build_network
from basicsr.data import build_dataset
from basicsr.utils.registry import DATASET_REGISTRY, MODEL_REGISTRY

from tripled_basicsr.data.curriculum_sampler import DEFAULTS, TripleDCurriculumSampler
from tripled_basicsr.data.train_loader import build_sampler
from tripled_basicsr.models.sampler_feedback import SamplerFeedbackMixin
from tripled_basicsr.utils.io import load_yaml_safe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(REPO, 'options', 'tripled_*.yml')) +
                 glob.glob(os.path.join(REPO, 'options', 'cpu', 'tripled_*.yml')))
ALL_OPTIONS = sorted(glob.glob(os.path.join(REPO, 'options', '**', '*.yml'), recursive=True))


def test_recipes_exist():
    names = {os.path.basename(p) for p in RECIPES}
    assert {'tripled_uhd.yml', 'tripled_swinir_dn.yml', 'tripled_srvgg_x4.yml', 'tripled_uhd_cpu.yml',
            'tripled_swinir_dn_cpu.yml', 'tripled_srvgg_x4_cpu.yml'} <= names


@pytest.mark.parametrize('path', ALL_OPTIONS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, 'options')))
def test_every_options_file_loads_safely(path):
    """Our loader reads every shipped file as YAML's safe loader does (no Python tags, nothing lost),
    and each file names its job."""
    import yaml
    opt = load_yaml_safe(path)
    with open(path, encoding='utf-8') as f:
        assert opt == yaml.load(f, Loader=yaml.SafeLoader)
    assert isinstance(opt.get('name'), str) and opt['name'], f'{path}: no name'


def parse(path, root, monkeypatch):
    """BasicSR's own parse_options (wrapped by compat: safe loader, our root)."""
    from basicsr.utils.options import parse_options
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', path])
    opt, _ = parse_options(str(root), is_train=True)
    return opt


def distilled_set(root, scale, gt_size, n=8, tasks=False):
    """n samples of gt_size (LQ gt_size / scale), half stage 1, known complexity/uncertainty;
    ``tasks``: two alternating task labels (a multi-task set, for recipes with task_balance)."""
    from tripled_basicsr.data.distilled_format import DistilledWriter
    rng = np.random.default_rng(0)
    with DistilledWriter(str(root), scale=scale, tile_size=0) as w:
        for i in range(n):
            gt = cv2.GaussianBlur(rng.integers(0, 256, (gt_size, gt_size, 3)).astype(np.uint8), (5, 5), 1.5)
            lq = gt if scale == 1 else cv2.resize(gt, (gt_size // scale,) * 2, interpolation=cv2.INTER_AREA)
            extra = {'task': f't{i % 2}'} if tasks else {}
            w.add(f'r{i:03d}', gt, lq, complexity=i / (n - 1), uncertainty=0.5, stage=1 if i < n // 2 else 2,
                  cluster=0, **extra)
    return str(root)


@pytest.mark.parametrize('path', RECIPES, ids=os.path.basename)
def test_recipe_builds(path, tmp_path, monkeypatch):
    opt = parse(path, tmp_path, monkeypatch)
    scale, train = opt['scale'], opt['datasets']['train']
    assert opt['model_type'] in MODEL_REGISTRY
    assert issubclass(MODEL_REGISTRY.get(opt['model_type']), SamplerFeedbackMixin)  # feeds losses back
    assert set(opt['train'].get('curriculum') or {}) <= {'feedback_loss'}
    assert train['type'] == 'TripleDDataset' and train['io_backend'] == {'type': 'lmdb'}
    assert train['gt_size'] % scale == 0
    assert set(train['sampler']) - {'type'} <= set(DEFAULTS)

    data = distilled_set(tmp_path / 'set', scale, train['gt_size'], tasks=bool(train['sampler'].get('task_balance')))
    for ds_opt in opt['datasets'].values():
        assert ds_opt['type'] in DATASET_REGISTRY
        if ds_opt['type'] == 'TripleDDataset':
            ds_opt['dataroot'] = data
    train_set = build_dataset(train)
    item = train_set[0]
    assert tuple(item['gt'].shape) == (3, train['gt_size'], train['gt_size'])
    assert tuple(item['lq'].shape) == (3, train['gt_size'] // scale, train['gt_size'] // scale)
    for phase, ds_opt in opt['datasets'].items():
        if phase != 'train' and ds_opt['type'] == 'TripleDDataset':
            assert len(build_dataset(ds_opt)) == 8, phase

    opt.update(world_size=1, rank=0)
    sampler = build_sampler(train_set, opt)
    assert isinstance(sampler, TripleDCurriculumSampler)
    # the recipes train without the curriculum (it cost PSNR on the real-data study); turned on, it builds
    assert train['sampler']['curriculum'] is False and sampler.stage2_start == 0
    assert np.allclose(sampler.probabilities(0), 1 / len(train_set))
    with_curriculum = dict(opt, datasets=dict(opt['datasets'], train=dict(train, sampler=dict(train['sampler'],
                                                                                           curriculum=True))))
    sampler = build_sampler(train_set, with_curriculum)
    assert 0 < sampler.stage2_start <= int(opt['train']['total_iter'])
    first_step = [i for _, i in zip(range(sampler.batch_size), iter(sampler))]
    assert all(train_set.stage[i] == 1 for i in first_step)  # stage 1 first

    net = dict(opt['network_g'])
    if 'cpu' not in path and net['type'] == 'SwinIR':
        net['img_size'] = 32  # same arch, smaller attention masks: build faster
    net = build_network(net)
    if 'cpu' in path:
        with torch.no_grad():
            out = net(item['lq'][None])
        assert out.shape[-2:] == item['gt'].shape[-2:]
