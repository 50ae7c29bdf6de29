"""Several tasks in one distillation (`sources:`, `selection.task_quota`) and the all-in-one
demo-data generator: quota maths, task labels through tripled_meta.json, per-task stages and
report, every bad input (message + nothing written + sources unchanged), single `source:`
unchanged, the CPU recipe end to end."""
import csv
import json
import os

import numpy as np
import pytest

from tripled_basicsr.distill import run_distill
from tripled_basicsr.distill._testing import with_overrides, write_pairs
from tripled_basicsr.distill.options import merge_options
from tripled_basicsr.distill.tasks import allocate, check_task_quota, quota_shares, task_counts
from tripled_basicsr.options import OptionError
from tripled_basicsr.utils.io import tree_fingerprint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- quota maths
def test_allocate_largest_remainder_sums_and_minimum_one():
    assert allocate(10, [0.5, 0.3, 0.2]).tolist() == [5, 3, 2]
    assert allocate(10, [1 / 3] * 3).tolist() == [4, 3, 3]  # tie: the earlier task
    assert allocate(7, [0.45, 0.45, 0.1]).tolist() == [3, 3, 1]  # remainders .15 .15 .7 -> the third
    # largest remainder alone would leave the second task without a unit: it takes one from the largest
    assert allocate(3, [0.2, 0.2, 0.6]).tolist() == [1, 1, 1]
    assert allocate(5, [0.5, 0.0, 0.5]).tolist() == [3, 0, 2]  # share 0: nothing
    with pytest.raises(ValueError, match='at least one'):
        allocate(2, [0.4, 0.3, 0.3])
    rng = np.random.default_rng(0)
    for _ in range(300):
        shares = rng.dirichlet(np.ones(rng.integers(1, 7)))
        shares[rng.random(len(shares)) < 0.2] = 0
        if shares.sum() == 0:
            continue
        pos = int((shares > 0).sum())
        n = int(rng.integers(pos, 500))
        q = allocate(n, shares)
        assert q.sum() == n and (q[shares > 0] >= 1).all() and (q[shares == 0] == 0).all()
        exact = shares / shares.sum() * n
        lifted = int(((exact < 1) & (shares > 0)).sum())  # lifted to one unit, each taken from a larger task
        assert (np.abs(q - exact) < 1 + lifted).all()


def test_quota_shares_and_task_counts():
    sizes = {'rain': 400, 'haze': 200, 'noise': 100, 'blur': 50, 'lowlight': 25}
    np.testing.assert_allclose(quota_shares('proportional', sizes), np.array([400, 200, 100, 50, 25]) / 775)
    np.testing.assert_allclose(quota_shares('equal', sizes), [0.2] * 5)
    assert task_counts(78, 'proportional', sizes) == {'rain': 40, 'haze': 20, 'noise': 10, 'blur': 5, 'lowlight': 3}
    assert task_counts(78, 'equal', sizes) == {'rain': 16, 'haze': 16, 'noise': 16, 'blur': 15, 'lowlight': 15}
    q = {'rain': 0.1, 'haze': 0.1, 'noise': 0.2, 'blur': 0.3, 'lowlight': 0.3}
    assert task_counts(20, q, sizes) == {'rain': 2, 'haze': 2, 'noise': 4, 'blur': 6, 'lowlight': 6}
    assert sum(task_counts(777, 'proportional', dict(sizes, rain=402)).values()) == 777


def test_task_counts_errors_name_the_task_and_what_to_do():
    with pytest.raises(OptionError) as e:
        task_counts(40, {'rain': 0.5, 'haze': 0.5}, {'rain': 100, 'haze': 12})
    assert str(e.value).startswith('task haze has 12 pairs but its quota asks for 20: lower selection.ratio')
    assert 'smaller share' in str(e.value)
    with pytest.raises(OptionError) as e:  # 25 / 775 of 8 units = 0.26 unit
        task_counts(8, 'proportional', {'rain': 400, 'haze': 200, 'noise': 100, 'blur': 50, 'lowlight': 25})
    msg = str(e.value)
    assert msg.startswith('task lowlight: its share') and 'rounds to 0' in msg and 'selection.ratio' in msg
    with pytest.raises(OptionError, match=r'selection\.task_quota\.b\)'):
        task_counts(10, {'a': 0.99, 'b': 0.01}, {'a': 100, 'b': 100})


