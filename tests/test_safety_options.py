"""Hostile option files and inputs ("Safety, second round", items 12-14 and 17): one test per
hole, named after it. Every input is generated here; nothing asserts a timing."""
import glob
import json
import os
import re
import stat
import subprocess
import sys
import threading

import cv2
import numpy as np
import pytest
import torch
import yaml

from tripled_basicsr import benchmark as bm
from tripled_basicsr.safe_yaml import (MAX_OPTION_BYTES, MAX_OPTION_DEPTH, MAX_OPTION_NODES, OptionFileLimitError,
                                       SafeOptionLoader)
from tripled_basicsr.utils.io import load_yaml_safe, tree_fingerprint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_conv': 1, 'upscale': 1,
       'act_type': 'prelu'}
LIMIT = f'{MAX_OPTION_NODES:,}'  # as the messages write it: 100,000


# ----------------------------------------------------------------------------- item 12: YAML alias bombs
def _bomb(indent='', levels=9, width=9):
    """The "billion laughs": level i is a list of ``width`` aliases of level i - 1 (9**9 values)."""
    lines = [f'{indent}a0: &a0 [' + ', '.join(['lol'] * width) + ']']
    lines += [f'{indent}a{i}: &a{i} [' + ', '.join([f'*a{i - 1}'] * width) + ']' for i in range(1, levels)]
    return '\n'.join(lines) + '\n'


def _alias_line(text):
    """1-based line of the first alias whose expansion passes the limit (level sizes 10, 91, 820, ...)."""
    total, size = 0, 0
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r'\s*a(\d+): &', line)
        if not m:
            total += 1 if line.strip() and not line.strip().endswith(':') else 0
            continue
        if m.group(1) == '0':
            size = 10
            total += 1 + size
            continue
        total += 2  # the key and the list
        for _ in range(9):
            total += size
            if total > MAX_OPTION_NODES:
                return n
        size = 9 * size + 1


BOMB_HEADERS = {  # where the key is accepted (distill: features.model_kwargs) or ignored; output paths under cwd
    'distill': 'name: bomb\nsource: {dataroot_gt: gt, dataroot_lq: lq}\noutput: {path: out}\nfeatures:\n'
               '  model_kwargs:\n',
    'benchmark': 'name: bomb\nsets: [Set5]\nmodels: [{name: input, type: input}]\noutput: {path: out}\nextra:\n',
    'study': 'name: bomb\nstudy_dir: out\nsource: {dataroot_gt: gt, dataroot_lq: lq}\ndistill:\n',
    'train': 'name: bomb\nmodel_type: SRModel\nnetwork_g:\n',
}


def test_yaml_alias_bomb_is_refused_by_the_loader_naming_file_line_and_limit(tmp_path):
    p = tmp_path / 'bomb.yml'
    text = 'name: x\n' + _bomb()
    p.write_text(text)
    line = _alias_line(text)
    with pytest.raises(OptionFileLimitError) as exc:
        load_yaml_safe(str(p))
    msg = str(exc.value)
    assert f'{p}, line {line}:' in msg and f'limited to {LIMIT} values' in msg and 'alias' in msg
    # the same bound for whoever loads with the loader class (compat hands it to BasicSR's parse_options)
    with open(p, encoding='utf-8') as f, pytest.raises(OptionFileLimitError, match=f'line {line}:'):
        yaml.load(f, Loader=SafeOptionLoader)
    # anchors and aliases of normal size still work, merge keys included
    ok = yaml.load('base: &b {lr: 1, betas: [0.9, 0.99]}\nopt: {<<: *b, lr: 2}\nsame: *b\n', Loader=SafeOptionLoader)
    assert ok['opt'] == {'lr': 2, 'betas': [0.9, 0.99]} and ok['same'] == ok['base']


