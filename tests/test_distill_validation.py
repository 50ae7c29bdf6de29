"""Bad input to the distiller fails before the expensive work, names the key, and loses nothing.

Every run here would otherwise build the backbone and embed the source; ``no_backbone``
makes that step fail loudly, so a test passing with it proves the check came first.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from tripled_basicsr.distill import run_distill
from tripled_basicsr.distill.__main__ import main as distill_main
from tripled_basicsr.distill._testing import tiny_options, write_pairs
from tripled_basicsr.options import OptionError
from tripled_basicsr.utils.io import tree_fingerprint


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('distill_val_src')
    return write_pairs(str(root), num=24, size=48, seed=4)


@pytest.fixture()
def no_backbone(monkeypatch):
    import tripled_basicsr.distill.backbone as bb

    def fail(*a, **k):
        raise AssertionError('the backbone was built before the bad option was reported')

    monkeypatch.setattr(bb, 'build_backbone', fail)


def _nothing_written(tmp_path, out):
    assert not os.path.exists(out) and not os.path.exists(out + '.work')
    assert not [n for n in os.listdir(tmp_path) if n.startswith('.')], os.listdir(tmp_path)


@pytest.mark.parametrize('over,pattern', [
    ({'selection': {'temprature': 1.0}}, r'Unknown option selection\.temprature\. Did you mean temperature'),
    ({'uncertainty': {'kk': 5}}, r'Unknown option uncertainty\.kk\. Did you mean k\b'),
    ({'selection': {'ratio': '2%'}}, r"selection\.ratio must be a number; got '2%'.*0\.02 for 2 %"),
    ({'selection': {'ratio': 1.5}}, r'selection\.ratio must be a number in \(0, 1\]; got 1\.5'),
    ({'selection': {'temperature': 0}}, r'selection\.temperature must be a number > 0; got 0'),
    ({'selection': {'type': 'random', 'temperature': 1.0}}, r"selection\.temperature.*type 'random' takes"),
    ({'selection': {'type': 'tripeld'}}, r"selection\.type 'tripeld' is not a registered.*Did you mean tripled"),
    ({'uncertainty': {'scope': 'everywhere'}}, r'uncertainty\.scope must be one of auto, global, cluster'),
    ({'uncertainty': {'k': 2.5}}, r'uncertainty\.k must be an integer; got 2\.5'),
    ({'complexity': {'type': 'pixel_entropy', 'alpha': 2}}, r'Unknown option complexity\.alpha'),
    ({'features': {'batch_size': 'many'}}, r"features\.batch_size must be an integer; got 'many'"),
    ({'features': {'pretrained': 'yes'}}, r"features\.pretrained must be true or false; got 'yes'"),
    ({'calibration': {'on_worse': 'ignore'}}, r'calibration\.on_worse must be one of raise, keep, skip'),
    ({'calibration': {'mode': 'pixel'}}, r'calibration\.mode must be one of weights, pixels.*Did you mean pixels'),
    ({'calibration': {'weight_range': [0, 4]}}, r'calibration\.weight_range\[0\] must be a number in \(0, 1\]'),
    ({'calibration': {'weight_range': 2}}, r'calibration\.weight_range must be a list \[low, high\]'),
    ({'calibration': {'residual_tolerance': -0.1}}, r'calibration\.residual_tolerance must be a number >= 0'),
    ({'output': {'compress_level': 12}}, r'output\.compress_level must be an integer in \[0, 9\]; got 12'),
    ({'source': {'filename_tmpl': '{}x2', 'scale': 0}}, r'source\.scale must be an integer >= 1; got 0'),
])
def test_bad_option_names_key_before_features(data, tmp_path, no_backbone, over, pattern):
    gt, lq = data
    out = str(tmp_path / 'o')
    with pytest.raises(OptionError, match=pattern):
        run_distill(tiny_options(gt, lq, out, **over), progress=False)
    _nothing_written(tmp_path, out)


def test_typo_in_selection_names_the_typo_not_the_default_ratio(data, tmp_path, no_backbone):
    gt, lq = data
    opt = tiny_options(gt, lq, str(tmp_path / 'o'))
    opt['selection'] = {'ratoi': 0.25}
    with pytest.raises(OptionError) as err:
        run_distill(opt, progress=False)
    assert 'selection.ratoi' in str(err.value) and 'Did you mean ratio' in str(err.value)
    assert '0.02' not in str(err.value)


def test_numeric_strings_from_yaml_are_numbers():
    # PyYAML reads `lr: 1e-3` (no dot) as a string: accepted as the number it spells
    from tripled_basicsr.distill.options import merge_options
    opt = merge_options({'source': {'dataroot_gt': 'g', 'dataroot_lq': 'l'}, 'output': {'path': 'o'},
                         'calibration': {'lr': '1e-3'}, 'selection': {'ratio': '0.5', 'num': '3'}})
    assert opt['calibration']['lr'] == 1e-3 and opt['selection']['ratio'] == 0.5 and opt['selection']['num'] == 3


def test_strategy_defaults_come_from_the_signature():
    from tripled_basicsr.distill.options import merge_options
    base = {'source': {'dataroot_gt': 'g', 'dataroot_lq': 'l'}, 'output': {'path': 'o'}}
    opt = merge_options(base)
    assert opt['selection'] == {'type': 'importance', 'ratio': 0.02, 'num': None, 'seed': 0, 'clusters': 'auto',
                                'kmeans_iters': 50, 'power': 1.0, 'trim': 0.0, 'taps': 7, 'draw': 'systematic',
                                'candidates': 0.0, 'quota': 'count'}
    assert opt['source']['crop_size'] == 'auto' and opt['features']['backbone'] == 'auto'
    assert opt['calibration']['enabled'] is False
    opt = merge_options({**base, 'selection': {'type': 'tripled'}})
    assert opt['selection'] == {'type': 'tripled', 'ratio': 0.02, 'num': None, 'seed': 0, 'clusters': 'auto',
                                'kmeans_iters': 50, 'complexity_weight': 1.0, 'uncertainty_weight': 1.0,
                                'temperature': 2.0}
    assert opt['uncertainty']['k'] == 10 and opt['uncertainty']['scope'] == 'auto'
    opt = merge_options({**base, 'selection': {'type': 'random', 'ratio': 0.1}})
    assert opt['selection'] == {'type': 'random', 'ratio': 0.1, 'num': None, 'seed': 0, 'clusters': 'auto',
                                'kmeans_iters': 50}
    opt = merge_options({**base, 'uncertainty': {'type': 'none'}})
    assert opt['uncertainty'] == {'type': 'none'}


def test_registered_strategy_options_are_checked():
    from tripled_basicsr.options import integer
    from tripled_basicsr.distill.registry import StrategyRegistry
    reg = StrategyRegistry('complexity', positional=('feats', 'stats', 'ctx'))

    @reg.register('mine', checks={'levels': lambda p, v: integer(p, v, lo=2)})
    def mine(feats, stats, ctx, levels=4, power=1.0, name='x'):
        return levels

    assert reg.params('mine') == {'levels': 4, 'power': 1.0, 'name': 'x'}
    assert reg.resolve({'type': 'mine', 'power': 2}) == {'type': 'mine', 'levels': 4, 'power': 2.0, 'name': 'x'}
    assert reg.call(reg.resolve({'type': 'mine', 'levels': 7}), None, None, None) == 7
    with pytest.raises(OptionError, match=r'complexity\.levels must be an integer >= 2; got 1'):
        reg.resolve({'type': 'mine', 'levels': 1})
    with pytest.raises(OptionError, match=r'complexity\.power must be a number; got \[1\]'):
        reg.resolve({'type': 'mine', 'power': [1]})
    with pytest.raises(KeyError, match='unknown parameters'):
        reg.register('bad', checks={'nope': int})(lambda feats, stats, ctx, a=1: a)


def test_tile_size_not_multiple_of_scale(tmp_path, no_backbone):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=8, size=64, seed=2, scale=2)
    out = str(tmp_path / 'o')
    opt = tiny_options(gt, lq, out, source={'scale': 2}, output={'tile_size': 33})
    with pytest.raises(OptionError, match=r'output\.tile_size must be 0 .* multiple of scale \(2\); got 33'):
        run_distill(opt, progress=False)
    assert not os.path.exists(out) and not os.path.exists(out + '.work')


@pytest.mark.parametrize('where', ['same', 'inside_output', 'output_inside'])
def test_work_dir_and_output_must_be_apart(data, tmp_path, no_backbone, where):
    gt, lq = data
    out = str(tmp_path / 'o')
    work = {'same': out, 'inside_output': os.path.join(out, 'work'), 'output_inside': str(tmp_path)}[where]
    with pytest.raises(OptionError, match=r'work_dir .* output\.path .*replacing the output would delete'):
        run_distill(tiny_options(gt, lq, out, work_dir=work), progress=False)
    assert not os.path.exists(out)


def test_force_overwrite_never_deletes_features(data, tmp_path):
    gt, lq = data
    out = str(tmp_path / 'o')
    run_distill(tiny_options(gt, lq, out), progress=False)
    work_before = tree_fingerprint(out + '.work')
    out_before = tree_fingerprint(out)
    opt = tiny_options(gt, lq, out, work_dir=os.path.join(out, 'cache'), output={'overwrite': True})
    with pytest.raises(OptionError, match='work_dir'):
        run_distill(opt, progress=False)
    assert tree_fingerprint(out + '.work') == work_before and tree_fingerprint(out) == out_before


@pytest.mark.parametrize('case', ['is_gt', 'inside_gt', 'parent_of_sources', 'symlink_to_gt'])
def test_output_never_touches_a_source(tmp_path, no_backbone, case):
    gt, lq = write_pairs(str(tmp_path / 'data'), num=8, size=32, seed=5)
    before = tree_fingerprint(str(tmp_path / 'data'))
    out = {'is_gt': gt, 'inside_gt': os.path.join(gt, 'sub'), 'parent_of_sources': str(tmp_path / 'data'),
           'symlink_to_gt': str(tmp_path / 'link')}[case]
    if case == 'symlink_to_gt':
        os.symlink(gt, out)
    opt = tiny_options(gt, lq, out, output={'overwrite': True}, work_dir=str(tmp_path / 'w'))
    with pytest.raises(ValueError, match=r'source .*dataroot_(gt|lq)|symbolic link'):
        run_distill(opt, progress=False)
    assert tree_fingerprint(str(tmp_path / 'data')) == before
    assert not os.path.exists(tmp_path / 'w')


def test_work_dir_inside_a_source_is_refused(data, tmp_path, no_backbone):
    gt, lq = data
    before = tree_fingerprint(os.path.dirname(gt))
    with pytest.raises(ValueError, match=r'work_dir .* the source source\.dataroot_gt'):
        run_distill(tiny_options(gt, lq, str(tmp_path / 'o'), work_dir=os.path.join(gt, 'cache')), progress=False)
    assert tree_fingerprint(os.path.dirname(gt)) == before


def test_unknown_calibrator_type(data, tmp_path, no_backbone):
    gt, lq = data
    out = str(tmp_path / 'o')
    opt = tiny_options(gt, lq, out, calibration={'enabled': True, 'mode': 'pixels',
                                                 'network': {'type': 'TripleDCalibrater'}})
    with pytest.raises(OptionError, match=r"calibration\.network\.type 'TripleDCalibrater' is not a registered"):
        run_distill(opt, progress=False)
    _nothing_written(tmp_path, out)


def test_work_dir_of_an_older_version_is_refused_and_kept(data, tmp_path):
    gt, lq = data
    from tripled_basicsr.distill.features import claim_work_dir
    from tripled_basicsr.utils.ownership import MARKER_FILE
    out, work = str(tmp_path / 'o'), str(tmp_path / 'w')
    claim_work_dir(work)  # a work dir of ours, from a version whose state.json differs
    with open(os.path.join(work, 'state.json'), 'w') as f:
        json.dump({'state_version': 1, 'num_pairs': 24}, f)
    with pytest.raises(RuntimeError, match=r'written by another version of the distiller.*delete it'):
        run_distill(tiny_options(gt, lq, out, work_dir=work), progress=False)
    assert sorted(os.listdir(work)) == ['.lock', MARKER_FILE, 'state.json'] and not os.path.exists(out)
    with open(os.path.join(work, 'state.json')) as f:
        assert json.load(f) == {'state_version': 1, 'num_pairs': 24}


def test_foreign_folder_as_work_dir_is_refused_and_untouched(data, tmp_path, no_backbone):
    """A user folder that happens to hold files of our names (no state.json, no marker) is not ours."""
    from tripled_basicsr.utils.io import tree_fingerprint
    from tripled_basicsr.utils.ownership import MARKER_FILE
    gt, lq = data
    out, work = str(tmp_path / 'o'), str(tmp_path / 'mine')
    os.makedirs(work)
    for name in ('features.f16', 'errors.json', 'notes.txt'):
        with open(os.path.join(work, name), 'w') as f:
            f.write('the user\'s own file')
    before = tree_fingerprint(work)
    with pytest.raises(FileExistsError, match=r'work_dir .*mine already exists and holds files tripled_basicsr did '
                                              r'not write.*nothing was written there'):
        run_distill(tiny_options(gt, lq, out, work_dir=work), progress=False)
    assert tree_fingerprint(work) == before and not os.path.exists(out)


def test_a_work_dir_of_ours_without_state_restarts(data, tmp_path):
    """A work dir the distiller created carries its marker, so a lost state.json restarts it there."""
    from tripled_basicsr.utils.ownership import MARKER_FILE
    gt, lq = data
    work2 = str(tmp_path / 'w2')
    run_distill(tiny_options(gt, lq, str(tmp_path / 'o2'), work_dir=work2), progress=False)
    assert os.path.isfile(os.path.join(work2, MARKER_FILE))
    os.remove(os.path.join(work2, 'state.json'))
    run_distill(tiny_options(gt, lq, str(tmp_path / 'o3'), work_dir=work2), progress=False)
    assert os.path.isfile(os.path.join(work2, 'state.json'))


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without a GPU')
def test_cuda_device_without_gpu(data, tmp_path, no_backbone):
    gt, lq = data
    out = str(tmp_path / 'o')
    with pytest.raises(ValueError, match=r"features\.device is 'cuda' but no CUDA GPU is available.*auto"):
        run_distill(tiny_options(gt, lq, out, features={'device': 'cuda'}), progress=False)
    _nothing_written(tmp_path, out)


def test_unknown_device_string():
    from tripled_basicsr.utils.device import resolve_device
    with pytest.raises(ValueError, match=r"features\.device: 'gpu0' is not a device"):
        resolve_device('gpu0', option='features.device')
    assert resolve_device('cpu').type == 'cpu'


# ---------------------------------------------------------------- lock
def test_second_run_on_a_locked_work_dir_names_the_holder(data, tmp_path, no_backbone):
    from tripled_basicsr.utils.lock import DirLock, LockedError
    gt, lq = data
    out = str(tmp_path / 'o')
    with DirLock(out + '.work', 'work_dir'):
        with pytest.raises(LockedError, match=rf'work_dir .*o\.work is in use by another run \(pid {os.getpid()} '):
            run_distill(tiny_options(gt, lq, out), progress=False)
    assert not os.path.exists(out)


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    from tripled_basicsr.utils.lock import DirLock
    d = str(tmp_path / 'w')
    os.makedirs(d)
    code = ('import os, signal, sys; from tripled_basicsr.utils.lock import DirLock; '
            f'DirLock({d!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9, r.stderr
    with DirLock(d) as lock:  # the kernel dropped the dead holder's lock
        assert lock.held
    assert os.path.isdir(d)  # a directory the lock did not create stays


def test_lock_leaves_no_directory_it_created_when_nothing_else_was_written(tmp_path):
    from tripled_basicsr.utils.lock import DirLock
    d = str(tmp_path / 'new')
    with DirLock(d):
        assert os.path.isfile(os.path.join(d, '.lock'))
    assert not os.path.exists(d)
    with DirLock(d):
        open(os.path.join(d, 'data'), 'w').close()
    assert os.path.isfile(os.path.join(d, 'data'))


# ---------------------------------------------------------------- stale features
def _embedded(out):
    with open(os.path.join(out, 'tripled_meta.json'), encoding='utf-8') as f:
        feats = json.load(f)['summary']['features']
    return feats['embedded_this_run'], feats['changed_since_last_run']


def test_changed_image_is_re_embedded_on_resume(tmp_path):
    import cv2
    gt, lq = write_pairs(str(tmp_path / 'src'), num=16, size=48, seed=6)
    work = str(tmp_path / 'work')
    run_distill(tiny_options(gt, lq, str(tmp_path / 'a'), work_dir=work), progress=False)
    assert _embedded(str(tmp_path / 'a')) == (16, 0)
    run_distill(tiny_options(gt, lq, str(tmp_path / 'b'), work_dir=work), progress=False)
    assert _embedded(str(tmp_path / 'b')) == (0, 0)  # unchanged source: nothing recomputed
    # same name, other content (and size); the stale row must not be reused
    img = cv2.imread(os.path.join(gt, 'img0005.png'))
    cv2.imwrite(os.path.join(gt, 'img0005.png'), 255 - img)
    run_distill(tiny_options(gt, lq, str(tmp_path / 'c'), work_dir=work), progress=False)
    assert _embedded(str(tmp_path / 'c')) == (1, 1)
    fresh = str(tmp_path / 'fresh')
    run_distill(tiny_options(gt, lq, str(tmp_path / 'd'), work_dir=fresh), progress=False)
    a = np.fromfile(os.path.join(work, 'features.f16'), np.float16).astype(np.float32)
    b = np.fromfile(os.path.join(fresh, 'features.f16'), np.float16).astype(np.float32)
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_changed_lmdb_value_is_re_embedded(tmp_path):
    import cv2

    from tripled_basicsr.pack import pack
    gt, lq = write_pairs(str(tmp_path / 'src'), num=12, size=48, seed=7)
    packed = str(tmp_path / 'packed')
    pack(gt, lq, packed, progress=False)
    opt = lambda out: tiny_options(os.path.join(packed, 'gt.lmdb'), os.path.join(packed, 'lq.lmdb'),  # noqa: E731
                                   str(tmp_path / out), work_dir=str(tmp_path / 'work'),
                                   source={'io_backend': {'type': 'lmdb'}}, selection={'ratio': 0.5})
    run_distill(opt('a'), progress=False)
    run_distill(opt('b'), progress=False)
    assert _embedded(str(tmp_path / 'b')) == (0, 0)
    img = cv2.imread(os.path.join(lq, 'img0003.png'))
    cv2.imwrite(os.path.join(lq, 'img0003.png'), 255 - img)
    pack(gt, lq, packed, overwrite=True, progress=False)  # same keys, one value changed
    run_distill(opt('c'), progress=False)
    assert _embedded(str(tmp_path / 'c')) == (1, 1)


# ---------------------------------------------------------------- hub probe
def test_pretrained_offline_fails_without_trying_the_network(data, tmp_path, monkeypatch):
    import huggingface_hub
    gt, lq = data
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'empty_hf'))
    monkeypatch.setattr(huggingface_hub, 'get_hf_file_metadata',
                        lambda *a, **k: pytest.fail('offline mode must not send a request'))
    monkeypatch.setattr(socket, 'create_connection', lambda *a, **k: pytest.fail('no connection offline'))
    out = str(tmp_path / 'o')
    with pytest.raises(RuntimeError) as err:
        run_distill(tiny_options(gt, lq, out, features={'pretrained': True}), progress=False)
    msg = str(err.value)
    assert 'HF_HUB_OFFLINE is set' in msg and 'features.checkpoint' in msg and 'features.pretrained: false' in msg
    _nothing_written(tmp_path, out)


def test_hub_probe_gives_up_after_its_timeout(monkeypatch):
    """A server that accepts the connection but never answers (a broken proxy/TLS): one
    request, no retries, bounded by the timeout."""
    from tripled_basicsr.distill.backbone import _hub_reachable
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.delenv('TRANSFORMERS_OFFLINE', raising=False)
    for var in ('HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    with socket.socket() as srv:
        srv.bind(('127.0.0.1', 0))
        srv.listen(8)  # never accepted, never answered
        ok, why = _hub_reachable('timm/x', timeout=0.5, endpoint=f'http://127.0.0.1:{srv.getsockname()[1]}')
    assert not ok and 'Timeout' in why
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]  # closed after this block: connection refused
    ok, why = _hub_reachable('timm/x', timeout=0.5, endpoint=f'http://127.0.0.1:{port}')
    assert not ok and 'Connect' in why


# ---------------------------------------------------------------- CLI
def test_quiet_still_prints_the_one_line_summary(data, tmp_path, capsys):
    import yaml
    gt, lq = data
    out = str(tmp_path / 'o')
    path = tmp_path / 'o.yml'
    path.write_text(yaml.safe_dump(tiny_options(gt, lq, out)))
    assert distill_main(['-opt', str(path), '--quiet']) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith('distilled 6 of 24 pairs (25.00 %) -> ') and out in lines[0]


def test_yaml_with_python_object_tag_runs_nothing_writes_nothing(data, tmp_path, capsys):
    gt, lq = data
    marker = tmp_path / 'pwned'
    out = str(tmp_path / 'o')
    path = tmp_path / 'evil.yml'
    path.write_text(f'name: !!python/object/apply:os.mkdir ["{marker}"]\n'
                    f'source: {{dataroot_gt: {gt}, dataroot_lq: {lq}}}\noutput: {{path: {out}}}\n')
    before = tree_fingerprint(os.path.dirname(gt))
    assert distill_main(['-opt', str(path), '--quiet']) == 2
    err = capsys.readouterr().err
    assert 'evil.yml' in err and 'python/object/apply' in err and 'Traceback' not in err
    assert not marker.exists()
    assert not os.path.exists(out) and not os.path.exists(out + '.work')
    assert tree_fingerprint(os.path.dirname(gt)) == before


@pytest.mark.slow  # a fresh interpreter importing torch: 2 s idle, 10-15 s on a loaded 2-core box
def test_distill_imports_without_basicsr():
    """Option checks, strategies and the pipeline module load without BasicSR's training
    stack; only the calibration stage registers the calibrator with BasicSR."""
    code = ('import sys; import tripled_basicsr.distill, tripled_basicsr.distill.pipeline, '
            'tripled_basicsr.utils.distribution, tripled_basicsr.utils.lock, tripled_basicsr.utils.device; '
            'from tripled_basicsr.distill.options import merge_options; '
            'merge_options({"source": {"dataroot_gt": "g", "dataroot_lq": "l"}, "output": {"path": "o"}}); '
            'print(sorted(m for m in sys.modules if m == "basicsr" or m.startswith("basicsr.")))')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == '[]'
