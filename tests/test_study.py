import json
import os

import cv2
import numpy as np
import pytest

from tripled_basicsr.study import StudyError, merge_options, plan, run_study
from tripled_basicsr.study import stats
from tripled_basicsr.study.arms import ArmError, resolve_arm
from tripled_basicsr.study.report import markdown, summarize
from tripled_basicsr.study.subsets import crop_boxes, write_random, write_random_crops
from tripled_basicsr.utils.io import tree_fingerprint

NET = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_conv': 1, 'upscale': 1,
       'act_type': 'prelu'}


# ----------------------------------------------------------------------------- pure maths
def test_mean_std_and_retention():
    assert stats.mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5), 2)
    assert stats.mean_std([5.0]) == (5.0, 0.0, 1)
    assert stats.mean_std([]) == (None, None, 0)
    assert stats.gain_retention(29.0, 30.0, 20.0) == pytest.approx(0.9)
    assert stats.gain_retention(31.0, 30.0, 20.0) == pytest.approx(1.1)
    assert stats.gain_retention(25.0, 20.0, 20.0) is None  # full did not beat the input
    assert stats.gain_retention(None, 30.0, 20.0) is None


def test_sign_flip_exact_and_paired_test():
    # 3 positive differences: 2 of the 8 sign patterns are as extreme -> p = 0.25
    assert stats.sign_flip_p([0.1, 0.2, 0.3]) == pytest.approx(0.25)
    assert stats.sign_flip_p([0.1, -0.1]) == pytest.approx(1.0)
    t = stats.paired_test([1.0, 2.0, 3.5], [0.5, 1.0, 2.0], use_scipy=False)
    assert t['method'].startswith('sign-flip') and t['mean_diff'] == pytest.approx(1.0) and t['p'] == 0.25
    ts = stats.paired_test([1.0, 2.0, 3.5], [0.5, 1.0, 2.0])
    from scipy import stats as sst
    assert ts['p'] == pytest.approx(sst.ttest_rel([1.0, 2.0, 3.5], [0.5, 1.0, 2.0]).pvalue)
    assert stats.paired_test([1.0], [0.0])['p'] == 1.0  # one seed: no evidence


def test_tie_rule():
    assert stats.verdict(0.1, 0.27, 0.05, 3) == 'tie'  # inside random's seed spread
    assert stats.verdict(0.3, 0.27, 0.05, 3) == 'better'
    assert stats.verdict(-0.3, 0.1, 0.05, 3) == 'worse'
    assert stats.verdict(1.0, 0.0, 0.0, 1) == 'tie'  # one seed
    assert stats.verdict(0.3, 0.1, 0.1, 3, alpha=0.05, p=0.2) == 'tie'


def test_time_to_reach_and_quality():
    assert stats.time_to_reach([10, 20, 30], [25, 27, 28], 26) == pytest.approx(15.0)
    assert stats.time_to_reach([10, 20], [25, 27], 28) is None
    assert stats.time_to_reach([10, 20], [25, 27], 22, start=(0, 20)) == pytest.approx(4.0)
    # subset: 5 s distillation + reaches its final 27.0 at 20 s; full reaches 27.0 at 15 s
    r = stats.time_to_quality(5.0, [10, 20], [26.0, 27.0], [10, 20], [26.0, 28.0])
    assert r['target'] == 27.0 and r['arm_s'] == pytest.approx(25.0) and r['full_s'] == pytest.approx(15.0)
    assert r['speedup'] == pytest.approx(0.6)
    r = stats.time_to_quality(0.0, [10], [29.0], [10, 20], [26.0, 28.0])
    assert r['full_s'] is None and r['speedup'] is None and r['full_total_s'] == 20
    # to the full pool's final 28.0 minus 0.1 dB: the arm (27.9 at 20 s) gets there at 19.5 s + 5 s
    # preparation, full training at 14.75 s; an arm that stays below is "never" (None), not its last time
    r = stats.time_to_full_quality(5.0, [10, 20], [26.0, 27.9], [10, 20], [26.0, 28.0])
    assert r['full_target'] == pytest.approx(27.9) and r['to_full_arm_s'] == pytest.approx(25.0)
    assert r['to_full_full_s'] == pytest.approx(19.5) and r['to_full_speedup'] == pytest.approx(19.5 / 25.0)
    r = stats.time_to_full_quality(5.0, [10, 20], [26.0, 27.8], [10, 20], [26.0, 28.0], start_value=20.0)
    assert r['to_full_arm_s'] is None and r['to_full_speedup'] is None and r['to_full_full_s'] == pytest.approx(19.5)


