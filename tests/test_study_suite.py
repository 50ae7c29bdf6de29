"""The task suite: data preparation from stand-ins of the public repositories' layouts (no
network), the up-front checks, the cross-task table read from study results.json files."""
import csv
import json
import os

import cv2
import numpy as np
import pytest
import yaml

from tripled_basicsr.benchmark import add_noise, bicubic_down
from tripled_basicsr.study import suite, suite_data
from tripled_basicsr.study.report import summarize
from tripled_basicsr.utils.ownership import read_marker

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE_YML = os.path.join(REPO, 'options', 'suite', 'suite.yml')
NET = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_conv': 1, 'upscale': 1,
       'act_type': 'prelu'}


# ----------------------------------------------------------------------------- stand-in sources
def _img(rng, h, w, grey=False):
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 80 * np.sin(xx / rng.uniform(2, 8)) * np.cos(yy / rng.uniform(2, 8))
    img = np.clip(base[..., None] + rng.normal(0, 20, (h, w, 1 if grey else 3)), 0, 255).astype(np.uint8)
    return img[..., 0] if grey else img


# repo-relative folder, file names, size, grey: the public layouts in miniature
STANDIN = {
    'DnCNN/TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400': (['test_002.png', 'test_001.png', 'test_003.png'],
                                                                    (20, 20), True),
    'DnCNN/testsets/Set12': (['01.png', '02.png'], (16, 24), True),
    'DnCNN/testsets/BSD68': (['test001.png'], (16, 16), True),
    'DnCNN/testsets/classic5': (['lena.bmp'], (24, 24), True),
    'DnCNN/testsets/LIVE1': (['bikes.bmp'], (24, 32), False),
    'SRCNN-Tensorflow/Train': (['t1.bmp', 'tt2.bmp'], (22, 27), False),
    'ssn_pytorch/BSR/BSDS500/data/images/train': (['2092.jpg', '8049.jpg'], (21, 30), False),
    'ssn_pytorch/BSR/BSDS500/data/images/val': (['3096.jpg', '101085.jpg'], (16, 20), False),
    'ssn_pytorch/BSR/BSDS500/data/images/test': (['100007.jpg'], (16, 20), False),
    'SelfExSR/data/Set5/image_SRF_4': (['img_001_SRF_4_HR.png', 'img_001_SRF_4_LR.png'], (18, 21), False),
    'SelfExSR/data/Set14/image_SRF_4': (['img_001_SRF_4_HR.png'], (16, 16), False),
    'SelfExSR/data/BSD100/image_SRF_4': (['img_001_SRF_4_HR.png'], (16, 16), False),
    'SelfExSR/data/Urban100/image_SRF_4': (['img_001_SRF_4_HR.png', 'img_002_SRF_4_HR.png'], (16, 16), False),
    'FFDNet/testsets/CBSD68': (['3096.png'], (16, 20), False),
    'FFDNet/testsets/Kodak24': (['kodim01.png'], (16, 16), False),
    'FFDNet/testsets/McMaster': (['1.tif'], (16, 16), False),
}


def make_sources(src):
    rng = np.random.default_rng(0)
    for folder, (names, (h, w), grey) in STANDIN.items():
        d = os.path.join(src, folder)
        os.makedirs(d, exist_ok=True)
        for n in names:
            assert cv2.imwrite(os.path.join(d, n), _img(rng, h, w, grey))
    with open(os.path.join(src, 'DnCNN', 'testsets', 'Set12', 'readme.txt'), 'w') as f:
        f.write('not an image')


@pytest.fixture
def tiny_counts(monkeypatch):
    """The expected image counts of the stand-ins (the real ones hold 400, 68, ...)."""
    colls = {}
    for name, (repo, folders, endings, _) in suite_data.COLLECTIONS.items():
        n = sum(sum(x.lower().endswith(endings) for x in STANDIN[f'{repo}/{f}'][0]) for f in folders)
        colls[name] = (repo, folders, endings, n)
    monkeypatch.setattr(suite_data, 'COLLECTIONS', colls)


