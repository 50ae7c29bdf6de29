"""Safety of the training entry points: option files never run code, checkpoints survive a
crash, and a small training set never trains zero iterations."""
import logging
import os

import numpy as np
import pytest
import torch
import yaml

from conftest import run_py, tiny_sr_train_opt, write_packed_pairs
from tripled_basicsr import compat
from tripled_basicsr.utils.io import tree_fingerprint

EVIL = '!!python/object/apply:os.system ["touch {marker}"]'


def train_opt(dataroot, name, total_iter=2, batch=2, model_type='SRModel', dataset_type='TripleDDataset'):
    ds = {'name': 'train', 'type': dataset_type, 'io_backend': {'type': 'lmdb'}, 'gt_size': 32, 'use_hflip': True,
          'use_rot': True, 'num_worker_per_gpu': 0, 'batch_size_per_gpu': batch, 'dataset_enlarge_ratio': 1,
          'prefetch_mode': None}
    if dataset_type == 'TripleDDataset':
        ds['dataroot'] = dataroot
    else:
        ds.update(dataroot_gt=os.path.join(dataroot, 'gt'), dataroot_lq=os.path.join(dataroot, 'lq'),
                  io_backend={'type': 'disk'})
    return tiny_sr_train_opt(name, {'train': ds}, total_iter, model_type)


@pytest.fixture(scope='module')
def four_pairs(tmp_path_factory):
    """4 LQ/GT pairs (x2) as folders and packed as a TripleDDataset dir (4 samples)."""
    return write_packed_pairs(tmp_path_factory.mktemp('four'))


def dump(path, opt, extra=''):
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
        f.write(extra)
    return str(path)


# ---------------------------------------------------------------------- safe YAML
def test_safe_option_loader_accepts_basicsr_tags_and_refuses_python(tmp_path):
    from collections import OrderedDict

    from tripled_basicsr.safe_yaml import SafeOptionLoader, UnsafeYamlError
    from tripled_basicsr.utils.io import load_yaml_safe
    good = tmp_path / 'good.yml'
    good.write_text('name: x\nlr: !!float 2e-4\nn: !!int "3"\ns: !!str 5\nb: !!bool "true"\nz: ~\n' +
                    yaml.dump({'o': OrderedDict([('b', 1), ('a', [1, 2])])}))
    opt = load_yaml_safe(str(good))
    assert opt == {'name': 'x', 'lr': 2e-4, 'n': 3, 's': '5', 'b': True, 'z': None, 'o': {'b': 1, 'a': [1, 2]}}
    assert list(opt['o']) == ['b', 'a']
    marker = tmp_path / 'PWNED'
    bad = tmp_path / 'bad.yml'
    bad.write_text('name: x\ncmd: ' + EVIL.format(marker=marker) + '\n')
    for load in (load_yaml_safe, lambda p: yaml.load(open(p), Loader=SafeOptionLoader)):
        with pytest.raises(UnsafeYamlError, match=r'bad\.yml, line 2: the tag !!python/object/apply:os\.system'):
            load(str(bad))
    assert not marker.exists()


def test_basicsr_parse_options_is_safe_with_the_plugin(tmp_path, monkeypatch):
    """Stock parse_options (what basicsr/train.py and test.py call) reads options safely once
    the plugin is registered."""
    import sys

    from basicsr.utils.options import parse_options

    from tripled_basicsr.safe_yaml import UnsafeYamlError
    marker = tmp_path / 'PWNED'
    yml = dump(tmp_path / 'evil.yml', {'name': 'x'}, extra='evil: ' + EVIL.format(marker=marker) + '\n')
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', yml])
    with pytest.raises(UnsafeYamlError, match=r'evil\.yml, line 2'):
        parse_options(str(tmp_path), is_train=True)
    assert not marker.exists()


@pytest.mark.parametrize('entry', [['-m', 'tripled_basicsr.train'], ['-m', 'tripled_basicsr.test'],
                                   pytest.param(['-m', 'basicsr.train'], marks=pytest.mark.slow)])
def test_python_tag_in_options_is_refused(tmp_path, four_pairs, entry):
    """Train, test, and stock `-m basicsr.train` with the plugin loaded: the command in the
    options file does not run, nothing is written, the error names the file."""
    _, packed = four_pairs
    marker = tmp_path / 'PWNED'
    opt = train_opt(packed, 'evil')
    yml = dump(tmp_path / 'evil.yml', opt, extra='evil: ' + EVIL.format(marker=marker) + '\n')
    before = tree_fingerprint(packed)
    r = run_py(entry + ['-opt', yml], cwd=tmp_path)
    assert r.returncode != 0
    assert 'evil.yml, line' in r.stdout and '!!python/object/apply:os.system' in r.stdout, r.stdout[-2000:]
    if entry[1].startswith('tripled_basicsr'):
        assert r.returncode == 2 and 'Traceback' not in r.stdout
    assert not marker.exists()
    assert not (tmp_path / 'experiments').exists() and not (tmp_path / 'results').exists()
    assert tree_fingerprint(packed) == before