def test_budget_rules():
    assert stats.crop_count(400 * 180 * 180, 0.01, 60) == 36
    assert stats.crop_count(100, 0.01, 60) == 1
    # one rounding for every arm: 39.4 crops are 40 for the study's random crops and for the distiller
    from tripled_basicsr.distill.crops import pixel_budget
    total = int(39.4 * 96 * 96 / 0.01)
    assert stats.crop_count(total, 0.01, 96) == pixel_budget({'ratio': 0.01}, total, 96, 10 ** 6) == 40
    # 3 images, batch 8: one epoch must still hold >= min_batches full batches (drop_last)
    assert stats.enlarge_ratio(3, 8, 1, 1) == 3 and 3 * 3 >= 8
    assert stats.enlarge_ratio(3, 8, 1, 50) * 3 >= 8 * 50
    assert stats.enlarge_ratio(10000, 8, 1, 50) == 1


def test_crop_boxes_budget_alignment_and_bounds():
    shapes = [(40, 50), (30, 30), (10, 10)]
    boxes = crop_boxes(shapes, 0.5, 12, 4, seed=3)
    assert len(boxes) == stats.crop_count(40 * 50 + 900 + 100, 0.5, 12)
    for i, top, left in boxes:
        h, w = shapes[i]
        assert i != 2 and top % 4 == 0 and left % 4 == 0 and top + 12 <= h and left + 12 <= w
    assert crop_boxes(shapes, 0.5, 12, 4, seed=3) == boxes
    assert crop_boxes(shapes, 0.5, 12, 4, seed=4) != boxes
    with pytest.raises(ValueError, match='multiple of the scale'):
        crop_boxes(shapes, 0.5, 10, 4, seed=0)
    with pytest.raises(ValueError, match='larger than every source image'):
        crop_boxes(shapes, 0.5, 64, 4, seed=0)


# ----------------------------------------------------------------------------- arms and options
def test_arms_resolve_and_yaml_arms():
    trip = resolve_arm('tripled')  # the product: distiller defaults, no curriculum (it cost PSNR, docs/method.md)
    assert trip['kind'] == 'distill' and trip['curriculum'] is False and trip['distill'] == {}
    assert resolve_arm('tripled_curriculum')['curriculum'] is True
    assert resolve_arm('calibrated')['distill'] == {'calibration': {'enabled': True}}
    assert resolve_arm('stratified')['distill'] == {'selection': {'type': 'tripled'}}
    assert resolve_arm('uncertainty_only')['distill']['selection'] == {'type': 'tripled', 'complexity_weight': 0.0}
    top = resolve_arm('selection:top_complexity', selection_types={'tripled', 'random', 'top_complexity'})
    assert top['distill']['selection']['type'] == 'top_complexity' and not top['curriculum']
    mine = resolve_arm('hot', {'hot': {'base': 'tripled_curriculum', 'distill': {'selection': {'temperature': 0.5}}}})
    assert mine['curriculum'] and mine['distill']['selection']['temperature'] == 0.5
    with pytest.raises(ArmError, match="unknown arm 'tripledd'"):
        resolve_arm('tripledd')
    with pytest.raises(ArmError, match="selection type 'nope' is not registered"):
        resolve_arm('selection:nope', selection_types={'tripled'})
    with pytest.raises(ArmError, match='loops'):
        resolve_arm('a', {'a': {'base': 'b'}, 'b': {'base': 'a'}})
    with pytest.raises(ArmError, match="unknown key"):
        resolve_arm('x', {'x': {'kind': 'random', 'ratio': 3}})


def _opt(tmp, **over):
    opt = {'name': 'tiny', 'study_dir': str(tmp / 'study'),
           'source': {'dataroot_gt': str(tmp / 'pool' / 'gt'), 'dataroot_lq': str(tmp / 'pool' / 'lq')},
           'ratios': [0.25], 'seeds': [0, 1], 'arms': ['full', 'random', 'random_crops'],
           'training': {'iters': 4, 'eval_every': 2, 'batch_size': 2, 'gt_size': 16, 'num_worker': 0,
                        'min_batches_per_epoch': 2, 'basicsr': {'network_g': dict(NET)}},
           'test_sets': [{'name': 'val', 'dataroot_gt': str(tmp / 'val' / 'gt'),
                          'dataroot_lq': str(tmp / 'val' / 'lq')}],
           'device': 'cpu'}
    opt.update(over)
    return opt