def test_check_task_quota():
    tasks = ['rain', 'haze', 'noise']
    assert check_task_quota('equal', tasks) == 'equal'
    assert check_task_quota({'rain': '5e-1', 'haze': 0.5, 'noise': 0}, tasks)['rain'] == 0.5  # YAML 1.1 string
    assert check_task_quota({'rain': 0.3333333, 'haze': 0.3333333, 'noise': 0.3333334}, tasks)['noise'] == 0.3333334
    bad = [({'rain': 0.5, 'haze': 0.5, 'snow': 0.0}, 'selection.task_quota.snow: there is no task'),
           ({'rain': 0.5, 'haze': 0.6, 'noise': -0.1}, 'selection.task_quota.noise is -0.1: a share cannot be'),
           ({'rain': 0.5, 'haze': 0.3, 'noise': 0.1}, 'selection.task_quota: the shares sum to 0.9, not 1'),
           ({'rain': 0.5, 'haze': 0.5}, 'selection.task_quota gives no share to task(s) noise'),
           ({'rain': 'half', 'haze': 0.5, 'noise': 0}, 'selection.task_quota.rain must be a number'),
           ('by_size', 'selection.task_quota must be proportional, equal or a mapping')]
    for value, msg in bad:
        with pytest.raises(OptionError) as e:
            check_task_quota(value, tasks)
        assert str(e.value).startswith(msg), str(e.value)


# ---------------------------------------------------------------- data and options
def make_tasks(root, spec=(('rain', 16, 5), ('haze', 12, 15), ('noise', 8, 40)), size=32):
    """One small paired folder per task: (task, pairs, LQ noise sigma). -> {task: (gt, lq)}."""
    return {t: write_pairs(os.path.join(root, t), num=n, size=size, seed=i, sigma=sig)
            for i, (t, n, sig) in enumerate(spec)}


@pytest.fixture(scope='module')
def tasks_data(tmp_path_factory):
    return make_tasks(str(tmp_path_factory.mktemp('tasks_src')))


def options(data, out, **over):
    """Fast multi-task options: hand-crafted features (no network, no weights)."""
    opt = {
        'name': 'tasks',
        'sources': [{'task': t, 'dataroot_gt': gt, 'dataroot_lq': lq} for t, (gt, lq) in data.items()],
        'output': {'path': out},
        'features': {'backbone': 'tripled_stats', 'pretrained': False, 'batch_size': 16, 'num_workers': 0,
                     'device': 'cpu'},
        'selection': {'ratio': 0.25, 'seed': 0},
        'calibration': {'enabled': False},
        'report': {'plot': False, 'random_repeats': 2},
    }
    return with_overrides(opt, over)


def meta(out):
    with open(os.path.join(out, 'tripled_meta.json'), encoding='utf-8') as f:
        return json.load(f)


def test_features_default_to_both_with_several_tasks_unless_set():
    src = [{'task': 'a', 'dataroot_gt': 'g', 'dataroot_lq': 'l'},
           {'task': 'b', 'dataroot_gt': 'g2', 'dataroot_lq': 'l2'}]
    opt = merge_options({'sources': src, 'output': {'path': 'o'}})
    assert opt['features']['image'] == 'both' and opt['selection']['task_quota'] == 'proportional'
    assert 'source' not in opt and opt['sources'][1]['scale'] == 1 and opt['sources'][1]['on_error'] == 'raise'
    opt = merge_options({'sources': src, 'output': {'path': 'o'}, 'features': {'image': 'gt'}})
    assert opt['features']['image'] == 'gt'
    single = merge_options({'source': {'dataroot_gt': 'g', 'dataroot_lq': 'l'}, 'output': {'path': 'o'}})
    assert single['features']['image'] == 'gt' and 'task_quota' not in single['selection']
    assert single['sources'] is None


