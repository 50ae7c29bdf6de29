"""Tests for tripled_basicsr.demo_data (offline deterministic paired demo-data generator)."""
import json
import os
import socket
import sys

import cv2
import numpy as np
import pytest
import torch

from tripled_basicsr import demo_data as dd
from tripled_basicsr.demo_data import (DemoDataError, generate_gt, generate_pairs, main, parse_size,
                                       write_demo_dataset)
from tripled_basicsr.demo_data import degradations, generate, sources
from tripled_basicsr.iqa.resize import imresize
from tripled_basicsr.utils.io import tree_fingerprint
from tripled_basicsr.utils.ownership import MARKER_FILE


def _hf_energy(img):
    """Mean squared Laplacian of the luminance: a high-frequency energy measure."""
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64)
    return float((cv2.Laplacian(g, cv2.CV_64F)**2).mean())


def _grad_energy(img):
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def _dark_channel_mean(img, patch=7):
    dc = cv2.erode(img.min(axis=2), np.ones((patch, patch), np.uint8))
    return float(dc.mean())


def _pairs(task, num=6, size=48, seed=3, **kw):
    return list(generate_pairs(task, num, size, seed=seed, **kw))


# ------------------------------------------------------------------------------------ arguments
def test_parse_size():
    assert parse_size(256) == (256, 256)
    assert parse_size('256') == (256, 256)
    assert parse_size('3840x2160') == (3840, 2160)
    assert parse_size((40, 24)) == (40, 24)
    for bad in ('abc', '12x', 'x3', '0', '-5', '2x2', '64x64x3'):
        with pytest.raises(DemoDataError, match='--size'):
            parse_size(bad)


@pytest.mark.parametrize('kwargs, opt', [
    (dict(task='denoise'), '--task'),
    (dict(task='noise,bogus'), '--task'),
    (dict(num=0), '--num'),
    (dict(num=-3), '--num'),
    (dict(size='big'), '--size'),
    (dict(task='sr', size=50, scale=4), '--scale'),
    (dict(task='sr', size='64x30', scale=4), 'divisible'),
    (dict(task='sr', scale=1), '--scale'),
    (dict(task='noise', scale=4), '--scale'),
    (dict(source='internet'), '--source'),
    (dict(seed=-1), '--seed'),
    (dict(task='noise', quality=10), '--quality'),
    (dict(task='noise', sigma='lots'), '--sigma'),
    (dict(task='noise', sigma=(30, 10)), '--sigma'),
    (dict(task='jpeg', quality=0), '--quality'),
    (dict(task='blur', blur_type='box'), '--blur-type'),
    (dict(task='blur', kernel_size=4), '--kernel-size'),
])
def test_bad_arguments_name_the_option(kwargs, opt):
    args = dict(task='noise', num=2, size=32)
    args.update(kwargs)
    with pytest.raises(DemoDataError, match=opt):
        generate_pairs(**args)  # validated eagerly, before iterating