def _read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_prepare_from_standins(tmp_path, tiny_counts):
    src, out = tmp_path / 'src', tmp_path / 'datasets'
    with pytest.raises(suite_data.SourceMissing) as err:  # nothing cloned yet: the exact commands
        suite_data.prepare(str(src), str(out), ['dn25_train400', 'sr4_t91bsd200'])
    msg = str(err.value)
    assert f'git clone --depth 1 https://github.com/cszn/DnCNN {src}/DnCNN' in msg
    assert 'git clone --depth 1 https://github.com/tegg89/SRCNN-Tensorflow' in msg and 'FFDNet' not in msg
    make_sources(str(src))
    status = suite_data.prepare(str(src), str(out))
    assert set(status) == {p for _, prods in suite_data.TASKS.values() for p in prods}
    assert set(status.values()) == {'written'}
    # grey sigma-25 pool: the docs' rule, images in name order, seed 1000 + index
    train = sorted(os.listdir(src / 'DnCNN/TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400'))
    for i, name in enumerate(train):
        gt = _read(src / 'DnCNN/TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400' / name)
        assert gt.ndim == 2 and np.array_equal(_read(out / 'dn25_train400/gt' / name), gt)
        want = np.clip(np.round(add_noise(gt, 25, 1000 + i) * 255), 0, 255).astype(np.uint8)
        assert np.array_equal(_read(out / 'dn25_train400/lq' / name), want)
        want50 = np.clip(np.round(add_noise(gt, 50, 1000 + i) * 255), 0, 255).astype(np.uint8)
        assert np.array_equal(_read(out / 'dn50_train400/lq' / name), want50)
        assert np.array_equal(_read(out / 'jpeg10_train400/lq' / name), suite_data.jpeg_uint8(gt, 10))
    # SR pool: T91 + BSD200, GT mod-cropped to 4, LQ = the benchmark's MATLAB-style bicubic
    assert sorted(os.listdir(out / 'sr4_t91bsd200/gt')) == ['2092.png', '8049.png', 't1.png', 'tt2.png']
    gt = _read(out / 'sr4_t91bsd200/gt/t1.png')
    assert gt.shape == (20, 24, 3)
    assert np.array_equal(gt, _read(src / 'SRCNN-Tensorflow/Train/t1.bmp')[:20, :24])
    assert np.array_equal(_read(out / 'sr4_t91bsd200/lq/t1.png'), bicubic_down(gt, 4))
    # colour pool: BSDS500 without CBSD68, colour noise
    assert sorted(os.listdir(out / 'cdn25_cbsd432/gt')) == ['100007.png', '101085.png', '2092.png', '8049.png']
    gt = _read(out / 'cdn25_cbsd432/gt/101085.png')
    want = np.clip(np.round(add_noise(gt, 25, 1001) * 255), 0, 255).astype(np.uint8)
    assert gt.shape[2] == 3 and np.array_equal(_read(out / 'cdn25_cbsd432/lq/101085.png'), want)
    # test sets: copied unchanged (SelfExSR: the HR files, renamed), JPEG sets as gt/lq pairs of grey images
    assert sorted(os.listdir(out / 'Set5')) == ['.tripled_output.json', 'img_001.png', suite_data.INFO]
    assert (out / 'Set5/img_001.png').read_bytes() == (src / 'SelfExSR/data/Set5/image_SRF_4/img_001_SRF_4_HR.png'
                                                       ).read_bytes()
    assert sorted(os.listdir(out / 'Set12')) == ['.tripled_output.json', '01.png', '02.png', suite_data.INFO]
    assert (out / 'McMaster/1.tif').is_file()
    live = _read(out / 'jpeg10_LIVE1/gt/bikes.png')
    assert live.ndim == 2 and np.array_equal(live, cv2.imread(str(src / 'DnCNN/testsets/LIVE1/bikes.bmp'),
                                                              cv2.IMREAD_GRAYSCALE))
    assert np.array_equal(_read(out / 'jpeg10_LIVE1/lq/bikes.png'), suite_data.jpeg_uint8(live, 10))
    assert read_marker(str(out / 'dn25_train400'))['tool'] == 'suite_prepare'
    # a second run: nothing rebuilt
    assert set(suite_data.prepare(str(src), str(out)).values()) == {'up to date'}