def test_options_errors_and_plan(tmp_path):
    with pytest.raises(StudyError, match=r'Unknown option training.iter. Did you mean iters\? See docs/reference/study.md'):
        merge_options(_opt(tmp_path, training={'iter': 3, 'basicsr': {'network_g': NET}}))
    with pytest.raises(StudyError, match=r'ratios: every ratio must be in \(0, 1\]; ratios\[0\] must be a number'):
        merge_options(_opt(tmp_path, ratios=[0, 0.1]))
    with pytest.raises(StudyError, match=r"ratios\[1\] must be a number; got '2%'"):
        merge_options(_opt(tmp_path, ratios=[0.1, '2%'], training={'basicsr': {'network_g': NET}}))
    # YAML 1.1 reads 1e-2 as text: accepted as the distiller accepts it
    assert merge_options(_opt(tmp_path, ratios=['1e-2'], training={'basicsr': {'network_g': NET}}))['ratios'] == [0.01]
    with pytest.raises(StudyError, match='test_sets is empty'):
        merge_options(_opt(tmp_path, test_sets=[]))
    with pytest.raises(StudyError, match='network_g is required'):
        merge_options(_opt(tmp_path, training={'iters': 2}))
    opt = merge_options(_opt(tmp_path, ratios=[0.01, 0.05], arms=['full', 'random', 'tripled']))
    ids = [r.id for r in plan(opt)]
    assert ids[:2] == ['full_s0', 'full_s1']  # full once per seed, not per ratio
    assert ids[2:5] == ['random_1pct_s0', 'tripled_1pct_s0', 'random_5pct_s0']
    assert len(ids) == 2 + 2 * 2 * 2


