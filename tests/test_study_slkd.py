"""The SLKD study (``mode: slkd``, tripled_basicsr/study/slkd.py): teachers once, students per arm
and seed through SLKDModel, paired verdicts, resume, --jobs, clear option errors."""
import json
import os

import numpy as np
import pytest
from test_study import _pairs

from tripled_basicsr.study import StudyError, run_study
from tripled_basicsr.study.runner import open_options
from tripled_basicsr.study.slkd import (SHIPPED_TERMS, markdown_slkd, presets, resolve_slkd_arm, summarize_slkd)

STUDENT = {'type': 'TripleDUNet', 'width': 4, 'levels': 2, 'enc_blocks': 1, 'middle_blocks': 1, 'dec_blocks': 1}
TEACHER = {'type': 'TripleDUNet', 'width': 8, 'levels': 2, 'enc_blocks': 1, 'middle_blocks': 1, 'dec_blocks': 1}
TAPS = {'encoder_taps': {'student': ['enc1'], 'teacher_a': ['enc1']},
        'decoder_taps': {'student': ['dec1'], 'teacher_b': ['dec1']}}


def _opt(tmp, **over):
    opt = {'mode': 'slkd', 'name': 'tinyslkd', 'study_dir': str(tmp / 'study'),
           'source': {'dataroot_gt': str(tmp / 'pool' / 'gt'), 'dataroot_lq': str(tmp / 'pool' / 'lq')},
           'seeds': [0, 1],
           'teachers': {'teacher_a': {'network': dict(TEACHER), 'iters': 4},
                        'teacher_b': {'network': dict(TEACHER, residual=False), 'iters': 2}},
           'student': dict(STUDENT), 'slkd': TAPS,
           'terms': {k: v for k, v in SHIPPED_TERMS.items() if k not in ('nc_opt',)},  # BRISQUE needs >= 13 px maps
           'training': {'iters': 2, 'eval_every': 1, 'batch_size': 2, 'gt_size': 32, 'min_batches_per_epoch': 2},
           'test_sets': [{'name': 'val', 'dataroot_gt': str(tmp / 'val' / 'gt'),
                          'dataroot_lq': str(tmp / 'val' / 'lq')}],
           'device': 'cpu', 'cost_size': [32, 32]}
    opt.update(over)
    return opt


def test_presets_and_arm_resolution():
    arms = presets(SHIPPED_TERMS)
    assert list(arms)[:3] == ['alone', 'output_kd', 'slkd']
    assert {a for a in arms if a.startswith('slkd_no_')} == {'slkd_no_okd', 'slkd_no_nc', 'slkd_no_nc_feat',
                                                             'slkd_no_et', 'slkd_no_et_feat'}
    alone = resolve_slkd_arm('alone', {}, SHIPPED_TERMS)['terms']
    assert [k for k, v in alone.items() if v] == ['pixel_opt']
    no_et = resolve_slkd_arm('slkd_no_et', {}, SHIPPED_TERMS)['terms']
    assert no_et['et_opt'] is None and no_et['dec_feat_opt'] == SHIPPED_TERMS['dec_feat_opt']
    mine = resolve_slkd_arm('mine', {'mine': {'base': 'slkd_no_et', 'terms': {'nc_opt': None},
                                              'slkd': {'adapter': 'none'}}}, SHIPPED_TERMS)
    assert mine['terms']['nc_opt'] is None and mine['terms']['et_opt'] is None and mine['slkd'] == {'adapter': 'none'}
    with pytest.raises(StudyError, match=r"unknown arm 'slkdd'. Built in: alone, output_kd, slkd"):
        resolve_slkd_arm('slkdd', {}, SHIPPED_TERMS)
    with pytest.raises(StudyError, match=r"unknown loss term\(s\) \['nc'\]"):
        resolve_slkd_arm('x', {'x': {'terms': {'nc': None}}}, SHIPPED_TERMS)
    with pytest.raises(StudyError, match='base chain loops'):
        resolve_slkd_arm('x', {'x': {'base': 'y'}, 'y': {'base': 'x'}}, SHIPPED_TERMS)


def test_shipped_terms_are_the_recipes_terms():
    from tripled_basicsr.models.slkd_model import LOSS_TERMS
    from tripled_basicsr.utils.io import load_yaml_safe
    for name in ('slkd_denoise', 'slkd_derain', 'slkd_deblur'):
        train = load_yaml_safe(f'options/{name}.yml')['train']
        got = {k: {kk: vv for kk, vv in train[k].items() if kk != 'reduction'} for k in LOSS_TERMS if train.get(k)}
        want = {k: {kk: vv for kk, vv in v.items() if kk != 'reduction'} for k, v in SHIPPED_TERMS.items()}
        assert got == want, name


