"""Hostile or broken files on the resume path: training states that ask to run code, a truncated
SLKD record, option files that hold no options. One test per hole, named after what it reproduces."""
import os
import re
import shutil
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import basicsr_checkout, run_py, tiny_sr_train_opt, write_pairs
from test_curriculum_sampler import make_distilled
from test_safety_train import _save_ckpt as save_good
from test_safety_train import _truncate as truncate
from test_slkd_model import batch, build, make_opt, save_teacher, teachers  # noqa: F401  (teachers: fixture)
from tripled_basicsr import compat
from tripled_basicsr.models.slkd_model import SLKDConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = os.path.join(REPO, 'options', 'cpu')
ENV = {'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
SYSTEM = r'(posix|nt|os)\.system'  # how pickle names os.system
NUMPY_RNG_GLOBALS = {'numpy.ndarray', 'numpy.dtype', 'numpy._core.multiarray._reconstruct',
                     'numpy.core.multiarray._reconstruct'}


class RunsCommand:
    """Unpickling this runs ``touch marker`` (what a crafted checkpoint does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def save_hostile_state(path, marker, it=4):
    """A training state that looks like BasicSR's, with a payload that runs a command when unpickled."""
    torch.save({'epoch': 0, 'iter': it, 'optimizers': [], 'schedulers': [], 'payload': RunsCommand(marker)},
               str(path))
    return str(path)


def states_opt(root, name='run', **extra):
    """Options as parse_options leaves them for a run that resumes (models/ and training_states/ exist)."""
    exp = os.path.join(str(root), 'experiments', name)
    for sub in ('training_states', 'models'):
        os.makedirs(os.path.join(exp, sub), exist_ok=True)
    opt = {'name': name, 'root_path': str(root), 'auto_resume': True, 'num_gpu': 0, 'network_g': {},
           'path': {'resume_state': None, 'models': os.path.join(exp, 'models')}}
    opt.update(extra)
    return opt, exp




def listing(folder):
    return {os.path.relpath(os.path.join(d, f), folder) for d, _, files in os.walk(folder) for f in files}


def dump(path, opt):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return str(path)


# ---------------------------------------------------------------------- item 5: pickle code in a state
def test_pickle_code_in_resume_state_is_refused(tmp_path):
    marker = tmp_path / 'PWNED'
    opt, exp = states_opt(tmp_path, auto_resume=False)
    opt['path']['resume_state'] = save_hostile_state(os.path.join(exp, 'training_states', '4.state'), marker)
    torch.save({'params': {'w': torch.ones(2)}}, os.path.join(exp, 'models', 'net_g_4.pth'))
    with pytest.raises(compat.UnsafeCheckpointError, match=rf'path\.resume_state .*4\.state asks to load the Python '
                                                           rf'global\(s\) {SYSTEM}.*nothing in it ran.*Delete it'):
        compat.load_resume_state(opt)
    assert not marker.exists()
    assert 'pretrain_network_g' not in opt['path']  # check_resume never ran


@pytest.mark.parametrize('network', ['network_file_present', 'network_file_missing'])
def test_pickle_code_in_auto_resume_state_is_refused_not_skipped(tmp_path, capsys, network):
    """--auto_resume refuses (does not fall back to 2.state) when the newest state asks to run code,
    also when that state would be skipped unread for a missing network file."""
    marker = tmp_path / 'PWNED'
    opt, exp = states_opt(tmp_path)
    save_good(exp, 2)
    evil = save_hostile_state(os.path.join(exp, 'training_states', '4.state'), marker)
    if network == 'network_file_present':
        torch.save({'params': {'w': torch.ones(2)}}, os.path.join(exp, 'models', 'net_g_4.pth'))
    before = listing(exp)
    with pytest.raises(compat.UnsafeCheckpointError, match=rf'--auto_resume: {re.escape(evil)} asks to load the Python '
                                                           rf'global\(s\) {SYSTEM}.*stops here rather than resume'):
        compat.load_resume_state(opt)
    assert not marker.exists()
    assert opt['path']['resume_state'] is None and listing(exp) == before
    assert 'resuming from' not in capsys.readouterr().err


def test_pickle_code_in_renamed_state_is_refused_by_sampler_glue(tmp_path):
    """The curriculum glue reads the iteration of a state not named <iter>.state: safely too."""
    from tripled_basicsr.data.train_loader import _iter_of_state_path
    marker = tmp_path / 'PWNED'
    path = save_hostile_state(tmp_path / 'backup.state', marker)
    with pytest.raises(compat.UnsafeCheckpointError, match=rf'backup\.state asks to load .*{SYSTEM}'):
        _iter_of_state_path(path)
    assert not marker.exists()
    torch.save({'epoch': 1, 'iter': 6, 'tripled_rng': {'numpy': np.random.get_state()}}, str(tmp_path / 'mine.state'))
    assert _iter_of_state_path(str(tmp_path / 'mine.state')) == 6


def test_numpy_allowed_in_states_is_uint32_rng_arrays_only(tmp_path):
    """The numpy globals a state may use build the RNG's uint32 array and nothing else: an object
    array (which could carry other objects) or a float array is refused."""
    ok = tmp_path / 'ok.state'
    torch.save({'iter': 1, 'rng': np.random.get_state()}, str(ok))
    state = compat.load_training_state(str(ok))
    np.random.set_state(state['rng'])  # a real RNG state again
    for name, value in (('object', np.array([1, 'a'], dtype=object)), ('float', np.zeros(3))):
        path = tmp_path / f'{name}.state'
        torch.save({'iter': 1, 'x': value}, str(path))
        with pytest.raises(compat.UnsafeCheckpointError, match=rf'{name}\.state asks to load'):
            compat.load_training_state(str(path))


def test_pickle_code_in_network_file_is_refused(tmp_path):
    """BasicSR's load_network (net_g_<iter>.pth on resume) goes through base_model.torch: weights only."""
    import basicsr.models.base_model as base_model
    compat.install_atomic_checkpoints()
    marker = tmp_path / 'PWNED'
    path = tmp_path / 'net_g_4.pth'
    torch.save({'params': {'w': torch.ones(2)}, 'payload': RunsCommand(marker)}, str(path))
    with pytest.raises(Exception, match=SYSTEM):
        base_model.torch.load(str(path), map_location='cpu')
    assert not marker.exists()


# ---------------------------------------------------------------------- item 11: truncated SLKD record
def slkd_checkpoints(tmp_path, teachers):  # noqa: F811
    """A real SLKDModel trained two steps, checkpoints 1 and 2 (net_g, state, slkd record), and
    options as parse_options leaves them for --auto_resume."""
    opt = make_opt(tmp_path / 'experiments', teachers)  # experiments/exp/{models,training_states}
    os.makedirs(opt['path']['training_states'])  # BasicSR's train pipeline makes it
    m = build(opt)
    for it in (1, 2):
        m.feed_data(batch(seed=it))
        m.optimize_parameters(it)
        m.save(0, it)
    resumed = dict(opt, root_path=str(tmp_path), name='exp', auto_resume=True)
    resumed['path'] = dict(opt['path'])
    return resumed, tmp_path / 'experiments' / 'exp'


def test_auto_resume_falls_back_past_truncated_slkd_record(tmp_path, teachers, capsys, one_thread):  # noqa: F811
    opt, exp = slkd_checkpoints(tmp_path, teachers)
    bad = str(exp / 'models' / 'slkd_2.pth')
    truncate(bad)
    state = compat.load_resume_state(opt)
    err = capsys.readouterr().err
    assert state['iter'] == 1 and opt['path']['resume_state'].endswith('1.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_1.pth')
    assert f'skipping unreadable training state {exp / "training_states" / "2.state"} (its file {bad} is truncated' \
        in err and 'resuming from' in err
    m = build(dict(opt, auto_resume=False))  # the model resumes from record 1
    assert m._resume_record['path'].endswith('slkd_1.pth')


def test_resume_state_with_truncated_slkd_record_names_it(tmp_path, teachers, one_thread):  # noqa: F811
    opt, exp = slkd_checkpoints(tmp_path, teachers)
    bad = str(exp / 'models' / 'slkd_2.pth')
    truncate(bad)
    opt.update(auto_resume=False)
    opt['path']['resume_state'] = str(exp / 'training_states' / '2.state')
    with pytest.raises(RuntimeError, match=rf'path\.resume_state .*2\.state needs {re.escape(bad)}, which is '
                                           rf'truncated.*--auto_resume'):
        compat.load_resume_state(opt)
    # the model itself (e.g. built by other code) names the file too, instead of a raw zip error
    with pytest.raises(SLKDConfigError, match=rf'its SLKD record {re.escape(bad)} cannot be read .*truncated'):
        build(opt)


# ---------------------------------------------------------------------- item 17: no options
@pytest.mark.parametrize('text, message', [('', 'holds no options'), ('# only a comment\n', 'holds no options'),
                                           ('- name: x\n', 'must hold a mapping'), ('42\n', 'must hold a mapping')])
def test_options_file_without_options_is_named_by_parse_options(tmp_path, monkeypatch, text, message):
    """Stock parse_options (basicsr/train.py, test.py) with the plugin: a clear error, not TypeError 'NoneType'."""
    from basicsr.utils.options import parse_options
    yml = tmp_path / 'empty.yml'
    yml.write_text(text)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(yml)])
    with pytest.raises(ValueError, match=rf'Option file {re.escape(str(yml))} {message}'):
        parse_options(str(tmp_path), is_train=True)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', os.devnull])
    with pytest.raises(ValueError, match=rf'Option file {re.escape(os.devnull)} holds no options'):
        parse_options(str(tmp_path), is_train=False)


