"""`python -m tripled_basicsr.cost` and the slkd_*.yml recipes (>= 80 % smaller students)."""
import glob
import os
import re

import pytest
from torch import nn

from conftest import run_py
from tripled_basicsr.cost import count_flops, cost_report, main, network_cost, reduction
from tripled_basicsr.utils.io import load_yaml_safe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(REPO, 'options', 'slkd_*.yml')) +
                 glob.glob(os.path.join(REPO, 'options', 'cpu', 'slkd_*.yml')))
TEACHER_RECIPES = sorted(glob.glob(os.path.join(REPO, 'options', 'slkd_teachers', '*.yml')) +
                         glob.glob(os.path.join(REPO, 'options', 'cpu', 'slkd_teachers', '*.yml')))


def test_flops_of_a_conv_are_exact():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(conv, (1, 3, 10, 12)) == 2 * 3 * 8 * 9 * 10 * 12
    c = network_cost(conv, (10, 12))
    assert c['params'] == 3 * 8 * 9 and c['input'] == (1, 3, 10, 12)
    assert reduction(20, 100) == pytest.approx(80.0)
    with pytest.raises(ValueError):
        reduction(1, 0)


def test_recipes_exist():
    names = {os.path.basename(p) for p in RECIPES}
    assert {'slkd_derain.yml', 'slkd_deblur.yml', 'slkd_denoise.yml', 'slkd_derain_cpu.yml', 'slkd_deblur_cpu.yml',
            'slkd_denoise_cpu.yml'} <= names


@pytest.mark.parametrize('path', RECIPES, ids=os.path.basename)
def test_every_recipe_student_is_at_least_80_percent_smaller(path):
    opt = load_yaml_safe(path)
    assert opt['model_type'] == 'SLKDModel'
    rep = cost_report(opt, (64, 64), source=path)
    assert set(rep['reductions']) == {'network_teacher_a', 'network_teacher_b'}
    for red in rep['reductions'].values():
        assert red['params'] >= 80 and red['flops'] >= 80, (path, red)


def train_gt(recipe):
    return recipe['datasets']['train']['dataroot_gt']


def test_teacher_recipes_match_the_slkd_recipes():
    """Teacher recipes train exactly the arch network_teacher_* expects; teacher B is clean -> clean."""
    for path in TEACHER_RECIPES:
        t = load_yaml_safe(path)
        role = 'a' if 'teacher_a' in os.path.basename(path) else 'b'
        if path.endswith('_dn25_cpu.yml'):  # the teachers of the CPU SLKD study
            study = load_yaml_safe(os.path.join(REPO, 'options', 'study_slkd_dn25_cpu.yml'))
            spec = study['teachers'][f'teacher_{role}']
            assert spec['network'] == t['network_g'] and spec['iters'] == t['train']['total_iter']
            assert spec['pretrained'] == f'experiments/{t["name"]}/models/net_g_latest.pth'
            assert study['source']['dataroot_gt'] == train_gt(t)
            continue
        users = RECIPES if '/cpu/' not in path else [r for r in RECIPES if '/cpu/' in r]
        users = [r for r in users if ('/cpu/' in r) == ('/cpu/' in path)]
        for r in users:
            assert load_yaml_safe(r)[f'network_teacher_{role}'] == t['network_g'], (path, r)
        train = t['datasets']['train']
        if role == 'b':
            assert train['dataroot_lq'] == train['dataroot_gt'] and t['network_g']['residual'] is False
        else:
            assert train['dataroot_lq'] != train['dataroot_gt']


def test_cli_prints_reduction_lines(tmp_path, capsys):
    path = os.path.join(REPO, 'options', 'cpu', 'slkd_derain_cpu.yml')
    assert main(['-opt', path, '--size', '32', '48']) == 0
    out = capsys.readouterr().out
    assert 'input 32x48' in out and '1x3x32x48' in out
    reds = [float(v) for v in re.findall(r'params reduction ([0-9.]+) %', out)]
    flops = [float(v) for v in re.findall(r'FLOPs reduction ([0-9.]+) %', out)]
    assert len(reds) == len(flops) == 2 and min(reds + flops) >= 80


def test_cli_bad_input(tmp_path, capsys):
    bad = tmp_path / 'x.yml'
    bad.write_text('network_teacher_a: {type: TripleDUNet}\n')
    assert main(['-opt', str(bad)]) == 2
    assert 'has no network_g section' in capsys.readouterr().err
    bad.write_text('network_g: {type: NoSuchArch}\n')
    assert main(['-opt', str(bad)]) == 2
    assert "cannot build network_g (type 'NoSuchArch')" in capsys.readouterr().err
    assert main(['-opt', str(tmp_path / 'missing.yml')]) == 2
    assert 'does not exist' in capsys.readouterr().err


@pytest.mark.slow
def test_module_entry_point(tmp_path):
    r = run_py(['-m', 'tripled_basicsr.cost', '-opt', os.path.join(REPO, 'options', 'slkd_denoise.yml'), '--size',
                '64', '64'], cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:]
    assert re.search(r'params reduction 9[0-9]\.[0-9] %', r.stdout) and 'FLOPs reduction' in r.stdout


def test_every_student_recipe_has_its_teacher_recipes():
    """Each GPU SLKD recipe's teacher files are the outputs of shipped teacher recipes (by name),
    and teacher B's is the clean -> clean twin of teacher A's data."""
    names = {load_yaml_safe(p)['name']: load_yaml_safe(p) for p in TEACHER_RECIPES}
    for r in [p for p in RECIPES if '/cpu/' not in p]:
        opt = load_yaml_safe(r)
        a, b = (opt['path'][f'pretrain_network_teacher_{t}'].split('/')[1] for t in 'ab')
        assert a in names and b in names, r
        ta, tb = names[a]['datasets']['train'], names[b]['datasets']['train']
        assert tb['dataroot_gt'] == tb['dataroot_lq'] == ta['dataroot_gt'] != ta['dataroot_lq'], r