def test_options_errors_name_the_key(tmp_path):
    with pytest.raises(StudyError, match=r'Unknown option teachers.teacher_a.iter. Did you mean iters\?'):
        open_options(_opt(tmp_path, teachers={'teacher_a': {'network': TEACHER, 'iter': 3}}))
    with pytest.raises(StudyError, match=r'Unknown option teachers.teacher_c. Did you mean teacher_b, teacher_a'):
        open_options(_opt(tmp_path, teachers={'teacher_c': {}}))
    with pytest.raises(StudyError, match='student is required'):
        open_options(_opt(tmp_path, student=None))
    with pytest.raises(StudyError, match=r"references: 'output_kd' is not one of the arms \['alone', 'slkd'\]"):
        open_options(_opt(tmp_path, arms=['alone', 'slkd']))
    with pytest.raises(StudyError, match=r"mode must be one of subsets, slkd; got 'slkdd'"):
        open_options(_opt(tmp_path, mode='slkdd'))
    # an arm whose side has no taps, a tap that does not exist: before anything is written
    with pytest.raises(StudyError, match=r'arm slkd: slkd.decoder_taps is required by train.et_opt'):
        open_options(_opt(tmp_path, slkd={'encoder_taps': TAPS['encoder_taps']}))
    opt, study = open_options(_opt(tmp_path, slkd={**TAPS, 'decoder_taps': {'student': ['dec9'],
                                                                          'teacher_b': ['dec1']}}))
    with pytest.raises(StudyError, match=r"slkd.decoder_taps.student \(arm slkd\): TripleDUNet has no module named 'dec9'"):
        study.check()
    assert not os.path.exists(opt['study_dir'])


def test_plan_trains_each_needed_teacher_once_first(tmp_path):
    _, study = open_options(_opt(tmp_path))
    ids = [r.id for r in study.runs]
    assert ids[:2] == ['teacher_a', 'teacher_b']
    assert ids[2:] == [f'{a}_s{s}' for s in (0, 1) for a in ('alone', 'output_kd', 'slkd', 'slkd_no_okd',
                                                             'slkd_no_nc_feat', 'slkd_no_et', 'slkd_no_et_feat')]
    _, study = open_options(_opt(tmp_path, arms=['alone', 'output_kd'], references=['alone']))
    assert [r.id for r in study.runs] == ['teacher_a', 'alone_s0', 'output_kd_s0', 'alone_s1', 'output_kd_s1']
    opt = study.train_options(study.runs[2], {'units': 4})
    assert opt['model_type'] == 'SLKDModel' and opt['network_teacher_a'] == TEACHER and 'network_teacher_b' not in opt
    assert opt['path']['pretrain_network_teacher_a'].endswith('experiments/tinyslkd_teacher_a/models/'
                                                              'net_g_latest.pth')
    assert opt['train']['output_kd_opt'] == SHIPPED_TERMS['output_kd_opt'] and opt['train']['et_opt'] is None


def test_summary_pairs_on_seed_and_calls_ties():
    def rec(arm, seed, psnr, role='student'):
        return {'arm': arm, 'role': role, 'seed': seed, 'final': {'s': {'psnr': psnr, 'ssim': 0.5}},
                'train_s': 10.0, 'curve': {}}
    records = [rec('teacher_a', 0, 30.0, 'teacher')]
    records += [rec('alone', s, 28.0 + 0.1 * s) for s in range(3)]
    records += [rec('output_kd', s, 28.3 + 0.1 * s) for s in range(3)]  # +0.3 on every seed, spread 0.1
    records += [rec('slkd', s, 28.02 + 0.1 * s) for s in range(3)]  # +0.02: inside the spread
    summ = summarize_slkd(records, {'s': {'psnr': 20.0}}, ['alone', 'output_kd', 'slkd'], ['alone', 'output_kd'])
    v = {(c['arm'], c['vs']): c for c in summ['comparisons']}
    assert set(v) == {('output_kd', 'alone'), ('slkd', 'alone'), ('slkd', 'output_kd')}
    assert v[('output_kd', 'alone')]['verdict'] == 'better'
    assert v[('output_kd', 'alone')]['diffs'] == pytest.approx([0.3] * 3)
    assert v[('slkd', 'alone')]['verdict'] == 'tie' and v[('slkd', 'output_kd')]['verdict'] == 'worse'
    row = {r['arm']: r for r in summ['rows']}
    assert row['alone']['sets']['s']['gap_to_teacher_a'] == pytest.approx(1.9)
    md = markdown_slkd(summ, {'name': 'n', 'description': '', 'setting': ''})
    assert '| output_kd | alone | s | +0.300 | +0.300 +0.300 +0.300 |' in md