@pytest.mark.parametrize('entry', [['-m', 'tripled_basicsr.train'], ['-m', 'tripled_basicsr.test'],
                                   pytest.param(['basicsr/train.py'], marks=pytest.mark.slow),
                                   pytest.param(['basicsr/test.py'], marks=pytest.mark.slow)])
def test_empty_options_file_in_every_entry_point(tmp_path, entry):
    co = basicsr_checkout(tmp_path)
    (co / 'empty.yml').write_text('')
    r = run_py(entry + ['-opt', 'empty.yml'], cwd=co, env=ENV)
    assert r.returncode != 0
    assert 'Option file empty.yml holds no options' in r.stdout, r.stdout[-2000:]
    assert 'NoneType' not in r.stdout
    if entry[0] == '-m':
        assert r.returncode == 2 and 'Traceback' not in r.stdout
    assert not (co / 'experiments').exists() and not (co / 'results').exists()


# ---------------------------------------------------------------------- real training runs
@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A BasicSR checkout with short real runs through stock basicsr/train.py: SRModel with MultiStepLR
    and with CosineAnnealingRestartLR, TripleDModel with the curriculum sampler, and SLKDModel on a
    distilled set with the curriculum sampler (4 iterations, checkpoints at 2 and 4)."""
    co = basicsr_checkout(tmp_path_factory.mktemp('resume'))
    gt, lq, _ = write_pairs(str(co / 'datasets' / 'pairs'), n=4, size=(64, 64), scale=2)
    make_distilled(co / 'datasets' / 'cpu' / 'tripled_x1', n=8, size=48)

    def train(opt, name):
        r = run_py(['basicsr/train.py', '-opt', dump(co / f'{name}.yml', opt)], cwd=co, env=ENV)
        assert r.returncode == 0, r.stdout[-4000:]

    ds = {'name': 'pairs', 'type': 'PairedImageDataset', 'dataroot_gt': gt, 'dataroot_lq': lq,
          'io_backend': {'type': 'disk'}, 'gt_size': 32, 'use_hflip': True, 'use_rot': True,
          'num_worker_per_gpu': 0, 'batch_size_per_gpu': 2, 'dataset_enlarge_ratio': 1, 'prefetch_mode': None}
    train(tiny_sr_train_opt('sr_multistep', {'train': ds}, 2), 'sr_multistep')
    opt = tiny_sr_train_opt('sr_cosine', {'train': ds}, 2)
    opt['train']['scheduler'] = {'type': 'CosineAnnealingRestartLR', 'periods': [2], 'restart_weights': [1],
                                 'eta_min': 1e-6}
    train(opt, 'sr_cosine')
    with open(os.path.join(CPU, 'tripled_uhd_cpu.yml')) as f:
        opt = yaml.safe_load(f)
    opt['datasets']['train']['sampler']['curriculum'] = True
    opt['train'].update(total_iter=2)
    opt['train']['scheduler']['periods'] = [2]
    opt['val']['val_freq'] = 1000
    opt['logger'].update(save_checkpoint_freq=2, use_tb_logger=False)
    train(opt, 'tripled_curriculum')
    with open(os.path.join(CPU, 'slkd_denoise_cpu.yml')) as f:
        opt = yaml.safe_load(f)
    (co / 'pretrained').mkdir()
    for i, t in enumerate(('teacher_a', 'teacher_b')):
        save_teacher(co / opt['path'][f'pretrain_network_{t}'], opt[f'network_{t}'], i)
    opt['train']['scheduler']['periods'] = [6]  # room for the resumed run
    train(opt, 'slkd')
    return co, opt


@pytest.mark.slow
def test_real_training_states_load_with_weights_only(trained):
    """Every state our training writes loads with weights_only=True and no extra global at all
    (the numpy RNG state is saved as plain values), and holds what a weights_only=False load gives."""
    co, _ = trained
    runs = {'sr_multistep': 2, 'sr_cosine': 2, 'tripled_uhd_cpu': 2, 'slkd_denoise_cpu': 4}
    for name, last in runs.items():
        states = co / 'experiments' / name / 'training_states'
        assert sorted(os.listdir(states))[-1] == f'{last}.state', name
        for state_name in os.listdir(states):
            path = str(states / state_name)
            assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path
            safe = compat.load_training_state(path)
            assert_same(safe, torch.load(path, weights_only=False), path)
            if name in ('tripled_uhd_cpu', 'slkd_denoise_cpu'):
                assert {'tripled_rng', 'tripled_sampler'} <= set(safe)
                name_, keys = safe['tripled_rng']['numpy'][:2]
                assert name_ == 'MT19937' and len(keys) == 624 and all(isinstance(k, int) for k in keys)
    milestones = compat.load_training_state(str(co / 'experiments/sr_multistep/training_states/2.state'))
    assert dict(milestones['schedulers'][0]['milestones']) == {100: 1}  # a collections.Counter
    for rec in ('slkd_2.pth', 'slkd_4.pth'):  # the SLKD record: tensors and plain values
        torch.load(co / 'experiments/slkd_denoise_cpu/models' / rec, weights_only=True)


def assert_same(a, b, where):
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f'{where}[{k!r}]')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]')
    elif isinstance(a, (torch.Tensor, np.ndarray)):
        assert a.dtype == b.dtype and (a == b).all(), where
    else:
        assert a == b or (a != a and b != b), where  # nan == nan


@pytest.mark.slow
def test_stock_train_script_auto_resume_skips_truncated_slkd_record(trained):
    """basicsr/train.py --auto_resume (our loader: stock's would fail on CPU and on the numpy RNG state)
    with the newest SLKD record truncated: resumes from 2.state, sampler included, and trains on."""
    co, opt = trained
    opt = dict(opt, name='slkd_truncated')
    shutil.copytree(co / 'experiments' / 'slkd_denoise_cpu', co / 'experiments' / 'slkd_truncated')
    exp = co / 'experiments' / 'slkd_truncated'
    bad = exp / 'models' / 'slkd_4.pth'
    truncate(bad)
    r = run_py(['basicsr/train.py', '-opt', dump(co / 'slkd_truncated.yml', opt), '--auto_resume', '--force_yml',
                'train:total_iter=6'], cwd=co, env=ENV)
    assert r.returncode == 0, r.stdout[-4000:]
    assert 'skipping unreadable training state' in r.stdout and str(bad) in r.stdout
    assert f'resuming from {exp / "training_states" / "2.state"}' in r.stdout
    assert 'Resuming training from epoch' in r.stdout and 'iter: 2.' in r.stdout
    assert 'Curriculum sampler resumed at step 2' in r.stdout
    assert (exp / 'training_states' / '6.state').is_file() and (exp / 'models' / 'slkd_6.pth').is_file()


@pytest.mark.slow
@pytest.mark.parametrize('entry', [['basicsr/train.py'], ['-m', 'tripled_basicsr.train']])
def test_stock_train_script_refuses_pickle_code_in_auto_resume_state(trained, entry):
    """Stock basicsr/train.py with the plugin (and our entry point) goes through the safe loader."""
    co, _ = trained
    marker = co / 'PWNED'
    name = f'hostile_{len(entry)}'
    exp = co / 'experiments' / name
    shutil.copytree(co / 'experiments' / 'sr_multistep', exp)
    shutil.copy(exp / 'models' / 'net_g_2.pth', exp / 'models' / 'net_g_4.pth')
    evil = save_hostile_state(exp / 'training_states' / '4.state', marker)
    before = listing(co / 'experiments')
    with open(co / 'sr_multistep.yml') as f:
        opt = dict(yaml.safe_load(f), name=name)
    r = run_py(entry + ['-opt', dump(co / f'{name}.yml', opt), '--auto_resume'], cwd=co, env=ENV)
    assert r.returncode != 0
    assert f'{evil} asks to load the Python global(s) ' in r.stdout and 'nothing in it ran' in r.stdout, \
        r.stdout[-3000:]
    if entry[0] == '-m':
        assert r.returncode == 2 and 'Traceback' not in r.stdout
    assert not marker.exists()
    assert listing(co / 'experiments') == before


def test_a_state_whose_arrays_are_not_the_rng_array_is_refused_after_loading(tmp_path):
    """Crafted pickles can build other arrays from the allowed numpy globals (np.dtype('O8', ...)
    plus _reconstruct): whatever the route, a loaded state holding one is refused."""
    for bad in ({'rng': ('MT19937', np.array([1, 'a'], dtype=object))}, [np.zeros(2)]):
        with pytest.raises(compat.UnsafeCheckpointError, match=r's\.state asks to load .*numpy\.ndarray of dtype'):
            compat._check_arrays(bad, 's.state')
    compat._check_arrays({'rng': ('MT19937', np.zeros(624, np.uint32), 0)}, 's.state')  # the RNG array: fine


def test_a_fifo_named_like_a_state_or_network_is_never_opened(tmp_path):
    import basicsr.models.base_model as base_model
    compat.install_atomic_checkpoints()
    states = tmp_path / 'training_states'
    states.mkdir()
    os.mkfifo(states / '4.state')
    torch.save({'iter': 2}, str(states / '2.state'))
    assert compat._state_candidates(str(states)) == [(2, str(states / '2.state'))]
    with pytest.raises(ValueError, match=r'training state .*4\.state is not a regular file'):
        compat.load_training_state(str(states / '4.state'))
    os.mkfifo(tmp_path / 'net_g.pth')
    with pytest.raises(ValueError, match=r'network file .*net_g\.pth is not a regular file'):
        base_model.torch.load(str(tmp_path / 'net_g.pth'), map_location='cpu')