# ------------------------------------------------------------------------------------ shapes / determinism
@pytest.mark.parametrize('task', dd.TASKS)
def test_shapes_and_dtype(task):
    pairs = _pairs(task, num=3, size='40x24')
    assert [n for n, _, _ in pairs] == ['0000', '0001', '0002']
    for _, gt, lq in pairs:
        assert gt.dtype == np.uint8 and lq.dtype == np.uint8
        assert gt.shape == (24, 40, 3)
        assert lq.shape == ((6, 10, 3) if task == 'sr' else (24, 40, 3))
        assert not np.array_equal(gt, lq) or task == 'sr'


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_sr_lq_is_matlab_bicubic_downscale(scale):
    """LQ = MATLAB imresize(GT, 1/scale) (BasicSR's port as the reference), rounded to uint8."""
    from basicsr.utils.matlab_functions import imresize as basicsr_imresize
    w, h = 12 * scale, 8 * scale
    for _, gt, lq in _pairs('sr', num=3, size=(w, h), scale=scale):
        assert lq.shape == (h // scale, w // scale, 3)
        ref = basicsr_imresize(gt.astype(np.float32) / 255.0, 1 / scale)
        ref = np.clip(ref * 255.0 + 0.5, 0, 255).astype(np.uint8)
        assert np.abs(lq.astype(int) - ref.astype(int)).max() <= 1
    cv2_lq = _pairs('sr', num=1, size=(w, h), scale=scale, sr_kernel='cv2')[0][2]
    assert cv2_lq.shape == (h // scale, w // scale, 3)


def test_sr_uses_the_one_matlab_resize_and_exact_integer_sizes():
    """The sr degradation is ``iqa.resize.imresize`` (one MATLAB bicubic in the package); its LQ
    is exactly GT / scale even where ceil((1 / s) * H) overshoots (s = 75, H = 525 -> 8, not 7)."""
    x = np.random.default_rng(0).random((36, 24, 3), dtype=np.float32)
    for scale in (2, 3, 4):
        out = degradations.sr(x, None, {'sr_kernel': 'matlab'}, scale)
        ref = imresize(torch.from_numpy(x.astype(np.float64)).permute(2, 0, 1), 1 / scale).permute(1, 2, 0).numpy()
        assert out.shape == (36 // scale, 24 // scale, 3) and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, atol=2e-6)
    (_, gt, lq), = _pairs('sr', num=1, size='525x150', scale=75, source='procedural')
    assert lq.shape == (2, 7, 3)


def test_determinism_same_seed_same_bytes_different_seed_differs():
    a = _pairs('noise,jpeg', num=4, size=32, seed=7)
    b = _pairs('noise,jpeg', num=4, size=32, seed=7)
    c = _pairs('noise,jpeg', num=4, size=32, seed=8)
    for (na, ga, la), (nb, gb, lb) in zip(a, b):
        assert na == nb and ga.tobytes() == gb.tobytes() and la.tobytes() == lb.tobytes()
    assert all(ga.tobytes() != gc.tobytes() for (_, ga, _), (_, gc, _) in zip(a, c))


def test_image_i_independent_of_num_and_gt_shared_across_tasks():
    short = _pairs('haze', num=2, size=32)
    long_ = _pairs('haze', num=5, size=32)
    for (n1, g1, l1), (n2, g2, l2) in zip(short, long_):
        assert n1 == n2 and np.array_equal(g1, g2) and np.array_equal(l1, l2)
    other = _pairs('rain', num=2, size=32)
    assert all(np.array_equal(g1, g2) for (_, g1, _), (_, g2, _) in zip(short, other))


def test_generate_pairs_is_lazy():
    gen = generate_pairs('noise', 10**9, 16)
    name, gt, lq = next(gen)
    assert name == '000000000' and gt.shape == (16, 16, 3)


# ------------------------------------------------------------------------------------ degradations
def test_noise_raises_high_frequency_energy_and_has_requested_sigma():
    for _, gt, lq in _pairs('noise', num=6, sigma=25):
        assert _hf_energy(lq) > _hf_energy(gt)
    # residual std on mid-grey (no clipping) matches sigma
    gt = np.full((64, 64, 3), 128, np.uint8)
    lq = dd.degrade(gt, 'noise', {'sigma': 25})
    assert 23.0 < (lq.astype(float) - 128).std() < 27.0
    lq5 = dd.degrade(gt, 'noise', {'sigma': 5})
    assert 4.0 < (lq5.astype(float) - 128).std() < 6.0


def test_noise_sigma_range_varies_per_image():
    gt = np.full((48, 48, 3), 128, np.uint8)

    def std(i):
        return float((dd.degrade(gt, 'noise', {'sigma': (5, 50)}, index=i).astype(float) - 128).std())
    stds = [std(i) for i in range(8)]
    assert all(4.0 < s < 52.0 for s in stds), stds          # each image's sigma is inside the range
    assert max(stds) - min(stds) > 10.0, stds                # and the range is used, not one value
    assert len({round(s) for s in stds}) > 4, stds
    assert std(3) == stds[3]                                 # per image: reproducible from (seed, index)


@pytest.mark.parametrize('blur_type', ['gaussian', 'motion'])
def test_blur_lowers_high_frequency_energy(blur_type):
    checked = 0
    for _, gt, lq in _pairs('blur', num=8, blur_type=blur_type):
        if _hf_energy(gt) > 20:  # skip near-flat GT (only quantisation noise to remove)
            assert _hf_energy(lq) < 0.8 * _hf_energy(gt)
            checked += 1
    assert checked >= 4


def test_jpeg_lower_quality_means_larger_error():
    errs = {}
    for q in (5, 95):
        errs[q] = np.mean([np.abs(gt.astype(int) - lq.astype(int)).mean() for _, gt, lq in _pairs('jpeg', quality=q)])
    assert errs[5] > 2 * errs[95] > 0


def test_rain_adds_bright_streaks():
    for _, gt, lq in _pairs('rain', num=4, size=64):
        diff = lq.astype(int) - gt.astype(int)
        assert diff.min() >= 0  # purely additive
        assert (diff.max(axis=2) > 10).mean() > 0.002
        assert lq.mean() > gt.mean()


def test_haze_lowers_contrast_and_raises_dark_channel():
    checked = 0
    for _, gt, lq in _pairs('haze', num=8, size=64):
        assert _dark_channel_mean(lq) > _dark_channel_mean(gt)
        if _grad_energy(gt) > 5:  # textured scenes: local contrast is attenuated by t < 1
            assert _grad_energy(lq) < _grad_energy(gt)
            checked += 1
    assert checked >= 3
    # on a textured image without large-scale structure, global contrast drops as well
    gt = sources._fractal(np.random.default_rng(1), 64, 64)
    lq = dd.degrade(gt, 'haze', {'beta': 1.5, 'airlight': 0.9})
    assert lq.astype(float).std() < gt.astype(float).std()


def test_lowlight_lowers_mean():
    for _, gt, lq in _pairs('lowlight', num=6):
        assert lq.mean() < 0.7 * gt.mean()


def test_task_chain_applies_in_order():
    (_, gt, lq), = _pairs('blur,sr,noise', num=1, size=32, scale=2)
    assert lq.shape == (16, 16, 3)
    (_, gt2, lq_sr), = _pairs('blur,sr', num=1, size=32, scale=2)
    assert np.array_equal(gt, gt2) and not np.array_equal(lq, lq_sr)


@pytest.fixture
def speckle():
    """A degradation added the documented way: one registered function."""
    from tripled_basicsr.demo_data.degradations import DEGRADATIONS, Param, register, sample

    @register('speckle', Param('speckle_sigma', 0.2, 0.0, 1.0, 'speckle: multiplicative noise std'))
    def _speckle(x, rng, p, scale):
        sigma = np.float32(sample(rng, p['speckle_sigma']))  # a number or a per-image (lo, hi) range
        return x * (1 + rng.standard_normal(x.shape, dtype=np.float32) * sigma)

    yield 'speckle'
    del DEGRADATIONS['speckle']


def test_a_registered_degradation_is_a_task_with_flags_checks_and_record(speckle, tmp_path, capsys):
    assert 'speckle' in dd.tasks() and dd.task_defaults()['speckle'] == {'speckle_sigma': 0.2}
    (_, gt, lq), = _pairs('noise,speckle', num=1, size=32, speckle_sigma=0.5)
    (_, gt2, lq_noise), = _pairs('noise', num=1, size=32)
    assert np.array_equal(gt, gt2) and not np.array_equal(lq, lq_noise)
    with pytest.raises(DemoDataError, match=r'--speckle-sigma: value 2 out of range \[0, 1\]'):
        generate_pairs('speckle', 1, 16, speckle_sigma=2)
    with pytest.raises(DemoDataError, match='--speckle-sigma: only applies to task speckle'):
        generate_pairs('noise', 1, 16, speckle_sigma=0.1)
    out = tmp_path / 'sp'
    assert main(['--task', 'speckle', '--num', '1', '--size', '16', '--out', str(out), '--quiet',
                 '--speckle-sigma', '0.1,0.3']) == 0
    assert json.loads((out / 'demo_data.json').read_text())['params'] == {'speckle_sigma': [0.1, 0.3]}
    with pytest.raises(SystemExit):
        main(['--help'])
    assert '--speckle-sigma' in capsys.readouterr().out


def test_register_refuses_a_taken_task_or_parameter_name():
    from tripled_basicsr.demo_data.degradations import DEGRADATIONS, Param, register
    before = dict(DEGRADATIONS)
    with pytest.raises(ValueError, match="'noise' is registered twice"):
        register('noise')(lambda x, rng, p, scale: x)
    with pytest.raises(ValueError, match="parameter 'sigma' of 'other' is already used by 'noise'"):
        register('other', Param('sigma', 1.0, 0.0, 2.0, ''))(lambda x, rng, p, scale: x)
    assert DEGRADATIONS == before


# ------------------------------------------------------------------------------------ sources
def test_bundled_photos_present_and_loaded_offline(monkeypatch):
    names = dd.available_photos()
    assert {'astronaut', 'camera', 'coffee', 'chelsea', 'rocket', 'immunohistochemistry'} <= set(names)

    def no_network(*a, **k):
        raise AssertionError('network access attempted')

    monkeypatch.setattr(socket.socket, 'connect', no_network)
    sources._PHOTO_CACHE.clear()
    kinds = [generate_gt(i, 32, source='photos')[1] for i in range(12)]
    assert all(k.startswith('photo:') for k in kinds)
    assert len(set(kinds)) >= 4
    assert all(generate_gt(i, 32, source='procedural')[1].startswith('procedural:') for i in range(6))


def test_mixed_pool_has_realistic_complexity_spread():
    info = [generate_gt(i, 64, seed=0) for i in range(40)]
    kinds = [k for _, k in info]
    assert any(k.startswith('photo:') for k in kinds) and any(k.startswith('procedural:') for k in kinds)
    assert len({k.split(':')[1] for k in kinds if k.startswith('procedural:')}) >= 3
    e = np.array([_grad_energy(img) for img, _ in info])
    lo, hi = np.percentile(e, [10, 90])
    assert e.min() > 0
    assert hi > 4 * lo  # both smooth and busy images
    assert len(np.unique(np.round(e, 3))) == len(e)  # all distinct


def test_uhd_pair():
    (_, gt, lq), = list(generate_pairs('sr', 1, '3840x2160', scale=4))
    assert gt.shape == (2160, 3840, 3) and lq.shape == (540, 960, 3)
    assert gt.std() > 1


# ------------------------------------------------------------------------------------ writing
def test_write_png_folders_deterministic_and_atomic(tmp_path):
    out = tmp_path / 'demo'
    s = write_demo_dataset(out, 'sr', 3, '32x16', scale=2, progress=False)
    assert s['num'] == 3 and s['gt_size'] == (32, 16) and s['lq_size'] == (16, 8) and s['format'] == 'png'
    assert sorted(os.listdir(out / 'gt')) == sorted(os.listdir(out / 'lq')) == ['0000.png', '0001.png', '0002.png']
    for name, gt, lq in generate_pairs('sr', 3, '32x16', scale=2):
        assert np.array_equal(cv2.imread(str(out / 'gt' / f'{name}.png'), cv2.IMREAD_UNCHANGED), gt)
        assert np.array_equal(cv2.imread(str(out / 'lq' / f'{name}.png'), cv2.IMREAD_UNCHANGED), lq)
    meta = json.loads((out / 'demo_data.json').read_text())
    assert meta['task'] == 'sr' and meta['scale'] == 2 and set(meta['images']) == {'0000', '0001', '0002'}
    # no temporary directories left behind
    assert os.listdir(tmp_path) == ['demo']
    # byte-identical re-run; different seed differs
    write_demo_dataset(tmp_path / 'again', 'sr', 3, '32x16', scale=2, progress=False)
    write_demo_dataset(tmp_path / 'other', 'sr', 3, '32x16', scale=2, seed=1, progress=False)
    assert tree_fingerprint(out) == tree_fingerprint(tmp_path / 'again') != tree_fingerprint(tmp_path / 'other')


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = tmp_path / 'ds'
    write_demo_dataset(out, 'noise', 1, 16, progress=False)
    (out / 'marker').write_text('x')
    with pytest.raises(FileExistsError, match=r'ds.*--overwrite'):
        write_demo_dataset(out, 'noise', 1, 16, progress=False)
    assert (out / 'marker').exists()
    with pytest.raises(FileExistsError, match=r'holds files it did not write: .*marker'):  # a file of the user's
        write_demo_dataset(out, 'jpeg', 2, 16, overwrite=True, progress=False)
    (out / 'marker').unlink()
    write_demo_dataset(out, 'jpeg', 2, 16, overwrite=True, progress=False)
    assert sorted(os.listdir(out / 'lq')) == ['0000.png', '0001.png']
    assert sorted(os.listdir(tmp_path)) == ['ds']
    # an existing empty directory is fine
    (tmp_path / 'empty').mkdir()
    write_demo_dataset(tmp_path / 'empty', 'noise', 1, 16, progress=False)


@pytest.mark.parametrize('kind', ['folder', 'file', 'symlink'])
def test_overwrite_never_touches_what_demo_data_did_not_write(tmp_path, capsys, kind):
    """--overwrite replaces only an earlier output of this project: an unrelated folder (a
    thesis, notes), a file, or a link to a folder is refused, byte for byte unchanged, and no
    hidden sibling is left behind."""
    notes = tmp_path / 'notes'
    (notes / 'chapter').mkdir(parents=True)
    (notes / 'thesis.tex').write_text('years of work')
    (notes / 'chapter' / 'fig.png').write_bytes(b'\x89PNG not really')
    out = {'folder': notes, 'file': notes / 'thesis.tex', 'symlink': tmp_path / 'link'}[kind]
    if kind == 'symlink':
        out.symlink_to(notes, target_is_directory=True)
    before, listing = tree_fingerprint(tmp_path), sorted(os.listdir(tmp_path))
    with pytest.raises(FileExistsError, match=str(out)):
        write_demo_dataset(out, 'noise', 2, 16, overwrite=True, progress=False)
    with pytest.raises(SystemExit) as exc:
        main(['--task', 'noise', '--num', '2', '--size', '16', '--out', str(out), '--overwrite', '--quiet'])
    assert exc.value.code == 2 and str(out) in capsys.readouterr().err
    assert tree_fingerprint(tmp_path) == before and sorted(os.listdir(tmp_path)) == listing
    assert sorted(os.listdir(notes)) == ['chapter', 'thesis.tex']


def test_output_carries_the_marker_that_allows_replacing_it(tmp_path):
    out = tmp_path / 'ds'
    write_demo_dataset(out, 'noise', 1, 16, progress=False)
    assert json.loads((out / MARKER_FILE).read_text())['tool'] == 'demo_data'
    os.remove(out / MARKER_FILE)  # an output of an earlier version: recognised by demo_data.json
    write_demo_dataset(out, 'noise', 2, 16, overwrite=True, progress=False)
    assert sorted(os.listdir(out / 'gt')) == ['0000.png', '0001.png']
    (out / 'demo_data.json').write_text('{"generator": "someone else"}')
    os.remove(out / MARKER_FILE)
    before = tree_fingerprint(out)
    with pytest.raises(FileExistsError, match='not written by tripled_basicsr'):
        write_demo_dataset(out, 'noise', 1, 16, overwrite=True, progress=False)
    assert tree_fingerprint(out) == before


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []

    def boom(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError('boom')
        return real(*a, **k)

    real = generate.apply_chain
    monkeypatch.setattr(generate, 'apply_chain', boom)
    with pytest.raises(RuntimeError, match='boom'):
        write_demo_dataset(tmp_path / 'ds', 'noise', 3, 16, progress=False)
    assert os.listdir(tmp_path) == []


def test_lmdb_readable_by_stock_paired_image_dataset(tmp_path):
    from basicsr.data.paired_image_dataset import PairedImageDataset
    out = tmp_path / 'lm'
    s = write_demo_dataset(out, 'sr', 3, '32x24', scale=2, lmdb=True, progress=False)
    assert s['gt'].endswith('gt.lmdb') and s['lq'].endswith('lq.lmdb')
    meta = (out / 'gt.lmdb' / 'meta_info.txt').read_text().splitlines()
    assert meta == ['0000.png (24,32,3) 1', '0001.png (24,32,3) 1', '0002.png (24,32,3) 1']
    assert (out / 'lq.lmdb' / 'meta_info.txt').read_text().splitlines()[0] == '0000.png (12,16,3) 1'
    opt = {
        'name': 'demo',
        'type': 'PairedImageDataset',
        'dataroot_gt': str(out / 'gt.lmdb'),
        'dataroot_lq': str(out / 'lq.lmdb'),
        'io_backend': {
            'type': 'lmdb'
        },
        'phase': 'val',
        'scale': 2,
        'filename_tmpl': '{}',
    }
    ds = PairedImageDataset(opt)
    assert len(ds) == 3
    expected = {n: (g, l) for n, g, l in generate_pairs('sr', 3, '32x24', scale=2)}
    for i in range(3):
        item = ds[i]
        name = item['gt_path']
        gt, lq = expected[name]
        assert tuple(item['gt'].shape) == (3, 24, 32) and tuple(item['lq'].shape) == (3, 12, 16)
        # dataset returns RGB float in [0, 1]
        np.testing.assert_allclose(item['gt'].numpy().transpose(1, 2, 0)[..., ::-1] * 255, gt, atol=1e-3)
        np.testing.assert_allclose(item['lq'].numpy().transpose(1, 2, 0)[..., ::-1] * 255, lq, atol=1e-3)
    write_demo_dataset(tmp_path / 'lm2', 'sr', 3, '32x24', scale=2, lmdb=True, progress=False)
    assert tree_fingerprint(out) == tree_fingerprint(tmp_path / 'lm2')


# ------------------------------------------------------------------------------------ CLI
def test_cli_writes_and_prints_summary(tmp_path, capsys):
    out = tmp_path / 'cli'
    assert main(['--task', 'lowlight', '--num', '2', '--size', '24x16', '--out', str(out), '--quiet', '--gamma',
                 '2.5', '--darken', '0.2,0.4']) == 0
    line = capsys.readouterr().out.strip()
    assert '\n' not in line and 'wrote 2 lowlight pairs' in line and str(out) in line
    assert sorted(os.listdir(out / 'gt')) == ['0000.png', '0001.png']
    meta = json.loads((out / 'demo_data.json').read_text())
    assert meta['params']['gamma'] == 2.5 and meta['params']['darken'] == [0.2, 0.4]


@pytest.mark.parametrize('argv, needle', [
    (['--task', 'nope'], '--task'),
    (['--task', 'noise', '--size', '12y12'], '--size'),
    (['--task', 'noise', '--num', '0'], '--num'),
    (['--task', 'noise', '--num', 'many'], '--num'),
    (['--task', 'sr', '--size', '30', '--scale', '4'], '--scale'),
    (['--task', 'noise', '--quality', '10'], '--quality'),
    (['--task', 'noise', '--sigma', 'x'], '--sigma'),
])
def test_cli_errors(tmp_path, capsys, argv, needle):
    base = ['--num', '1', '--size', '16', '--out', str(tmp_path / 'o'), '--quiet']
    with pytest.raises(SystemExit) as exc:
        main(base + argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()


def test_cli_refuses_existing_output(tmp_path, capsys):
    out = tmp_path / 'o'
    args = ['--task', 'noise', '--num', '1', '--size', '16', '--out', str(out), '--quiet']
    main(args)
    with pytest.raises(SystemExit):
        main(args)
    err = capsys.readouterr().err
    assert str(out) in err and '--overwrite' in err
    assert main(args + ['--overwrite']) == 0


def test_python_dash_m_entry_point(tmp_path, monkeypatch, capsys):
    """``python -m tripled_basicsr.demo_data`` (run in-process via runpy to avoid a slow interpreter start)."""
    import runpy
    import warnings
    out = tmp_path / 'm'
    argv = ['demo_data', '--task', 'haze', '--num', '2', '--size', '16', '--out', str(out), '--lmdb']
    monkeypatch.setattr(sys, 'argv', argv)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # runpy: module already imported
        with pytest.raises(SystemExit) as exc:
            runpy.run_module('tripled_basicsr.demo_data', run_name='__main__')
    assert exc.value.code == 0
    assert 'wrote 2 haze pairs' in capsys.readouterr().out
    assert (out / 'gt.lmdb' / 'data.mdb').exists() and (out / 'lq.lmdb' / 'meta_info.txt').exists()