def test_study_trains_teachers_once_resumes_and_reports(tmp_path):
    _pairs(str(tmp_path / 'pool'), 6, 40, 0)
    _pairs(str(tmp_path / 'val'), 2, 32, 1)
    opt = _opt(tmp_path, arms=['alone', 'output_kd', 'slkd'])
    md = run_study(opt, jobs=2)  # workers: a student waits for the teachers its arm needs
    sd = tmp_path / 'study'
    assert '| output_kd | alone | val |' in md and '| slkd | output_kd | val |' in md
    assert 'Student vs teacher A: params' in md
    from tripled_basicsr.utils.io import load_yaml_safe
    tb = load_yaml_safe(str(sd / 'runs' / 'teacher_b' / 'train.yml'))
    assert tb['datasets']['train']['dataroot_lq'] == tb['datasets']['train']['dataroot_gt']  # clean -> clean
    assert tb['network_g']['residual'] is False and tb['train']['total_iter'] == 2
    st = load_yaml_safe(str(sd / 'runs' / 'slkd_s1' / 'train.yml'))
    assert st['path']['pretrain_network_teacher_b'] == str(sd / 'experiments' / 'tinyslkd_teacher_b' / 'models' /
                                                           'net_g_latest.pth')
    res = json.loads((sd / 'report' / 'results.json').read_text())
    rows = {r['arm']: r for r in res['summary']['rows']}
    assert set(rows) == {'teacher_a', 'teacher_b', 'alone', 'output_kd', 'slkd'}
    assert rows['alone']['sets']['val']['n'] == 2
    assert os.path.isfile(sd / 'report' / 'final_psnr.png')
    # teacher B is scored with the clean images as input; every other run on the test set as it is
    _, study = open_options(opt)
    pairs = [('k', np.full((4, 4, 3), 51, np.uint8), np.zeros((4, 4, 3), np.float32))]
    assert study.eval_pairs(study.runs[1], pairs)[0][2] == pytest.approx(np.full((4, 4, 3), 0.2))
    assert study.eval_pairs(study.runs[2], pairs) is pairs
    # a second command trains nothing and gives the same table
    mtimes = {p: os.path.getmtime(p) for p in (sd / 'experiments').rglob('net_g_latest.pth')}
    assert run_study(opt).split('\n')[4:] == md.split('\n')[4:]
    assert mtimes == {p: os.path.getmtime(p) for p in (sd / 'experiments').rglob('net_g_latest.pth')}
    # a changed teacher is a changed study: its students refuse to be reused silently
    with pytest.raises(StudyError, match='run teacher_a finished earlier with different options'):
        run_study(_opt(tmp_path, arms=['alone', 'output_kd', 'slkd'],
                       teachers={'teacher_a': {'network': TEACHER, 'iters': 3},
                                 'teacher_b': {'network': dict(TEACHER, residual=False), 'iters': 2}}))


def test_piqe_weighted_kd_weights_the_distorted_blocks():
    import torch

    from tripled_basicsr.losses.iqa_loss import PIQEWeightedL1Loss
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing='ij')
    teacher = (0.5 + 0.3 * torch.sin(12 * xx + 5 * yy)).expand(2, 3, 96, 96).clone()
    student = teacher.clone()
    student[:, :, :32, :32] += 0.08 * torch.randn(2, 1, 32, 32)  # noisy where the teacher is clean
    loss = PIQEWeightedL1Loss(gain=4)
    w = loss.block_weights(student, teacher)
    assert w.shape == (2, 1, 96, 96) and w.mean().item() == pytest.approx(1.0, abs=1e-5)
    assert w[:, :, :32, :32].mean() > 2 * w[:, :, 48:, 48:].mean()
    plain = (student - teacher).abs().mean()
    assert loss(student, teacher) > 2 * plain  # the error sits where the weight is
    assert PIQEWeightedL1Loss(gain=0)(student, teacher).item() == pytest.approx(plain.item(), rel=1e-5)
    x = student.clone().requires_grad_(True)
    loss(x, teacher).backward()
    assert x.grad[:, :, :32, :32].abs().mean() > x.grad[:, :, 48:, 48:].abs().mean()
    with pytest.raises(ValueError, match='gain must be a number >= 0'):
        PIQEWeightedL1Loss(gain=-1)


def test_iqa_feature_losses_compare_evenly_spaced_channels():
    import torch

    from tripled_basicsr.losses.iqa_loss import BRISQUEFeatureLoss, PIQEFeatureLoss
    torch.manual_seed(0)
    a, b = torch.rand(2, 16, 32, 32), torch.rand(2, 16, 32, 32)
    for cls in (BRISQUEFeatureLoss, PIQEFeatureLoss):
        picked = cls(channels=4, reduction='none')(a, b)
        full = cls(reduction='none')(a, b)
        assert picked.shape[1] == 4
        assert torch.allclose(picked, full[:, [0, 5, 10, 15]])  # linspace(0, 15, 4) rounded
        assert torch.allclose(cls(channels=99, reduction='none')(a, b), full)
        with pytest.raises(ValueError, match='channels must be a positive integer'):
            cls(channels=0)