def _pairs(root, n, size, seed):
    rng = np.random.default_rng(seed)
    for d in ('gt', 'lq'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for i in range(n):
        yy, xx = np.mgrid[0:size, 0:size] / size
        wave = np.sin(2 * np.pi * rng.uniform(2, 6) * (xx * np.cos(i) + yy * np.sin(i)))[..., None]
        gt = (np.clip(0.5 + 0.3 * wave * rng.uniform(0.3, 1, 3), 0, 1) * 255 + 0.5).astype(np.uint8)
        lq = np.clip(gt + rng.normal(0, 15, gt.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(os.path.join(root, 'gt', f'im{i:03d}.png'), gt)
        cv2.imwrite(os.path.join(root, 'lq', f'im{i:03d}.png'), lq)


def test_random_and_crop_subsets_round_trip(tmp_path):
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    _pairs(str(tmp_path / 'pool'), 8, 40, 0)
    src = {'dataroot_gt': str(tmp_path / 'pool' / 'gt'), 'dataroot_lq': str(tmp_path / 'pool' / 'lq'), 'scale': 1}
    before = tree_fingerprint(str(tmp_path / 'pool'))
    info = write_random(src, str(tmp_path / 'r'), 0.25, seed=1)
    assert info['units'] == 2
    info = write_random_crops(src, str(tmp_path / 'c'), 0.25, seed=1, crop=20)
    assert info['units'] == stats.crop_count(8 * 40 * 40, 0.25, 20)
    with open(tmp_path / 'c' / 'tripled_meta.json') as f:
        meta = json.load(f)
    ds = TripleDDataset({'dataroot': str(tmp_path / 'c'), 'phase': 'val', 'io_backend': {'type': 'lmdb'}})
    for i, s in enumerate(meta['samples']):  # stored crop == source region (GT and LQ)
        top, left, h, w = s['box']
        for which in ('gt', 'lq'):
            full = cv2.imread(s[f'{which}_path'])
            np.testing.assert_array_equal(ds.read_image(i, which), full[top:top + h, left:left + w])
    ds.close()
    assert tree_fingerprint(str(tmp_path / 'pool')) == before
    with pytest.raises(Exception, match='already exists'):
        write_random(src, str(tmp_path / 'r'), 0.25, seed=1)


def test_summary_table_from_records():
    inputs = {'val': {'psnr': 20.0, 'ssim': 0.5}}

    def rec(arm, kind, ratio, seed, p, curve):
        subset = None if kind == 'full' else 'same' if kind == 'distill' else f'r{seed}'
        return {'run': f'{arm}{seed}', 'arm': arm, 'kind': kind, 'ratio': ratio, 'seed': seed, 'prep_s': 2.0,
                'subset': subset,
                'units': 4, 'images': 4, 'train_s': 20.0, 'final': {'val': {'psnr': p, 'ssim': 0.8}},
                'curve': {'val': curve}}
    recs = [rec('full', 'full', None, s, 30.0 + 0.1 * s, [(10, 10.0, 28.0), (20, 20.0, 30.0 + 0.1 * s)])
            for s in range(3)]
    recs += [rec('random', 'random', 0.01, s, p, [(10, 10.0, 26.0), (20, 20.0, p)]) for s, p in
             enumerate([28.0, 28.5, 27.5])]
    recs += [rec('tripled', 'distill', 0.01, s, p, [(10, 10.0, 27.0), (20, 20.0, p)]) for s, p in
             enumerate([29.0, 29.4, 28.6])]
    s = summarize(recs, inputs, ['full', 'random', 'tripled'], [0.01])
    row = {r['arm']: r for r in s['rows']}
    assert row['random']['sets']['val']['psnr_mean'] == pytest.approx(28.0)
    assert row['tripled']['sets']['val']['retention'] == pytest.approx((29.0 - 20) / (30.1 - 20))
    comp, = [c for c in s['comparisons'] if c['arm'] == 'tripled']
    assert comp['mean_diff'] == pytest.approx(1.0) and comp['verdict'] == 'better'
    tq, = [t for t in s['time_to_quality'] if t['arm'] == 'tripled']
    assert tq['target'] == pytest.approx(29.0) and tq['arm_s'] == pytest.approx(22.0)
    assert tq['full_s'] == pytest.approx(10 + 10 * (29.0 - 28.0) / (30.1 - 28.0))
    # full - 0.1 dB = 30.0: tripled (mean 29.0) never gets there; full at 10 + 10 * 2 / 2.1 s
    assert tq['full_target'] == pytest.approx(30.0) and tq['to_full_arm_s'] is None
    assert tq['to_full_full_s'] == pytest.approx(10 + 10 * 2.0 / 2.1)
    md = markdown(s, {'name': 'x', 'description': 'd', 'protocols': {'val': 'p'}})
    # a deterministic selection (one subset for every seed) is labelled; random arms vary their subset
    assert '| 1 % | tripled (one subset) | 4 (4) | 29.00 ± 0.40 (n=3) | 89 % |' in md and '**better**' in md
    assert '| 1 % | random (varies) |' in md and '| all | full |' in md


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_study_end_to_end_resume_and_skip(tmp_path, notes):
    _pairs(str(tmp_path / 'pool'), 12, 40, 0)
    _pairs(str(tmp_path / 'val'), 3, 32, 1)
    before = tree_fingerprint(str(tmp_path / 'pool'))
    opt = _opt(tmp_path)
    logs = notes
    md = run_study(opt)
    st = tmp_path / 'study'
    assert '| all | full | 12 (12) |' in md and '| 25 % | random (varies) | 3 (3) |' in md and 'random_crops' in md
    for f in ('table.md', 'results.csv', 'results.json', 'psnr_vs_iter.png', 'final_psnr.png', 'psnr_vs_ratio.png'):
        assert (st / 'report' / f).is_file()
    rows = (st / 'report' / 'results.csv').read_text().strip().splitlines()
    assert len(rows) == 1 + 6  # 2 full + 2 random + 2 random_crops, one test set
    ev = json.loads((st / 'runs' / 'random_25pct_s0' / 'eval.json').read_text())
    assert set(ev) - {'_sets'} == {'2', '4'}  # PSNR vs iterations (+ the protocol fingerprints)
    # a set smaller than a batch still trains: enlarge ratio in the generated BasicSR options
    import yaml
    tr = yaml.safe_load((st / 'runs' / 'random_25pct_s0' / 'train.yml').read_text())
    assert tr['datasets']['train']['dataset_enlarge_ratio'] * 3 >= 2 * 2 and tr['train']['total_iter'] == 4
    # rerun: everything is skipped
    logs.clear()
    run_study(opt)
    assert sum('(done, skipped)' in line for line in logs) == 6 and not any('  train:' in x for x in logs)
    # a killed run resumes from its last training state
    rdir, exp = st / 'runs' / 'random_25pct_s1', st / 'experiments' / 'tiny_random_25pct_s1'
    os.remove(rdir / 'done.json')
    os.remove(exp / 'models' / 'net_g_latest.pth')
    os.remove(exp / 'models' / 'net_g_4.pth')
    os.remove(exp / 'training_states' / '4.state')
    logs.clear()
    run_study(opt)
    assert any('[resuming at 2]' in x for x in logs)
    assert (exp / 'models' / 'net_g_latest.pth').is_file()
    assert tree_fingerprint(str(tmp_path / 'pool')) == before
    # changed options for a finished run are refused, naming the run
    opt2 = _opt(tmp_path)
    opt2['training']['iters'] = 6
    with pytest.raises(StudyError, match='run full_s0 finished earlier with different options'):
        run_study(opt2)


def test_study_dir_policy(tmp_path):
    _pairs(str(tmp_path / 'pool'), 4, 32, 0)
    opt = _opt(tmp_path, study_dir=str(tmp_path / 'pool' / 'gt' / 'study'))
    before = tree_fingerprint(str(tmp_path / 'pool'))
    from tripled_basicsr.study import open_study_dir
    with pytest.raises(Exception, match='source source.dataroot_gt'):
        open_study_dir(merge_options(opt))
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('mine')
    with pytest.raises(Exception, match='not written by tripled_basicsr'):
        open_study_dir(merge_options(_opt(tmp_path, study_dir=str(foreign))), restart=True)
    assert (foreign / 'notes.txt').read_text() == 'mine'
    assert tree_fingerprint(str(tmp_path / 'pool')) == before
    d = open_study_dir(merge_options(_opt(tmp_path)))
    assert open_study_dir(merge_options(_opt(tmp_path))) == d  # reopened for resume


def test_distill_and_train_options_are_fair(tmp_path):
    from tripled_basicsr.study.runner import Study
    opt = merge_options(_opt(tmp_path, arms=['full', 'random', 'tripled', 'calibrated', 'tripled_curriculum'],
                             distill={'features': {'pretrained': False}}, random_crops={'crop_size': 20},
                             training={'iters': 10, 'batch_size': 4, 'gt_size': 16, 'basicsr': {'network_g': NET}}))
    study = Study(opt)
    runs = {r.id: r for r in study.runs}
    a = study.distill_options(runs['tripled_25pct_s1'], '/x/a')
    b = study.distill_options(runs['calibrated_25pct_s1'], '/x/b')
    assert a['selection']['ratio'] == 0.25 and a['selection']['seed'] == 1 and a['features']['pretrained'] is False
    assert a['work_dir'] == b['work_dir']  # one feature pass for every distill arm
    assert b['calibration'] == {'enabled': True} and 'calibration' not in a
    assert a['source']['crop_size'] == study.crop_size() == 20  # crop units of the random-crops arm's size
    from tripled_basicsr.study.runner import Run
    mine = study.distill_options(Run('mine', {'kind': 'distill', 'distill': {'source': {'crop_size': 0}}}, 0.25, 1),
                                 '/x/m')
    assert mine['source']['crop_size'] == 0  # an arm's own crop_size wins
    t_full = study.train_options(runs['full_s1'], {'units': 12, 'root': None})
    t_trip = study.train_options(runs['tripled_curriculum_25pct_s1'], {'units': 3, 'root': '/x/a'})
    t_rand = study.train_options(runs['random_25pct_s1'], {'units': 3, 'root': '/x/r'})
    for t in (t_full, t_trip, t_rand):
        ds = t['datasets']['train']
        assert t['train']['total_iter'] == 10 and t['manual_seed'] == 1 and t['network_g'] == NET
        assert ds['batch_size_per_gpu'] == 4 and ds['gt_size'] == 16 and 'val' not in t
    assert t_full['datasets']['train']['type'] == 'PairedImageDataset' and t_full['model_type'] == 'SRModel'
    assert t_trip['model_type'] == 'TripleDModel' and t_trip['datasets']['train']['sampler']['type'] == \
        'TripleDCurriculumSampler'
    assert 'sampler' not in t_rand['datasets']['train']


def test_arm_sampler_overrides_and_task_sources(tmp_path):
    from tripled_basicsr.study.runner import Study
    with pytest.raises(ArmError, match='sampler options need curriculum: true'):
        resolve_arm('x', {'x': {'base': 'tripled', 'sampler': {'task_balance': True}}})
    sources = [{'task': 'rain', 'dataroot_gt': '/r/gt', 'dataroot_lq': '/r/lq'},
               {'task': 'haze', 'dataroot_gt': '/h/gt', 'dataroot_lq': '/h/lq'}]
    defs = {'bal': {'base': 'tripled_curriculum', 'sampler': {'task_balance': True, 'stage2_start': 0},
                    'distill': {'sources': sources}}}
    opt = merge_options(_opt(tmp_path, random_crops={'crop_size': 20}, arms=['full', 'tripled_curriculum', 'bal'], arm_definitions=defs,
                             distill={'features': {'pretrained': False}}))
    study = Study(opt)
    runs = {r.id: r for r in study.runs}
    d_bal = study.distill_options(runs['bal_25pct_s0'], '/x/b')
    d_one = study.distill_options(runs['tripled_curriculum_25pct_s0'], '/x/a')
    assert d_bal['sources'] == sources and 'source' not in d_bal  # the tasks replace the study's pool
    assert d_one['source']['dataroot_gt'] == opt['source']['dataroot_gt'] and 'sources' not in d_one
    assert d_bal['work_dir'] != d_one['work_dir']  # other inputs, other feature cache
    sampler = study.train_options(runs['bal_25pct_s0'], {'units': 3, 'root': '/x/b'})['datasets']['train']['sampler']
    assert sampler == {'type': 'TripleDCurriculumSampler', 'task_balance': True, 'stage2_start': 0}
    plain = study.train_options(runs['tripled_curriculum_25pct_s0'], {'units': 3, 'root': '/x/a'})['datasets']['train']
    assert plain['sampler'] == {'type': 'TripleDCurriculumSampler'}
    # an arm without sampler options hashes as before the key existed (finished runs stay valid)
    from tripled_basicsr.study.runner import _hash
    run = runs['tripled_curriculum_25pct_s0']
    old = {k: v for k, v in run.arm.items() if k != 'sampler'}
    assert study.run_hash(run) == _hash({'arm': old, 'ratio': run.ratio, 'seed': run.seed,
                                         'source': opt['source'], 'training': opt['training'],
                                         'distill': opt['distill'], 'crop': None})


def test_refuses_a_run_whose_trainer_is_still_alive(tmp_path):
    import subprocess
    import sys
    from tripled_basicsr.study.runner import Study
    study = Study(merge_options(_opt(tmp_path)))
    run = study.runs[0]
    rdir = tmp_path / 'study' / 'runs' / run.id
    rdir.mkdir(parents=True)
    fake = subprocess.Popen([sys.executable, '-c', 'import time; print("ready", flush=True); time.sleep(30)',
                             'tripled_basicsr.train'], stdout=subprocess.PIPE, text=True)
    assert fake.stdout.readline().strip() == 'ready'  # exec'd: its cmdline is the trainer's, no longer pytest's
    try:
        (rdir / 'attempts.json').write_text(json.dumps([{'start': 0, 'resume_iter': 0, 'pid': fake.pid}]))
        with pytest.raises(StudyError, match=f'still being trained by process {fake.pid}'):
            study.train(run, {'units': 12, 'root': None})
    finally:
        fake.kill()
        fake.wait()
    assert not (tmp_path / 'study' / 'experiments').exists()


def test_crop_size_auto_is_the_distillers(tmp_path):
    """random_crops.crop_size: auto (the default) = what a stand-alone distill's crop_size: auto gives on
    the pool, so the random-crops and tripled arms use the units a user gets; a bad value names the key."""
    from tripled_basicsr.distill._testing import write_pairs
    from tripled_basicsr.distill.crops import auto_crop_size
    from tripled_basicsr.study.runner import Study, StudyError
    write_pairs(str(tmp_path / 'pool'), num=4, size=200)
    study = Study(merge_options(_opt(tmp_path)))
    assert study.crop_size() == auto_crop_size([(200, 200)] * 4) == 64
    small = tmp_path / 'small'
    write_pairs(str(small / 'pool'), num=4, size=48)  # too small for crop units: training patch + 25 %
    assert Study(merge_options(_opt(small))).crop_size() == 20
    with pytest.raises(StudyError, match='random_crops.crop_size must be auto'):
        merge_options(_opt(tmp_path, random_crops={'crop_size': 'big'}))