def test_prepare_existing_folders_and_bad_sources(tmp_path, tiny_counts, monkeypatch):
    src, out = tmp_path / 'src', tmp_path / 'datasets'
    make_sources(str(src))
    # the dn25 pool made by hand with docs/study.md's snippet: verified pixel for pixel, left as is
    d = src / 'DnCNN/TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400'
    for sub in ('gt', 'lq'):
        os.makedirs(out / 'dn25_train400' / sub)
    for i, name in enumerate(sorted(os.listdir(d))):
        gt = _read(d / name)
        cv2.imwrite(str(out / 'dn25_train400/gt' / name), gt)
        cv2.imwrite(str(out / 'dn25_train400/lq' / name),
                    np.clip(np.round(add_noise(gt, 25, 1000 + i) * 255), 0, 255).astype(np.uint8))
    status = suite_data.prepare(str(src), str(out), ['dn25_train400'])
    assert status['dn25_train400'].startswith('present') and status['Set12'] == 'written'
    assert read_marker(str(out / 'dn25_train400')) is None  # never touched
    # a user's folder with other pixels is refused, never replaced
    cv2.imwrite(str(out / 'dn25_train400/lq/test_002.png'), np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError, match=r'dn25_train400 exists, was not written by prepare .* lq/test_002.png'):
        suite_data.prepare(str(src), str(out), ['dn25_train400'])
    # an incomplete clone: the collection, its count and the repository are named
    os.remove(src / 'FFDNet/testsets/Kodak24/kodim01.png')
    with pytest.raises(suite_data.SourceMissing, match=r'Kodak24: 0 images .* expected 1 .*cszn/FFDNet'):
        suite_data.prepare(str(src), str(out), ['cdn25_cbsd432'])
    with pytest.raises(ValueError, match='unknown task'):
        suite_data.prepare(str(src), str(out), ['dn30'])
    # --clone runs exactly the printed commands for the missing repositories
    calls = []

    class Done:
        returncode = 0
    suite_data.run_clones(str(tmp_path / 'empty'), ['Set5', 'Train400'], run=lambda c: calls.append(c) or Done())
    assert calls == [['git', 'clone', '--depth', '1', 'https://github.com/cszn/DnCNN', str(tmp_path / 'empty/DnCNN')],
                     ['git', 'clone', '--depth', '1', 'https://github.com/jbhuang0604/SelfExSR',
                      str(tmp_path / 'empty/SelfExSR')]]


# ----------------------------------------------------------------------------- recipes and checks
def test_recipes_match_the_prepared_data_and_the_auto_crop_rule():
    from tripled_basicsr.distill.crops import auto_crop_size
    from tripled_basicsr.study import merge_options
    s = suite.load_suite(SUITE_YML)
    assert [t['name'] for t in s['tasks']] == list(suite_data.TASKS)
    # the pools' image sizes (measured on the prepared data; docs/study.md, "Task suite")
    shapes = {'dn25_train400': [(180, 180)] * 400, 'dn50_train400': [(180, 180)] * 400,
              'jpeg10_train400': [(180, 180)] * 400, 'cdn25_cbsd432': [(321, 481)] * 432,
              'sr4_t91bsd200': [(187, 250)] * 91 + [(321, 481)] * 200}
    for t in s['tasks']:
        user = yaml.safe_load(open(t['opt']))
        opt = merge_options(user)
        pool = suite_data.TASKS[t['name']][1][0]
        assert opt['source']['dataroot_gt'].endswith(f'datasets/{pool}/gt')
        scale = opt['source']['scale']
        assert user['random_crops']['crop_size'] == auto_crop_size(shapes[t['name']], scale)
        assert 'distill' not in user and 'tripled' not in user['arm_definitions']
        assert user['arms'] == ['full', 'random', 'random_crops', 'tripled'] and user['seeds'] == [0, 1, 2]
        assert opt['training']['iters'] == 2000 and opt['training']['batch_size'] == 8
        assert opt['training']['basicsr']['network_g']['num_conv'] == 8
        assert opt['training']['basicsr']['network_g']['upscale'] == scale


def test_check_names_the_task_and_the_prepare_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no datasets/ here
    s = suite.load_suite(SUITE_YML)
    with pytest.raises(suite.SuiteError) as err:
        suite.check_tasks(s, suite.select_tasks(s, ['sr4_t91bsd200', 'dn25_train400']))
    msg = str(err.value)
    assert '2 problem(s) before any task ran' in msg
    assert 'task sr4_t91bsd200' in msg and 'test set Urban100: no images under datasets/Urban100' in msg
    assert 'python -m tripled_basicsr.study.suite prepare --src DIR --tasks sr4_t91bsd200' in msg
    assert 'python -m tripled_basicsr.study.suite prepare --src DIR --tasks dn25_train400' in msg
    with pytest.raises(suite.SuiteError, match='--tasks: nope not in'):
        suite.select_tasks(s, ['nope'])
    assert suite.main(['-opt', SUITE_YML, '--check']) == 2  # the CLI: one error line, exit 2