def test_several_tasks_end_to_end(tasks_data, tmp_path):
    before = {t: tree_fingerprint(os.path.dirname(gt)) for t, (gt, _) in tasks_data.items()}
    out = str(tmp_path / 'out')
    s = run_distill(options(tasks_data, out, selection={'task_quota': 'equal'}, report={'plot': True}),
                    progress=False)
    assert {t: tree_fingerprint(os.path.dirname(gt)) for t, (gt, _) in tasks_data.items()} == before
    m = meta(out)
    samples = m['samples']
    # n = ceil(0.25 * 36) = 9, equal quota: 3 per task
    assert len(samples) == 9 == s['n']
    tasks = [x['task'] for x in samples]
    assert tasks == ['rain'] * 3 + ['haze'] * 3 + ['noise'] * 3  # subset in the order of `sources:`
    for x in samples:
        assert x['key'].startswith(x['task'] + '_img') and os.path.dirname(os.path.dirname(x['gt_path'])).endswith(
            x['task'])
        assert x['stage'] in (1, 2) and isinstance(x['cluster'], int)
    summ = m['summary']
    assert summ['task_quota'] == 'equal'
    assert {t: (r['N'], r['n']) for t, r in summ['tasks'].items()} == {'rain': (16, 3), 'haze': (12, 3),
                                                                        'noise': (8, 3)}
    assert abs(sum(r['quota'] for r in summ['tasks'].values()) - 1) < 1e-9
    for r in summ['tasks'].values():
        assert r['share'] == pytest.approx(1 / 3)
        assert r['mmd']['subset'] >= 0 and r['mmd']['random_repeats'] == 2
    # cluster ids are unique over tasks: no cluster holds two tasks
    by_cluster = {}
    for x in samples:
        by_cluster.setdefault(x['cluster'], set()).add(x['task'])
    assert all(len(v) == 1 for v in by_cluster.values())
    assert summ['options']['features']['image'] == 'both' and summ['features']['views_per_pair'] == 2
    # per-task curriculum: each task has an easy stage, below the task's own complexity quantile
    for t in ('rain', 'haze', 'noise'):
        c = np.array([x['complexity'] for x in samples if x['task'] == t])
        st = np.array([x['stage'] for x in samples if x['task'] == t])
        assert (st == 1).any() and (c[st == 1] < np.quantile(c, 0.5)).all()
    with open(os.path.join(out, 'report.txt'), encoding='utf-8') as f:
        txt = f.read()
    assert 'tasks       : 3, quota equal' in txt and 'noise' in txt and 'random same size' in txt
    with open(os.path.join(out, 'source_scores.csv'), encoding='utf-8') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 36 and {r['task'] for r in rows} == {'rain', 'haze', 'noise'}
    assert all(r['key'].startswith(r['task'] + '_') for r in rows)
    assert os.path.getsize(os.path.join(out, 'report.png')) > 0
    from tripled_basicsr.distill.report import one_line_summary
    line = one_line_summary(summ)
    assert '[rain 3/16 q0.33 MMD' in line and 'noise 3/8' in line and '\n' not in line
    # the training side reads the labels and the recorded quota
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    ds = TripleDDataset({'name': 'd', 'dataroot': out, 'io_backend': {'type': 'lmdb'}, 'gt_size': 16,
                         'use_hflip': False, 'use_rot': False, 'phase': 'train', 'scale': 1})
    assert ds.task_names == ['haze', 'noise', 'rain'] and ds[0]['task'] == 'rain'
    assert ds.task_quota == pytest.approx({'rain': 1 / 3, 'haze': 1 / 3, 'noise': 1 / 3})


def test_proportional_quota_selection_types_and_resume(tasks_data, tmp_path):
    out = str(tmp_path / 'p')
    run_distill(options(tasks_data, out, selection={'num': 12}), progress=False)
    m = meta(out)
    assert {t: r['n'] for t, r in m['summary']['tasks'].items()} == {'rain': 5, 'haze': 4, 'noise': 3}
    # another selection type runs inside each task too; the features are reused from the work dir
    out2 = str(tmp_path / 'k')
    opt = options(tasks_data, out2, selection={'type': 'kcenter', 'num': 12, 'task_quota': {'rain': 0.5, 'haze': 0.25,
                                                                                            'noise': 0.25}})
    opt['work_dir'] = out + '.work'
    run_distill(opt, progress=False)
    m2 = meta(out2)
    assert m2['summary']['features']['embedded_this_run'] == 0
    assert [x['task'] for x in m2['samples']].count('rain') == 6
    assert m2['summary']['task_quota'] == {'rain': 0.5, 'haze': 0.25, 'noise': 0.25}