# ---------------------------------------------------------------------- checkpoints
def _opt_for_states(root, name='run'):
    exp = os.path.join(root, 'experiments', name)
    os.makedirs(os.path.join(exp, 'training_states'))
    os.makedirs(os.path.join(exp, 'models'))
    return {'name': name, 'root_path': str(root), 'auto_resume': True, 'num_gpu': 0, 'network_g': {},
            'path': {'resume_state': None, 'models': os.path.join(exp, 'models')}}, exp


def _save_ckpt(exp, it):
    torch.save({'epoch': 0, 'iter': it, 'optimizers': [], 'schedulers': []},
               os.path.join(exp, 'training_states', f'{it}.state'))
    torch.save({'params': {'w': torch.ones(2)}}, os.path.join(exp, 'models', f'net_g_{it}.pth'))


def _truncate(path):
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


@pytest.mark.parametrize('broken', ['state', 'pth'])
def test_auto_resume_skips_truncated_latest_checkpoint(tmp_path, capsys, broken):
    opt, exp = _opt_for_states(tmp_path)
    for it in (2, 4):
        _save_ckpt(exp, it)
    bad = os.path.join(exp, 'training_states', '4.state') if broken == 'state' else \
        os.path.join(exp, 'models', 'net_g_4.pth')
    _truncate(bad)
    stale = os.path.join(exp, 'training_states', f'.6.state{compat._TMP_TAG}123-abcd')  # a killed save
    open(stale, 'wb').close()
    state = compat.load_resume_state(opt)
    err = capsys.readouterr().err
    assert state['iter'] == 2
    assert opt['path']['resume_state'].endswith('2.state')
    assert opt['path']['pretrain_network_g'].endswith('net_g_2.pth')
    assert bad in err and 'resuming from' in err and not os.path.exists(stale)


def test_unreadable_resume_state_errors_name_the_files(tmp_path):
    opt, exp = _opt_for_states(tmp_path)
    _save_ckpt(exp, 2)
    path = os.path.join(exp, 'training_states', '2.state')
    _truncate(path)
    with pytest.raises(RuntimeError, match=r'no readable training state.*2\.state'):
        compat.load_resume_state(opt)
    opt.update(auto_resume=False)
    opt['path']['resume_state'] = path
    with pytest.raises(RuntimeError, match=r'path\.resume_state .*2\.state cannot be read.*--auto_resume'):
        compat.load_resume_state(opt)


def _tiny_model(tmp_path, sampler=None):
    from basicsr.models.base_model import BaseModel

    from tripled_basicsr.data.train_loader import SAMPLER_LINK_KEY, SamplerLink
    from tripled_basicsr.models.sampler_feedback import SamplerFeedbackMixin

    class Model(SamplerFeedbackMixin, BaseModel):
        pass

    m = Model({'num_gpu': 0, 'is_train': True, 'world_size': 1, SAMPLER_LINK_KEY: SamplerLink(sampler),
               'path': {'training_states': str(tmp_path), 'models': str(tmp_path)}})
    m.setup_sampler_feedback()
    return m


class StateSampler:
    def __init__(self):
        self.loaded, self.fed = None, []

    def state_dict(self, consumed_step=None):
        return {'step': consumed_step, 'draws': 2 * consumed_step}

    def load_state_dict(self, state, source=''):
        self.loaded = (state, source)

    def update(self, indices, losses, step=None):
        self.fed.append((list(np.asarray(indices)), list(np.asarray(losses)), step))


def test_mixin_saves_and_restores_sampler_state_and_feeds_losses(tmp_path):
    sampler = StateSampler()
    m = _tiny_model(tmp_path, sampler)
    assert m.sampler is sampler
    m.feed_data({'index': torch.tensor([3, 1])})
    m.feed_sampler(torch.tensor([0.5, 0.25]), current_iter=7)
    assert sampler.fed == [([3, 1], [0.5, 0.25], 6)]
    torch.manual_seed(5)
    m.save_training_state(epoch=1, current_iter=7)
    state = compat.load_training_state(str(tmp_path / '7.state'))  # weights_only, RNG state included
    assert state['iter'] == 7 and state['epoch'] == 1 and state['tripled_sampler'] == {'step': 7, 'draws': 14}
    expected = torch.rand(3)
    assert os.listdir(tmp_path) == ['7.state']  # no temp file left
    other = StateSampler()
    m2 = _tiny_model(tmp_path, other)
    m2.opt['path']['resume_state'] = str(tmp_path / '7.state')
    m2.resume_training(state)
    assert other.loaded == ({'step': 7, 'draws': 14}, str(tmp_path / '7.state'))
    assert torch.equal(torch.rand(3), expected)  # host RNG restored