def _pool(root, n, size, seed=0):
    rng = np.random.default_rng(seed)
    for d in ('gt', 'lq'):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    for i in range(n):
        gt = _img(rng, size, size)
        cv2.imwrite(os.path.join(root, 'gt', f'im{i}.png'), gt)
        cv2.imwrite(os.path.join(root, 'lq', f'im{i}.png'), np.clip(gt.astype(int) + 9, 0, 255).astype(np.uint8))


def _task_opt(tmp_path, name, **over):
    opt = {'name': name, 'study_dir': str(tmp_path / 'studies' / name),
           'source': {'dataroot_gt': str(tmp_path / 'pool/gt'), 'dataroot_lq': str(tmp_path / 'pool/lq')},
           'ratios': [0.25], 'seeds': [0, 1, 2], 'arms': ['full', 'random', 'random_crops', 'tripled'],
           'random_crops': {'crop_size': 48},
           'training': {'iters': 2, 'batch_size': 2, 'gt_size': 16, 'num_worker': 0, 'basicsr': {'network_g': NET}},
           'test_sets': [{'name': 'val', 'task': 'denoise', 'root': str(tmp_path / 'val'), 'sigmas': [25]}],
           'device': 'cpu'}
    opt.update(over)
    return opt


def _suite(tmp_path, tasks, **over):
    for name, opt in tasks.items():
        with open(tmp_path / f'{name}.yml', 'w') as f:
            yaml.safe_dump(opt, f)
    s = {'name': 'mini', 'suite_dir': str(tmp_path / 'suite'), 'tasks': [{'name': n, 'opt': f'{n}.yml'} for n in tasks],
         **over}
    with open(tmp_path / 'suite.yml', 'w') as f:
        yaml.safe_dump(s, f)
    return suite.load_suite(str(tmp_path / 'suite.yml'))


def test_defaults_checks_and_forwarded_arguments(tmp_path):
    _pool(str(tmp_path / 'pool'), 4, 150)  # auto crop: 150 // 3 = 50 -> 48 (a multiple of 4)
    os.makedirs(tmp_path / 'val')
    cv2.imwrite(str(tmp_path / 'val' / 'a.png'), _img(np.random.default_rng(1), 24, 24))
    s = _suite(tmp_path, {'good': _task_opt(tmp_path, 'good'),
                          'crops': _task_opt(tmp_path, 'crops', random_crops={'crop_size': 50}),
                          'over': _task_opt(tmp_path, 'over', distill={'features': {'pretrained': False}}),
                          'arms': _task_opt(tmp_path, 'arms', arms=['random', 'tripled']),
                          'patch': _task_opt(tmp_path, 'patch', training={'iters': 2, 'gt_size': 160,
                                                                          'basicsr': {'network_g': NET}})})
    with pytest.raises(suite.SuiteError) as err:
        suite.check_tasks(s, s['tasks'])
    msg = str(err.value)
    assert 'task good' not in msg
    assert 'task crops' in msg and 'random_crops.crop_size is 50' in msg and 'auto gives 48' in msg
    assert 'task over' in msg and 'distill: {"features": {"pretrained": false}} would change the tripled arm' in msg
    assert 'task arms' in msg and 'random_crops is not among the arms' in msg and 'full is not among' in msg
    assert 'task patch' in msg and 'training.gt_size 160 is larger than pool image im0 (150x150) and 3 more' in msg
    s['require_defaults'] = False  # other suites may measure other arms
    with pytest.raises(suite.SuiteError) as err:
        suite.check_tasks(s, s['tasks'])
    assert 'task crops' not in str(err.value) and 'task arms' in str(err.value)
    # running: every task's study command, with the options the suite does not know passed on
    s = _suite(tmp_path, {'good': _task_opt(tmp_path, 'good'), 'good2': _task_opt(tmp_path, 'good2')})
    calls = []
    rc = suite.run_suite(s, s['tasks'], ['--jobs', '2'], call=lambda c: calls.append(c) or 0)
    assert rc == 0 and [c[1:] for c in calls] == [
        ['-m', 'tripled_basicsr.study', '-opt', str(tmp_path / 'good.yml'), '--jobs', '2'],
        ['-m', 'tripled_basicsr.study', '-opt', str(tmp_path / 'good2.yml'), '--jobs', '2']]
    table = (tmp_path / 'suite/report/table.md').read_text()
    assert 'No results yet: good, good2.' in table
    # a failed task does not stop the others; an interrupted one stops the suite
    calls.clear()
    assert suite.run_suite(s, s['tasks'], [], call=lambda c: calls.append(c) or 1) == 1
    assert len(calls) == 2
    calls.clear()
    assert suite.run_suite(s, s['tasks'], [], call=lambda c: calls.append(c) or 130) == 130
    assert len(calls) == 1
    # --report-only: only tasks with a study dir are asked for their report
    os.makedirs(tmp_path / 'studies' / 'good2')
    calls.clear()
    suite.run_suite(s, s['tasks'], [], report_only=True, call=lambda c: calls.append(c) or 0)
    assert [c[-2:] for c in calls] == [[str(tmp_path / 'good2.yml'), '--report-only']]