def test_a_task_named_differently_needs_new_features(tasks_data, tmp_path):
    """The task name prefixes the keys: the work dir refuses features listed under other names."""
    out = str(tmp_path / 'a')
    run_distill(options(tasks_data, out), progress=False)
    opt = options(tasks_data, str(tmp_path / 'b'))
    opt['sources'][0]['task'] = 'derain'
    opt['work_dir'] = out + '.work'
    from tripled_basicsr.distill.features import WorkDirMismatch
    with pytest.raises(WorkDirMismatch, match='different options'):
        run_distill(opt, progress=False)


def test_crop_units_with_several_tasks(tasks_data, tmp_path):
    out = str(tmp_path / 'c')
    opt = options(tasks_data, out, selection={'ratio': 0.1})
    for s in opt['sources']:
        s['crop_size'] = 16
    run_distill(opt, progress=False)
    m = meta(out)
    # 36 images of 32 x 32 = 144 crops of 16; 10 % of the pixels = 15 crops (proportional: 7/5/3)
    assert {t: (r['N'], r['n']) for t, r in m['summary']['tasks'].items()} == {'rain': (64, 7), 'haze': (48, 5),
                                                                                'noise': (32, 3)}
    for x in m['samples']:
        assert x['image_key'].startswith(x['task'] + '_img') and x['key'].startswith(x['image_key'] + '_y')


def test_on_error_per_task(tmp_path):
    data = make_tasks(str(tmp_path / 'src'), (('a', 8, 5), ('b', 8, 20)), size=32)
    with open(os.path.join(data['b'][0], 'img0003.png'), 'wb') as f:
        f.write(b'not a png')
    out = str(tmp_path / 'o')
    with pytest.raises(Exception, match=r"(?s)'b_img0003'.*sources\[1\]\.on_error: skip"):
        run_distill(options(data, out, selection={'ratio': 0.5}), progress=False)
    assert not os.path.exists(out)
    opt = options(data, out, selection={'ratio': 0.5})
    opt['sources'][1]['on_error'] = 'skip'
    s = run_distill(opt, progress=False)
    assert [x['key'] for x in s['skipped']] == ['b_img0003']
    assert s['tasks']['b']['N'] == 7 and s['tasks']['a']['N'] == 8


def test_single_source_has_no_task_fields(tasks_data, tmp_path):
    gt, lq = tasks_data['rain']
    out = str(tmp_path / 's')
    opt = options(tasks_data, out)
    del opt['sources']
    opt['source'] = {'dataroot_gt': gt, 'dataroot_lq': lq}
    s = run_distill(opt, progress=False)
    m = meta(out)
    assert 'tasks' not in s and 'task_quota' not in s and all('task' not in x for x in m['samples'])
    assert all(x['key'].startswith('img') for x in m['samples'])
    assert s['options']['features']['image'] == 'gt'


# ---------------------------------------------------------------- bad input: message, nothing written
def _expect_error(data, tmp_path, opt, match, exc=OptionError):
    roots = sorted({os.path.dirname(gt) for gt, _ in data.values()})
    before = [tree_fingerprint(r) for r in roots]
    with pytest.raises(exc) as e:
        run_distill(opt, progress=False)
    assert [tree_fingerprint(r) for r in roots] == before
    out = opt['output']['path']
    assert not os.path.exists(out) and not os.path.exists(out + '.work')
    assert match in str(e.value), str(e.value)
    return str(e.value)


