import json
import os

import cv2
import numpy as np
import pytest
import torch

from tripled_basicsr import benchmark as bm


def _img(path, h, w, seed, grey=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w) if grey else (h, w, 3), dtype=np.uint8)
    cv2.imwrite(path, img)
    return img


@pytest.fixture(scope='module')
def fake(tmp_path_factory):
    """Tiny copies of every usual folder layout."""
    r = str(tmp_path_factory.mktemp('sets'))
    j = os.path.join
    for i, n in enumerate(['baby', 'bird']):  # BasicSR layout
        _img(j(r, 'Set5', 'GTmod12', f'{n}.png'), 24, 20, i)
        _img(j(r, 'Set5', 'LRbicx2', f'{n}.png'), 12, 10, 10 + i)
    for i, n in enumerate(['comic', 'lenna']):  # EDSR benchmark layout, GT not mod-cropped
        _img(j(r, 'Set14', 'HR', f'{n}.png'), 25, 21, i)
        _img(j(r, 'Set14', 'LR_bicubic', 'X2', f'{n}x2.png'), 12, 10, 20 + i)
    for i in range(2):  # SelfExSR layout
        _img(j(r, 'BSD100', 'image_SRF_2', f'img_00{i}_SRF_2_HR.png'), 16, 16, i)
        _img(j(r, 'BSD100', 'image_SRF_2', f'img_00{i}_SRF_2_LR.png'), 8, 8, i)
    for i in range(3):  # GT only: LQ made by bicubic
        _img(j(r, 'Urban100', f'img{i:03d}.png'), 17, 19, i)
        _img(j(r, 'BSD68', f'test{i:03d}.png'), 16, 18, i, grey=True)
    for i in range(2):
        _img(j(r, 'Rain100L', 'rainy', f'rain-{i:03d}.png'), 16, 16, i)
        _img(j(r, 'Rain100L', 'norain', f'norain-{i:03d}.png'), 16, 16, 5 + i)
        _img(j(r, 'SOTS', 'outdoor', 'hazy', f'{i:04d}_0.8_0.2.jpg'), 16, 16, i)
        _img(j(r, 'SOTS', 'outdoor', 'gt', f'{i:04d}.png'), 16, 16, 5 + i)
        for seq in ('GOPR0384_11_00', 'GOPR0385_11_01'):
            _img(j(r, 'GoPro', 'test', seq, 'blur', f'{i:06d}.png'), 16, 16, i)
            _img(j(r, 'GoPro', 'test', seq, 'sharp', f'{i:06d}.png'), 16, 16, i + 7)
        _img(j(r, 'LOL', 'eval15', 'low', f'{i}.png'), 16, 16, i)
        _img(j(r, 'LOL', 'eval15', 'high', f'{i}.png'), 16, 16, i + 3)
        _img(j(r, 'LOLv2', 'Test', 'Low', f'low{i:05d}.png'), 16, 16, i)
        _img(j(r, 'LOLv2', 'Test', 'Normal', f'normal{i:05d}.png'), 16, 16, i + 3)
        _img(j(r, 'UHD-LL', 'testing_set', 'input', f'{i}_UHD_LL.JPG'), 16, 16, i)
        _img(j(r, 'UHD-LL', 'testing_set', 'gt', f'{i}_UHD_LL.JPG'), 16, 16, i + 3)
    return r


@pytest.mark.parametrize('name,extra,n,lq_hw', [
    ('Set5', {'scale': 2}, 2, (12, 10)), ('Set14', {'scale': 2}, 2, (12, 10)), ('BSD100', {'scale': 2}, 2, (8, 8)),
    ('Urban100', {'scale': 2}, 3, (8, 9)), ('Rain100L', {}, 2, (16, 16)), ('SOTS', {}, 2, (16, 16)),
    ('GoPro', {}, 4, (16, 16)), ('LOL', {}, 2, (16, 16)), ('LOLv2', {'task': 'paired'}, 2, (16, 16)),
    ('UHD-LL', {}, 2, (16, 16))])
def test_every_layout_loads(fake, name, extra, n, lq_hw):
    spec = bm.set_spec({'name': name, **extra}, {'datasets_root': fake})
    groups = bm.load_pairs(spec)
    (label, pairs), = groups.items()
    assert len(pairs) == n
    s = spec['scale']
    for key, gt, lq in pairs:
        assert lq.shape[:2] == lq_hw and gt.shape[:2] == (lq_hw[0] * s, lq_hw[1] * s)
        assert gt.dtype == np.uint8 and lq.dtype == np.float32 and lq.max() <= 1