# ----------------------------------------------------------------------------- the cross-task table
def _results(study_dir, finals, sets=('val',)):
    """A study's report/results.json, written with the study's own aggregation (report.summarize)."""
    recs = []
    for (arm, kind, ratio), psnrs in finals.items():
        for seed, p in enumerate(psnrs):
            recs.append({'run': f'{arm}_{seed}', 'arm': arm, 'kind': kind, 'ratio': ratio, 'seed': seed, 'prep_s': 1.0,
                         'units': 10 if kind == 'random_crops' else 3, 'images': 3, 'train_s': 5.0,
                         'final': {lb: {'psnr': p + k, 'ssim': 0.8} for k, lb in enumerate(sets)},
                         'curve': {lb: [(2, 5.0, p + k)] for k, lb in enumerate(sets)}})
    inputs = {lb: {'psnr': 20.0 + k, 'ssim': 0.5} for k, lb in enumerate(sets)}
    summary = summarize(recs, inputs, ['full', 'random', 'random_crops', 'tripled'], [0.01, 0.02])
    os.makedirs(os.path.join(study_dir, 'report'))
    with open(os.path.join(study_dir, 'report', 'results.json'), 'w') as f:
        json.dump({'summary': summary, 'records': recs, 'header': {'protocols': {lb: f'protocol of {lb}'
                                                                               for lb in sets}}}, f)
    return summary