def test_bad_task_options(tasks_data, tmp_path):
    out = str(tmp_path / 'o')
    cases = []
    o = options(tasks_data, out)
    o['sources'][2]['task'] = 'rain'
    cases.append((o, "sources[2].task 'rain' repeats sources[0].task"))
    o = options(tasks_data, out)
    o['sources'][1]['scale'] = 2
    cases.append((o, 'sources[1].scale (2) differs from sources[0].scale (1)'))
    o = options(tasks_data, out)
    del o['sources'][1]['task']
    cases.append((o, 'sources[1].task is required'))
    o = options(tasks_data, out)
    o['sources'][0]['task'] = 'rain.v2'
    cases.append((o, "sources[0].task 'rain.v2' may only hold letters"))
    o = options(tasks_data, out)
    o['sources'][0]['dataroot_qt'] = 'x'
    cases.append((o, 'Unknown option sources[0].dataroot_qt. Did you mean'))
    o = options(tasks_data, out)
    o['source'] = {'dataroot_gt': 'g', 'dataroot_lq': 'l'}
    cases.append((o, 'Set either source: (one paired set) or sources:'))
    cases.append((options(tasks_data, out, selection={'task_quota': {'rain': 0.5, 'haze': 0.5, 'snow': 0}}),
                  'selection.task_quota.snow: there is no task'))
    cases.append((options(tasks_data, out, selection={'task_quota': {'rain': 0.7, 'haze': 0.4, 'noise': -0.1}}),
                  'selection.task_quota.noise is -0.1'))
    cases.append((options(tasks_data, out, selection={'task_quota': {'rain': 0.5, 'haze': 0.3, 'noise': 0.3}}),
                  'the shares sum to 1.1, not 1'))
    o = options(tasks_data, out, selection={'task_quota': 'equal'})
    o['sources'] = o['sources'][:1]
    o['source'] = o.pop('sources')[0]
    del o['source']['task']
    cases.append((o, 'selection.task_quota applies to several tasks'))
    # data-dependent: found after listing the sources, before the backbone
    cases.append((options(tasks_data, out, selection={'ratio': 0.05}),
                  'task noise: its share 0.2222 of the 2 pairs of the subset is 0.44 pairs, which rounds to 0'))
    cases.append((options(tasks_data, out, selection={'ratio': 0.75, 'task_quota': 'equal'}),
                  'task noise has 8 pairs but its quota asks for 9: lower selection.ratio'))
    for opt, match in cases:
        _expect_error(tasks_data, tmp_path, opt, match)


def test_keys_and_pairs_must_be_unique_over_tasks(tmp_path):
    from tripled_basicsr.data.pair_folders import write_pair_folders
    rng = np.random.default_rng(0)
    img = [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(4)]
    a = write_pair_folders(str(tmp_path / 'a'), [('b_x', img[0], img[1]), ('y', img[2], img[3])])
    b = write_pair_folders(str(tmp_path / 'ab'), [('x', img[0], img[1]), ('z', img[2], img[3])])
    data = {'a': a, 'a_b': b}
    msg = _expect_error(data, tmp_path, options(data, str(tmp_path / 'o'), selection={'num': 2}),
                        "key 'a_b_x' is in two sources (sources[0], task a, and sources[1], task a_b)")
    assert 'rename a task or a file' in msg
    # the same folder under two tasks: every pair would count twice
    data = {'a': a, 'b': a}
    _expect_error(data, tmp_path, options(data, str(tmp_path / 'o'), selection={'num': 2}),
                  'sources[1] (task b) and sources[0] (task a) both list the pair')