@pytest.mark.parametrize('cli', sorted(BOMB_HEADERS))
def test_yaml_alias_bomb_fails_every_cli_with_the_message_and_writes_nothing(tmp_path, cli):
    work = tmp_path / 'work'
    work.mkdir()
    p = work / 'bomb.yml'
    text = BOMB_HEADERS[cli] + _bomb('  ')
    p.write_text(text)
    before = tree_fingerprint(str(tmp_path))
    env = dict(os.environ, OMP_NUM_THREADS='1', TRIPLED_BASICSR_ROOT=str(work))
    # (the timeout only keeps a regression from hanging the suite)
    r = subprocess.run([sys.executable, '-m', f'tripled_basicsr.{cli}', '-opt', str(p)], cwd=str(work), env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f'bomb.yml, line {_alias_line(text)}:' in r.stderr and LIMIT in r.stderr, r.stderr[-2000:]
    assert 'Traceback' not in r.stderr
    assert tree_fingerprint(str(tmp_path)) == before and sorted(os.listdir(work)) == ['bomb.yml']


def test_basicsr_parse_options_reads_through_the_bounded_loader(tmp_path, monkeypatch):
    import tripled_basicsr
    tripled_basicsr.register()
    from basicsr.utils import options
    p = tmp_path / 'bomb.yml'
    p.write_text('name: x\nnetwork_g:\n' + _bomb('  '))
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(p)])
    with pytest.raises(OptionFileLimitError, match=f'bomb.yml, line .*{LIMIT}'):
        options.parse_options(str(tmp_path), is_train=True)


def test_no_module_reads_yaml_around_the_bounded_loader():
    reads = re.compile(r'\byaml\.(safe_|full_|unsafe_)?load(_all)?\s*\(|\byaml\.(parse|compose)(_all)?\s*\(')
    offenders = []
    for path in glob.glob(os.path.join(REPO, 'tripled_basicsr', '**', '*.py'), recursive=True):
        if os.path.basename(path) == 'safe_yaml.py':
            continue
        with open(path, encoding='utf-8') as f:
            offenders += [f'{os.path.relpath(path, REPO)}:{i}' for i, line in enumerate(f, 1) if reads.search(line)]
    assert offenders == [], 'read option files with utils.io.load_yaml_safe or safe_yaml.load_options_stream'


@pytest.mark.parametrize('text, needle', [
    ('a: &a [1, *a]\n', 'line 1: the alias \\*a lies inside the block &a'),
    ('x: ' + '[' * (MAX_OPTION_DEPTH + 1) + ']' * (MAX_OPTION_DEPTH + 1) + '\n',
     f'line 1: lists/mappings are nested more than {MAX_OPTION_DEPTH} levels'),
    ('x: [' + ', '.join(['1'] * MAX_OPTION_NODES) + ']\n', f'line 1: the options hold more than {LIMIT} values'),
])
def test_recursive_deep_or_huge_option_files_are_refused_naming_the_line(tmp_path, text, needle):
    p = tmp_path / 'x.yml'
    p.write_text(text)
    with pytest.raises(OptionFileLimitError, match=f'x.yml, {needle}'):
        load_yaml_safe(str(p))


def test_option_file_over_the_size_limit_is_refused_before_parsing(tmp_path):
    p = tmp_path / 'big.yml'
    p.write_text('name: x\n# ' + 'x' * MAX_OPTION_BYTES + '\n')
    with pytest.raises(OptionFileLimitError, match=r'big.yml: the option file is larger than 2 MiB'):
        load_yaml_safe(str(p))
    with open(p, encoding='utf-8') as f, pytest.raises(OptionFileLimitError, match='larger than 2 MiB'):
        yaml.load(f, Loader=SafeOptionLoader)


def test_every_shipped_recipe_still_loads():
    paths = sorted(glob.glob(os.path.join(REPO, 'options', '**', '*.yml'), recursive=True))
    assert len(paths) > 20
    for path in paths:
        opt = load_yaml_safe(path)
        assert isinstance(opt, dict) and opt, path