def test_pairing_matches_the_right_files(fake):
    pairs = bm.load_pairs(bm.set_spec('Rain100L', {'datasets_root': fake}))['Rain100L']
    gt = cv2.imread(os.path.join(fake, 'Rain100L', 'norain', 'norain-001.png'))
    lq = cv2.imread(os.path.join(fake, 'Rain100L', 'rainy', 'rain-001.png'))
    key, g, q = pairs[1]
    assert np.array_equal(g, gt) and np.array_equal(np.round(q * 255).astype(np.uint8), lq)
    assert bm.pair_key('baby_GT.bmp') == bm.pair_key('babyx4.png') == 'baby'
    assert bm.pair_key('img_001_SRF_4_HR.png') == bm.pair_key('img_001_SRF_4_LR.png')


def test_denoise_protocol_fixed_noise_and_grey(fake):
    spec = bm.set_spec({'name': 'BSD68', 'sigmas': [15, 50], 'noise_seed': 3}, {'datasets_root': fake})
    g1, g2 = bm.load_pairs(spec), bm.load_pairs(spec)
    assert list(g1) == ['BSD68 sigma=15', 'BSD68 sigma=50'] and spec['grey']
    for label in g1:
        for (_, gt, a), (_, _, b) in zip(g1[label], g2[label]):
            np.testing.assert_array_equal(a, b)  # same noise for every model and run
    _, gt, lq = g1['BSD68 sigma=50'][0]
    assert np.array_equal(lq[:, :, 0], lq[:, :, 2])  # grey set: grey noise (what grey models train on)
    std = float(np.std(lq.astype(np.float64) - gt / 255.0)) * 255
    assert 40 < std < 60 and lq.min() < 0  # float, not clipped


def test_missing_set_is_skipped_with_where_it_goes(tmp_path):
    spec = bm.set_spec('Manga109', {'datasets_root': str(tmp_path)})
    assert bm.load_pairs(spec) == {}
    msg = bm.missing_message(spec)
    assert 'skipped Manga109' in msg and str(tmp_path) in msg and 'GTmod12' in msg and 'manga109.org' in msg


def test_bad_set_entries():
    with pytest.raises(bm.BenchmarkError, match='task must be one of'):
        bm.set_spec('MyOwnSet')
    with pytest.raises(bm.BenchmarkError, match=r'Unknown option BSD68.sigmaa. Did you mean sigma, sigmas\?'):
        bm.set_spec({'name': 'BSD68', 'sigmaa': 3})


def _save_srvgg(path, scale):
    from basicsr.archs.srvgg_arch import SRVGGNetCompact
    torch.manual_seed(0)
    net_opt = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_conv': 1,
               'upscale': scale, 'act_type': 'prelu'}
    net = SRVGGNetCompact(**{k: v for k, v in net_opt.items() if k != 'type'})
    torch.save({'params': net.state_dict()}, path)
    return net_opt, net


def test_run_benchmark_table_and_y_protocol(fake, tmp_path, notes):
    net_opt, net = _save_srvgg(str(tmp_path / 'net.pth'), 2)
    opt = {'name': 'tiny', 'datasets_root': fake, 'scale': 2, 'device': 'cpu',
           'sets': ['Set5', 'Set14', 'Manga109'],
           'models': [{'name': 'bicubic', 'type': 'input'},
                      {'name': 'srvgg', 'network_g': net_opt, 'weights': str(tmp_path / 'net.pth')}]}
    rows, skipped, _ = bm.run_benchmark(opt)
    assert len(rows) == 4 and len(skipped) == 1 and 'Manga109' in skipped[0]
    assert skipped[0] in notes and sum(n.startswith('srvgg ') for n in notes) == 2  # one channel: utils/log
    # the Y-channel PSNR with the scale as border equals BasicSR's metric on the same output
    from basicsr.metrics import calculate_psnr
    (_, gt, lq), _ = bm.load_pairs(bm.set_spec('Set5', {'datasets_root': fake, 'scale': 2}))['Set5']
    out = bm.restore(net.eval(), lq)
    want = calculate_psnr(out, gt, crop_border=2, test_y_channel=True)
    per = bm.evaluate(lambda q: bm.restore(net.eval(), q), [('x', gt, lq)],
                      bm.set_spec('Set5', {'scale': 2}))[0]['psnr']
    assert per == pytest.approx(want)
    # tiled inference gives the same numbers (the net's receptive field fits in the overlap)
    tiled = bm.restore(net.eval(), lq, tile={'size': 4, 'overlap': 4})
    assert np.abs(tiled.astype(int) - out.astype(int)).max() <= 1
    md = bm.markdown_table(rows, skipped, 'tiny')
    assert 'x2 SR' in md and 'Y (BT.601)' in md and '| Set5 (2 images) |' in md and 'skipped Manga109' in md
    out_dir = tmp_path / 'bench'
    bm.write_outputs(str(out_dir), rows, skipped, opt)
    data = json.loads((out_dir / 'results.json').read_text())
    assert len(data['rows']) == 4 and (out_dir / 'results.csv').read_text().count('\n') == 5