def test_mixin_without_sampler_is_plain(tmp_path, caplog):
    m = _tiny_model(tmp_path, None)
    assert m.sampler is None
    m.feed_data({'lq': torch.zeros(1)})
    m.feed_sampler(torch.ones(1), current_iter=1)  # no-op
    m.save_training_state(0, 2)
    assert 'tripled_sampler' not in compat.load_training_state(str(tmp_path / '2.state'))


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch):
    """A save that dies half-way leaves the previous file intact and no temp file."""
    compat.install_atomic_checkpoints()
    import basicsr.models.base_model as base_model
    path = tmp_path / 'net_g_2.pth'
    base_model.torch.save({'w': torch.ones(3)}, str(path))
    before = path.read_bytes()

    class Boom:
        def __reduce__(self):
            raise KeyboardInterrupt  # e.g. Ctrl-C while pickling

    with pytest.raises(KeyboardInterrupt):
        base_model.torch.save({'w': torch.zeros(3), 'x': Boom()}, str(path))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ['net_g_2.pth']
    assert base_model.torch.nn is torch.nn  # everything but save is torch


# ---------------------------------------------------------------------- zero-iteration training
def _loaders(opt):
    import basicsr.train
    from basicsr.utils import get_root_logger
    opt.update(dist=False, rank=0, world_size=1, is_train=True)
    opt['datasets']['train'].update(phase='train', scale=opt['scale'])  # as parse_options sets them
    return basicsr.train.create_train_val_dataloader(opt, get_root_logger())


def test_stock_dataset_smaller_than_a_batch_is_an_error(four_pairs):
    src, _ = four_pairs
    before = tree_fingerprint(src)
    opt = train_opt(src, 'tiny', total_iter=50, batch=16, dataset_type='PairedImageDataset')
    with pytest.raises(ValueError, match=r'PairedImageDataset, 4 samples.*zero iterations.*dataset_enlarge_ratio >= 4'
                                         r'.*batch_size_per_gpu <= 4'):
        _loaders(opt)
    assert tree_fingerprint(src) == before


def test_tripled_dataset_smaller_than_a_batch_adapts(four_pairs, caplog):
    _, packed = four_pairs
    opt = train_opt(packed, 'tiny', total_iter=50, batch=16)
    with caplog.at_level(logging.WARNING, logger='basicsr'):
        loader, sampler, _, epochs, iters = _loaders(opt)
    assert len(loader) == 50 and epochs == 1 and iters == 50  # an epoch = min(total_iter, 100) iterations
    assert len(sampler) == 200 * 4  # EnlargedSampler over 4 samples x effective ratio 200
    assert 'effective dataset_enlarge_ratio of 200' in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize('path', ['stock', 'curriculum'])
def test_four_pairs_batch_16_really_trains(tmp_path, four_pairs, path):
    """End to end, stock SRModel and the curriculum path: every iteration is an optimiser step."""
    _, packed = four_pairs
    opt = train_opt(packed, 'stock4', total_iter=3, batch=16)
    if path == 'curriculum':
        from test_curriculum_sampler import make_distilled
        opt = train_opt(make_distilled(tmp_path / 'cur4', n=4, size=32), 'cur4', total_iter=3, batch=16,
                        model_type='TripleDModel')
        opt['scale'] = 1
        opt['network_g'] = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 1, 'num_feat': 8,
                            'num_block': 1, 'num_grow_ch': 4}
        opt['datasets']['train']['sampler'] = {'type': 'TripleDCurriculumSampler', 'stage2_start': 1}
    opt['logger']['save_checkpoint_freq'] = 100
    r = run_py(['-m', 'tripled_basicsr.train', '-opt', dump(tmp_path / f'{path}.yml', opt)], cwd=tmp_path,
               env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stdout[-3000:]
    steps = [line for line in r.stdout.splitlines() if 'l_pix:' in line]
    assert len(steps) == 3, r.stdout[-3000:]  # print_freq 1: one line per optimiser step
    if path == 'stock':
        assert 'effective dataset_enlarge_ratio of 12' in r.stdout  # 3 iterations x 16 / 4 samples


def test_state_file_names_have_one_parser(tmp_path):
    from tripled_basicsr.compat import _state_candidates, state_file_iter
    from tripled_basicsr.data.train_loader import _iter_of_state_path
    from tripled_basicsr.models.slkd_model import resume_iter
    assert state_file_iter('/x/training_states/5000.state') == 5000
    assert isinstance(state_file_iter('5000.state'), int)
    for bad in ('net_g_5000.pth', 'latest.state', '.5000.state.tmp', '.5000.state', None, '-3.state', 'nan.state'):
        assert state_file_iter(bad) is None, bad
    assert resume_iter('/x/12.state') == 12 and resume_iter('a.pth') is None
    for name in ('10.state', '200.state', '30.state', 'x.state', '.40.state', 'notes.txt'):
        (tmp_path / name).write_bytes(b'')
    assert [it for it, _ in _state_candidates(str(tmp_path))] == [200, 30, 10]  # newest first, ours only
    assert _iter_of_state_path(str(tmp_path / '30.state')) == 30  # from the name, without loading