def test_shipped_benchmark_and_study_recipes_pass_the_new_option_checks():
    from tripled_basicsr.study import open_options
    for path in sorted(glob.glob(os.path.join(REPO, 'options', 'benchmark_*.yml'))):
        opt = load_yaml_safe(path)
        bm.check_options(opt, path)
        defaults = {'datasets_root': 'datasets', **{k: opt[k] for k in bm.SET_DEFAULT_KEYS if k in opt}}
        for i, s in enumerate(opt['sets']):
            bm.set_spec(s, defaults, f'sets[{i}].')
    studies = [p for p in sorted(glob.glob(os.path.join(REPO, 'options', 'study_*.yml')))
               if 'source' in load_yaml_safe(p)]  # (study_demo.yml is the demo's template: it has no data)
    assert studies
    for path in studies:  # subset studies and the SLKD study (mode: slkd)
        open_options(load_yaml_safe(path))[1].check()


# ----------------------------------------------------------------------------- item 17: what -opt may be
class _FifoGuard:
    """A writer waiting on the FIFO, so a loader that (wrongly) opened it would read EOF instead
    of blocking the test forever; released at the end."""

    def __init__(self, path):
        self.path = path
        self.thread = threading.Thread(target=lambda: open(path, 'w').close(), daemon=True)
        self.thread.start()

    def release(self):
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # lets the waiting writer's open return
        self.thread.join(10)
        os.close(fd)


def test_opt_that_is_no_regular_file_or_holds_no_options_says_which(tmp_path, capsys):
    fifo = tmp_path / 'pipe.yml'
    os.mkfifo(fifo)
    guard = _FifoGuard(str(fifo))
    (tmp_path / 'empty.yml').write_text('')
    (tmp_path / 'comments.yml').write_text('# nothing here\n\n')
    cases = [(os.devnull, 'holds no options'),
             (str(fifo), 'is not a regular file: it is a named pipe \\(FIFO\\), which is not read'),
             (str(tmp_path), 'is not a regular file: it is a directory'),
             (str(tmp_path / 'empty.yml'), 'holds no options'), (str(tmp_path / 'comments.yml'), 'holds no options'),
             (str(tmp_path / 'missing.yml'), 'does not exist')]
    try:
        for path, needle in cases:
            with pytest.raises((ValueError, OSError), match=f'Option file {re.escape(path)} {needle}'):
                load_yaml_safe(path)
        # through a command: one line, exit 2
        assert bm.main(['-opt', os.devnull]) == 2
        assert f'benchmark: error: Option file {os.devnull} holds no options' in capsys.readouterr().err
    finally:
        guard.release()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_cost_size_beyond_the_limit_names_the_flag(capsys):
    from tripled_basicsr.cost import MAX_SIDE, main
    with pytest.raises(SystemExit) as exc:
        main(['-opt', os.path.join(REPO, 'options', 'slkd_derain.yml'), '--size', '100000', '100000'])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f'--size 100000 100000: each side must be between 1 and {MAX_SIDE} px' in err


def test_distill_report_lists_only_the_files_written(tmp_path):
    from tripled_basicsr.distill import run_distill
    from tripled_basicsr.distill._testing import tiny_options, write_pairs
    from tripled_basicsr.distill.report import report_files
    gt, lq = write_pairs(str(tmp_path / 'src'), num=12, size=32)
    out = tmp_path / 'out'
    run_distill(tiny_options(gt, lq, str(out), selection={'ratio': 0.5},
                             report={'plot': False, 'scores_csv': False, 'random_repeats': 1}), progress=False)
    line = next(x for x in (out / 'report.txt').read_text().splitlines() if x.strip().startswith('report '))
    listed = line.split(f'{out}/', 1)[1].split(', ')
    assert listed == ['report.txt', 'tripled_meta.json'] and all((out / f).is_file() for f in listed)
    full = {'options': {'report': {'plot': True, 'scores_csv': True}},
            'calibration': {'enabled': True, 'mode': 'pixels', 'applied': True}}
    assert report_files(full) == ['report.png', 'report.txt', 'tripled_meta.json', 'source_scores.csv',
                                  'calibrator.pth']
    full['calibration']['applied'] = False  # a calibrator that made things worse is not written
    assert 'calibrator.pth' not in report_files(full)