def test_suite_table_reads_the_studies_results(tmp_path):
    s = _suite(tmp_path, {'a': _task_opt(tmp_path, 'a'), 'b': _task_opt(tmp_path, 'b'),
                          'c': _task_opt(tmp_path, 'c')})
    # task a: tripled better than random (+1.0 > spread 0.5), tie with random crops (+0.1 < spread 0.2) at 1 %
    sa = _results(str(tmp_path / 'studies/a'), {
        ('full', 'full', None): [30.0],
        ('random', 'random', 0.01): [28.0, 28.5, 27.5], ('random_crops', 'random_crops', 0.01): [28.9, 29.1, 28.7],
        ('tripled', 'distill', 0.01): [29.0, 29.2, 28.8],
        ('random', 'random', 0.02): [29.0, 29.4, 28.6], ('random_crops', 'random_crops', 0.02): [29.5, 29.6, 29.4],
        ('tripled', 'distill', 0.02): [29.1, 29.3, 29.2]}, sets=('val', 'val2'))
    # task b: tripled worse than random crops; one seed only against random: a tie by the rule
    _results(str(tmp_path / 'studies/b'), {
        ('full', 'full', None): [31.0, 31.2],
        ('random', 'random', 0.01): [30.0], ('random_crops', 'random_crops', 0.01): [30.6, 30.5, 30.7],
        ('tripled', 'distill', 0.01): [30.0, 30.1, 29.9]})
    md = suite.write_summary(s, s['tasks'])
    rep = tmp_path / 'suite' / 'report'
    assert (rep / 'table.md').read_text() == md
    data = json.loads((rep / 'results.json').read_text())
    rows = {(r['task'], r['ratio'], r['set']): r for r in data['rows']}
    assert len(rows) == 2 * 2 + 1  # a: 2 ratios x 2 sets, b: 1 ratio x 1 set; c: no results
    r = rows[('a', 0.01, 'val')]
    comp = {(c['ratio'], c['arm'], c['vs'], c['set']): c for c in sa['comparisons']}
    assert r['vs']['random'] == {k: comp[(0.01, 'tripled', 'random', 'val')][k] for k in r['vs']['random']}
    assert r['vs']['random']['verdict'] == 'better' and r['vs']['random']['mean_diff'] == pytest.approx(1.0)
    assert r['vs']['random_crops']['verdict'] == 'tie' and r['vs']['random_crops']['mean_diff'] == pytest.approx(0.1)
    assert r['arms']['tripled']['psnr_mean'] == pytest.approx(29.0) and r['arms']['random_crops']['units'] == 10
    assert r['full']['psnr_mean'] == pytest.approx(30.0) and r['input_psnr'] == pytest.approx(20.0)
    assert rows[('a', 0.01, 'val2')]['arms']['tripled']['psnr_mean'] == pytest.approx(30.0)
    assert rows[('a', 0.02, 'val')]['vs']['random_crops']['verdict'] == 'worse'
    rb = rows[('b', 0.01, 'val')]
    assert rb['vs']['random']['verdict'] == 'tie' and rb['vs']['random']['n'] == 1
    assert rb['vs']['random_crops']['verdict'] == 'worse' and rb['full']['n'] == 2
    assert data['counts'] == {'random': {'better': 2, 'tie': 3, 'worse': 0, 'missing': 0},
                              'random_crops': {'better': 0, 'tie': 2, 'worse': 3, 'missing': 0}}
    assert data['per_task']['b'] == {'random': {'better': 0, 'tie': 1, 'worse': 0, 'missing': 0},
                                     'random_crops': {'better': 0, 'tie': 0, 'worse': 1, 'missing': 0}}
    assert [t['status'] for t in data['tasks']] == ['ok', 'ok', 'no results yet']
    assert data['tasks'][0]['crop_size'] == 48 and data['tasks'][0]['protocols'] == {'val': 'protocol of val',
                                                                                     'val2': 'protocol of val2'}
    # the markdown: values, verdicts, counts
    assert ('| a | 1 % | val | 20.00 | 30.00 (n=1) | 28.00 ± 0.50 (n=3) [3] | 28.90 ± 0.20 (n=3) [10] | '
            '29.00 ± 0.20 (n=3) [3] | +1.000 **better** (spread 0.500, p 0.') in md
    assert '+0.100 **tie** (spread 0.200' in md
    assert '| b | 1 % | val | 20.00 | 31.10 ± 0.14 (n=2) | 30.00 (n=1) [3] |' in md
    assert '| **all tasks** | 2 / 3 / 0 | 0 / 2 / 3 |' in md and 'No results yet: c.' in md
    with open(rep / 'results.csv') as f:
        table = list(csv.DictReader(f))
    assert len(table) == 5 and table[0]['task'] == 'a' and table[0]['verdict_vs_random'] == 'better'
    assert float(table[0]['diff_vs_random']) == pytest.approx(1.0) and table[0]['tripled_n'] == '3'
    # the report is ours: rewritten on the next call; the CLI's --summary-only does the same
    assert suite.main(['-opt', str(tmp_path / 'suite.yml'), '--summary-only']) == 0
    assert read_marker(str(rep))['tool'] == 'suite'


def test_cli_prepare_dispatch(capsys):
    assert suite.main(['prepare', '--list']) == 0
    out = capsys.readouterr().out
    assert 'sr4_t91bsd200: x4 bicubic super-resolution' in out and 'jbhuang0604/SelfExSR' in out


def test_counts_leave_out_comparisons_without_paired_seeds():
    """A reference arm that never ran (n = 0, no difference) is 'not compared', not a tie."""
    from tripled_basicsr.study.suite import counts
    rows = [{'vs': {'random': {'verdict': 'tie', 'n': 0, 'mean_diff': None},
                    'random_crops': {'verdict': 'worse', 'n': 3, 'mean_diff': -0.1}}},
            {'vs': {'random': None, 'random_crops': {'verdict': 'tie', 'n': 1, 'mean_diff': 0.2}}}]
    assert counts(rows, ['random', 'random_crops']) == {
        'random': {'better': 0, 'tie': 0, 'worse': 0, 'missing': 2},
        'random_crops': {'better': 0, 'tie': 1, 'worse': 1, 'missing': 0}}