def test_cli_errors_name_the_problem(tmp_path, capsys):
    p = tmp_path / 'b.yml'
    p.write_text('name: x\nsets: [Set5]\nmodels: [{name: m, network_g: {type: SRVGGNetCompact}}]\n')
    assert bm.main(['-opt', str(p)]) == 2
    assert 'model m: weights is required' in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'results')


def test_models_from_training_yaml_and_piqe_on_paired_sets(fake, tmp_path):
    import yaml
    net_opt, _ = _save_srvgg(str(tmp_path / 'n1.pth'), 1)
    (tmp_path / 'train.yml').write_text(yaml.safe_dump({'network_g': net_opt}))
    opt = {'datasets_root': fake, 'device': 'cpu', 'sets': ['LOL', 'UHD-LL'], 'no_reference': ['piqe'],
           'tile': {'size': 8, 'overlap': 4},
           'models': [{'name': 'm', 'opt': str(tmp_path / 'train.yml'), 'weights': str(tmp_path / 'n1.pth')}]}
    rows, skipped, _ = bm.run_benchmark(opt)
    assert [r['set'] for r in rows] == ['LOL', 'UHD-LL'] and not skipped
    assert all(0 <= r['piqe'] <= 100 and 'RGB' in r['protocol'] for r in rows)


def test_bad_output_path_fails_before_any_model_runs(fake, tmp_path, capsys, monkeypatch):
    import yaml
    from tripled_basicsr.utils.io import tree_fingerprint
    net_opt, _ = _save_srvgg(str(tmp_path / 'n.pth'), 2)
    loaded = []
    monkeypatch.setattr(bm, 'load_network', lambda *a, **k: loaded.append(a) or None)
    before = tree_fingerprint(fake)
    for out in (os.path.join(fake, 'Set5', 'results'), str(tmp_path / 'notes')):  # inside a source; foreign folder
        if out.endswith('notes'):
            os.makedirs(out, exist_ok=True)
            (tmp_path / 'notes' / 'thesis.txt').write_text('days of work')
        p = tmp_path / 'b.yml'
        p.write_text(yaml.safe_dump({'datasets_root': fake, 'scale': 2, 'device': 'cpu', 'sets': ['Set5'],
                                     'models': [{'name': 'm', 'network_g': net_opt, 'weights': str(tmp_path / 'n.pth')}],
                                     'output': {'path': out}}))
        assert bm.main(['-opt', str(p)]) == 2
        err = capsys.readouterr().err
        assert out in err and loaded == []
    assert tree_fingerprint(fake) == before
    assert (tmp_path / 'notes' / 'thesis.txt').read_text() == 'days of work'


@pytest.mark.parametrize('cli', ['benchmark', 'study'])
def test_python_tag_in_options_is_refused_and_never_run(tmp_path, capsys, monkeypatch, cli):
    from tripled_basicsr.study.__main__ import main as study_main
    marker = tmp_path / 'HACKED'
    p = tmp_path / 'x.yml'
    p.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\nsets: [Set5]\n')
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert (bm.main if cli == 'benchmark' else study_main)(['-opt', str(p)]) == 2
    err = capsys.readouterr().err
    assert 'x.yml' in err and 'python/object/apply' in err
    assert not marker.exists() and sorted(os.listdir(tmp_path)) == before


def test_output_inside_the_lq_folder_of_a_paired_set_is_refused(fake, tmp_path, capsys):
    import yaml
    from tripled_basicsr.utils.io import tree_fingerprint
    gt, lq = os.path.join(fake, 'LOL', 'eval15', 'high'), os.path.join(fake, 'LOL', 'eval15', 'low')
    before = tree_fingerprint(fake)
    out = os.path.join(lq, 'results')
    p = tmp_path / 'b.yml'
    p.write_text(yaml.safe_dump({'device': 'cpu', 'sets': [{'name': 'MyLOL', 'dataroot_gt': gt, 'dataroot_lq': lq}],
                                 'models': [{'name': 'input', 'type': 'input'}], 'output': {'path': out}}))
    assert bm.main(['-opt', str(p)]) == 2
    assert out in capsys.readouterr().err and not os.path.exists(out)
    assert tree_fingerprint(fake) == before