# ----------------------------------------------------------------------------- item 13: benchmark
def _img(path, h, w, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _bench(tmp_path, **over):
    opt = {'name': 't', 'device': 'cpu', 'sets': [{'name': 'Mine', 'dataroot_gt': str(tmp_path / 'gt'),
                                                  'dataroot_lq': str(tmp_path / 'lq')}],
           'models': [{'name': 'input', 'type': 'input'}], 'output': {'path': str(tmp_path / 'out')}}
    opt.update(over)
    p = tmp_path / 'bench.yml'
    p.write_text(yaml.safe_dump(opt))
    return str(p)


def _srvgg(path, **kw):
    from basicsr.archs.srvgg_arch import SRVGGNetCompact
    net_opt = dict(NET, **kw)
    torch.save({'params': SRVGGNetCompact(**{k: v for k, v in net_opt.items() if k != 'type'}).state_dict()}, path)
    return net_opt


@pytest.mark.parametrize('network_g, needles', [
    (dict(NET, num_feat=8), ['7 tensor(s) differ in shape', 'body.0.weight (checkpoint 4x3x3x3, network 8x3x3x3)']),
    ({'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_block': 1, 'upscale': 2},
     ['(type MSRResNet)', 'missing from the checkpoint: conv_first.weight', 'not in the network: body.0.weight']),
])
def test_benchmark_wrong_architecture_weights_name_the_file_type_and_keys(tmp_path, capsys, network_g, needles):
    _img(str(tmp_path / 'gt' / 'a.png'), 16, 16, 0)
    _img(str(tmp_path / 'lq' / 'a.png'), 16, 16, 1)
    w = str(tmp_path / 'net.pth')
    _srvgg(w)
    p = _bench(tmp_path, models=[{'name': 'input', 'type': 'input'}, {'name': 'm', 'network_g': network_g,
                                                                       'weights': w}])
    assert bm.main(['-opt', p]) == 2
    err = capsys.readouterr().err
    assert f'model m: the weights {w} do not fit network_g' in err and 'network_g of the training run' in err
    assert all(n in err for n in needles), err
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('over, needle', [
    ({'tile': {'size': -5}}, 'tile.size must be an integer >= 0; got -5'),
    ({'tile': {'size': 8, 'overlap': 16}}, r'tile.overlap \(16\) must be <= tile.size \(8\)'),
    ({'tile': {'size': 8, 'overlap': -1}}, 'tile.overlap must be an integer >= 0'),
    ({'tile': {'size': 8, 'blend': 'linar'}}, 'tile.blend must be one of none, linear, gaussian.*Did you mean linear'),
    ({'tile': {'size': 8, 'overlap': 8, 'blend': 'linear', 'blend_width': 6}}, r'tile.blend_width \(6\) must be <='),
    ({'tile': {'size': 8, 'pad_multiple': 0}}, 'tile.pad_multiple must be an integer >= 1'),
    ({'scale': 0}, r'sets\[0\].scale must be an integer >= 1'),
    ({'max_images': 0}, r'sets\[0\].max_images must be an integer >= 1'),
    ({'sets': [{'name': 'BSD68', 'sigmas': [-1]}]}, r'sets\[0\].sigmas\[0\] must be a number > 0'),
    ({'output': {'path': 'x', 'overwrite': 'yes'}}, 'output.overwrite must be true or false'),
])
def test_benchmark_numeric_options_are_validated(tmp_path, capsys, over, needle):
    assert bm.main(['-opt', _bench(tmp_path, **over)]) == 2
    assert re.search(needle, capsys.readouterr().err)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('over, needle', [
    ({'tilee': {'size': 8}}, 'Unknown option tilee. Did you mean tile?'),
    ({'tile': {'sise': 8}}, 'Unknown option tile.sise. Did you mean size?'),
    ({'models': [{'name': 'm', 'network_g': NET, 'weight': 'x.pth'}]}, r'Unknown option models\[0\].weight. Did you '
                                                                        r'mean weights\?'),
    ({'output': {'pth': 'x'}}, 'Unknown option output.pth. Did you mean path?'),
    ({'sets': [{'name': 'Set5', 'scael': 2}]}, r'Unknown option sets\[0\].scael. Did you mean scale\?'),
])
def test_benchmark_misspelt_keys_are_refused_with_a_suggestion(tmp_path, capsys, over, needle):
    assert bm.main(['-opt', _bench(tmp_path, **over)]) == 2
    err = capsys.readouterr().err
    assert needle in err or re.search(needle, err), err
    assert 'See docs/reference/benchmark.md' in err and not (tmp_path / 'out').exists()


def test_benchmark_gt_lq_size_mismatch_beyond_the_modcrop_is_refused(tmp_path, capsys):
    _img(str(tmp_path / 'gt' / 'a.png'), 64, 64, 0)
    _img(str(tmp_path / 'lq' / 'a.png'), 25, 30, 1)  # x2 = 60x50: the GT would be cropped by 4 and 14 px
    p = _bench(tmp_path, scale=2)
    assert bm.main(['-opt', p]) == 2
    err = capsys.readouterr().err
    assert f'the GT {tmp_path / "gt" / "a.png"} is 64x64 (WxH) but its LQ {tmp_path / "lq" / "a.png"} is 30x25' in err
    assert 'LQ x 2 = 60x50 (or up to 1 px larger' in err and not (tmp_path / 'out').exists()
    # the usual mod-crop (GT at most scale - 1 px larger) is still accepted
    _img(str(tmp_path / 'gt' / 'a.png'), 51, 61, 0)
    (label, pairs), = bm.load_pairs(bm.set_spec({'name': 'Mine', 'dataroot_gt': str(tmp_path / 'gt'),
                                                 'dataroot_lq': str(tmp_path / 'lq'), 'scale': 2})).items()
    assert pairs[0][1].shape[:2] == (50, 60)


def test_benchmark_gt_without_lq_is_an_error_or_an_explicit_reported_skip(tmp_path, capsys):
    for i in range(12):
        _img(str(tmp_path / 'gt' / f'im{i:02d}.png'), 16, 16, i)
        if i != 7:
            _img(str(tmp_path / 'lq' / f'im{i:02d}.png'), 16, 16, 50 + i)
    assert bm.main(['-opt', _bench(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f'GT {tmp_path / "gt" / "im07.png"} has no LQ in {tmp_path / "lq"}' in err and 'on_unpaired: skip' in err
    assert not (tmp_path / 'out').exists()
    _img(str(tmp_path / 'lq' / 'stray.png'), 16, 16, 99)  # an LQ without GT is named too
    assert bm.main(['-opt', _bench(tmp_path)]) == 2
    assert f'LQ {tmp_path / "lq" / "stray.png"} has no GT' in capsys.readouterr().err
    os.remove(tmp_path / 'lq' / 'stray.png')
    # explicit skip: scored and reported as 11 of 12, with the file named
    assert bm.main(['-opt', _bench(tmp_path, on_unpaired='skip')]) == 0
    capsys.readouterr()
    data = json.loads((tmp_path / 'out' / 'results.json').read_text())
    row, = data['rows']
    assert row['images'] == 11 and row['of'] == 12 and row['skipped_files'] == [
        f'GT {tmp_path / "gt" / "im07.png"} has no LQ in {tmp_path / "lq"}']
    assert any(s.startswith('Mine: scored 11 of 12 images (on_unpaired: skip), skipped: GT') for s in data['skipped'])
    assert '| Mine (11 of 12 images) |' in (tmp_path / 'out' / 'results.md').read_text()


# ----------------------------------------------------------------------------- item 14: study
def _study(tmp_path, **over):
    opt = {'name': 'tiny', 'study_dir': str(tmp_path / 'study'),
           'source': {'dataroot_gt': str(tmp_path / 'pool' / 'gt'), 'dataroot_lq': str(tmp_path / 'pool' / 'lq')},
           'ratios': [0.25], 'seeds': [0], 'arms': ['full', 'random', 'tripled'],
           'training': {'iters': 2, 'batch_size': 2, 'gt_size': 16, 'num_worker': 0,
                        'basicsr': {'network_g': dict(NET)}},
           'test_sets': [{'name': 'val', 'dataroot_gt': str(tmp_path / 'val' / 'gt'),
                          'dataroot_lq': str(tmp_path / 'val' / 'lq')}],
           'device': 'cpu'}
    opt.update(over)
    return opt


@pytest.mark.parametrize('over, needle', [
    ({'distill': {'selection': {'raito': 0.1}}},
     r'distill.selection.raito \(arm tripled\): Unknown option selection.raito. Did you mean ratio\?'),
    ({'arms': ['full', 'mine'], 'arm_definitions': {'mine': {'base': 'tripled',
                                                             'distill': {'features': {'batch_size': 0}}}}},
     r'arm_definitions.mine.distill.features.batch_size \(arm mine\): features.batch_size must be an integer >= 1'),
    ({'training': {'iters': 2, 'basicsr': {'network_g': dict(NET, type='SRVGGNetCompakt')}}},
     r"training.basicsr.network_g.type 'SRVGGNetCompakt' is not a registered BasicSR arch. Did you mean "
     r"SRVGGNetCompact\?"),
    ({'training': {'iters': 2, 'basicsr': {'network_g': dict(NET, num_feats=4)}}},
     r"training.basicsr.network_g \(type SRVGGNetCompact\) cannot be built.*unexpected keyword argument 'num_feats'"),
    ({'training': {'iters': 2, 'model_type': 'SRModle', 'basicsr': {'network_g': NET}}},
     r"training.model_type 'SRModle' \(arm full\) is not a registered BasicSR model. Did you mean SRModel"),
    ({'tile': {'size': -5}}, 'tile.size must be an integer >= 0; got -5'),
])
def test_study_checks_every_arm_before_the_first_trains(tmp_path, monkeypatch, capsys, over, needle):
    from tripled_basicsr.study.__main__ import main as study_main
    from tripled_basicsr.study.runner import Study
    started = []
    monkeypatch.setattr(Study, 'prepare', lambda self, run: started.append(run.id))
    monkeypatch.setattr(Study, 'train', lambda self, run, prep: started.append(run.id))
    p = tmp_path / 'study.yml'
    p.write_text(yaml.safe_dump(_study(tmp_path, **over)))
    assert study_main(['-opt', str(p)]) == 2
    assert re.search(needle, capsys.readouterr().err)
    assert started == [] and not (tmp_path / 'study').exists()


def test_study_failed_distill_or_training_quotes_the_error_not_only_the_log(tmp_path):
    from tripled_basicsr.study import merge_options
    from tripled_basicsr.study.runner import Study, StudyError
    fake = tmp_path / 'fakepython'
    fake.write_text('#!/bin/sh\necho "features: 10/10"\necho "error: OptionError: source.dataroot_gt /gone does not '
                    'exist." >&2\nexit 2\n')
    fake.chmod(0o755)
    study = Study(merge_options(_study(tmp_path, random_crops={'crop_size': 16})),
                  python=str(fake))  # a pinned crop size: the pool is never read here
    runs = {r.id: r for r in study.runs}
    for rid in ('tripled_25pct_s0', 'random_25pct_s0'):
        os.makedirs(study.path('runs', rid))
    with pytest.raises(StudyError) as exc:
        study._distill(runs['tripled_25pct_s0'], study.path('subsets', 'tripled_25pct_s0'))
    msg = str(exc.value)
    assert 'distillation failed (exit 2): error: OptionError: source.dataroot_gt /gone does not exist.' in msg
    assert 'features: 10/10' not in msg and 'distill.log' in msg
    with pytest.raises(StudyError, match=r'training failed \(exit 2\): error: OptionError: source.dataroot_gt /gone'):
        study.train(runs['random_25pct_s0'], {'units': 3, 'root': str(tmp_path / 'sub')})