# ---------------------------------------------------------------- generator + CPU recipe
def test_allinone_generator_layout_determinism_and_policy(tmp_path):
    from tripled_basicsr.demo_data._common import DemoDataError
    from tripled_basicsr.demo_data.allinone import NOISE_LEVELS, TASKS, main, write_allinone
    out = str(tmp_path / 'ai')
    s = write_allinone(out, sizes=(5, 4, 3, 2, 1), val=2, size=16, seed=3, progress=False)
    assert s['sizes'] == {'rain': 5, 'haze': 4, 'noise': 3, 'blur': 2, 'lowlight': 1}
    for t, n in s['sizes'].items():
        for split, k in (('train', n), ('val', 2)):
            for w in ('gt', 'lq'):
                assert len(os.listdir(os.path.join(out, t, split, w))) == k
    with open(os.path.join(out, 'allinone.json'), encoding='utf-8') as f:
        rec = json.load(f)
    assert list(rec['tasks']) == sorted(TASKS) and rec['gt_size'] == [16, 16]
    seeds = {(t, sp): rec['tasks'][t][sp]['seed'] for t in TASKS for sp in ('train', 'val')}
    assert len(set(seeds.values())) == 10  # every task and split its own scenes
    import cv2
    gt = cv2.imread(os.path.join(out, 'noise', 'train', 'gt', '0000.png')).astype(float)
    lq = cv2.imread(os.path.join(out, 'noise', 'train', 'lq', '0000.png')).astype(float)
    assert abs(np.std(lq - gt) - NOISE_LEVELS[0]) < 4  # image 0: sigma 15 (clipping aside)
    again = str(tmp_path / 'again')
    from tripled_basicsr.demo_data.allinone import generate_allinone
    generate_allinone(again, sizes={'haze': 4, 'rain': 5, 'noise': 3, 'blur': 2, 'lowlight': 1}, val=2, size=16, seed=3,
                      quiet=True)
    assert tree_fingerprint(os.path.join(out, 'rain')) == tree_fingerprint(os.path.join(again, 'rain'))
    # never over a folder we did not write; the CLI says what is wrong
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'mine.txt').write_text('keep')
    with pytest.raises(SystemExit):
        main(['--out', str(foreign), '--sizes', '2,2,2,2,2', '--size', '16', '--quiet'])
    assert os.listdir(foreign) == ['mine.txt']
    with pytest.raises(DemoDataError, match='--sizes: give 5 numbers'):
        write_allinone(str(tmp_path / 'x'), sizes='400,200', progress=False)
    assert not os.path.exists(tmp_path / 'x')
    write_allinone(out, sizes=(2, 2, 2, 2, 2), val=0, size=16, overwrite=True, progress=False)  # our own: replaced
    assert not os.path.exists(os.path.join(out, 'rain', 'val'))


def test_cpu_recipe_end_to_end(tmp_path, monkeypatch):
    """options/distill_allinone_cpu.yml as shipped, on tiny generated data in its datasets/ path."""
    from tripled_basicsr.demo_data.allinone import write_allinone
    from tripled_basicsr.distill.__main__ import main
    monkeypatch.chdir(tmp_path)
    write_allinone('datasets/allinone_cpu', sizes=(40, 20, 10, 10, 10), val=1, size=32, progress=False)
    assert main(['-opt', os.path.join(ROOT, 'options', 'distill_allinone_cpu.yml'), '--quiet']) == 0
    m = meta('datasets/allinone_cpu_distilled')
    # 10 % of 90 pairs = 9; equal quota over 5 tasks: 2, 2, 2, 2, 1
    assert [m['summary']['tasks'][t]['n'] for t in ('rain', 'haze', 'noise', 'blur', 'lowlight')] == [2, 2, 2, 2, 1]
    assert {x['task'] for x in m['samples']} == {'rain', 'haze', 'noise', 'blur', 'lowlight'}


def test_shipped_allinone_recipes_are_valid():
    from tripled_basicsr.utils.io import load_yaml_safe
    for name in ('distill_allinone.yml', 'distill_allinone_cpu.yml'):
        opt = merge_options(load_yaml_safe(os.path.join(ROOT, 'options', name)))
        assert [s['task'] for s in opt['sources']] == ['rain', 'haze', 'noise', 'blur', 'lowlight']
        assert opt['features']['image'] == 'both' and opt['selection']['task_quota'] == 'equal'
    # the training recipes read what the distillation recipes write
    for distill, train in (('distill_allinone.yml', 'tripled_allinone.yml'),
                           ('distill_allinone_cpu.yml', 'tripled_allinone_cpu.yml')):
        out = load_yaml_safe(os.path.join(ROOT, 'options', distill))['output']['path']
        assert load_yaml_safe(os.path.join(ROOT, 'options', train))['datasets']['train']['dataroot'] == out
