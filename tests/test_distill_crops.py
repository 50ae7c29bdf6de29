"""Crop-level selection units: stored crop == source region (scale 1 and 4, folder and LMDB
sources, whole and tiled output), pixel budget, provenance, bad options."""
import json
import math
import os
import re

import cv2
import numpy as np
import pytest

from tripled_basicsr.distill import run_distill
from tripled_basicsr.distill._testing import tiny_options, write_pairs
from tripled_basicsr.distill.crops import crop_grid
from tripled_basicsr.options import OptionError


def test_crop_grid_covers_the_image():
    t, x = crop_grid(100, 70, 32, 32)
    assert sorted(set(t.tolist())) == [0, 32, 64, 68] and sorted(set(x.tolist())) == [0, 32, 38]
    cover = np.zeros((100, 70), bool)
    for a, b in zip(t, x):
        cover[a:a + 32, b:b + 32] = True
    assert cover.all()
    assert len(crop_grid(20, 70, 32, 32)[0]) == 0
    t, _ = crop_grid(64, 64, 32, 16)
    assert sorted(set(t.tolist())) == [0, 16, 32]


def _source(tmp_path, scale, lmdb, size=64):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=8, size=size, seed=3, scale=scale, sigma=5)
    if not lmdb:
        return gt, lq, gt, lq, {}
    from tripled_basicsr.pack import pack
    packed = str(tmp_path / 'packed')
    pack(gt, lq, packed, scale=scale, progress=False)
    return gt, lq, os.path.join(packed, 'gt.lmdb'), os.path.join(packed, 'lq.lmdb'), {'io_backend': {'type': 'lmdb'}}


@pytest.mark.parametrize('scale,lmdb,tile', [(1, False, 0), (4, False, 64), (1, True, 64), (4, True, 0)])
def test_stored_crop_equals_source_region(tmp_path, scale, lmdb, tile):
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    size, crop = (128, 96) if tile else (64, 24 if scale == 1 else 32)  # tiled: a crop spans several tiles
    gt_dir, lq_dir, gt, lq, src_extra = _source(tmp_path, scale, lmdb, size)
    out = str(tmp_path / 'o')
    opt = tiny_options(gt, lq, out, source=dict(src_extra, scale=scale, crop_size=crop),
                       selection={'ratio': 0.1 if not tile else 0.3, 'seed': 1, 'clusters': 2},
                       output={'tile_size': tile})
    s = run_distill(opt, progress=False)
    # ratio = share of the source's GT pixels
    assert s['n'] == math.ceil((0.3 if tile else 0.1) * 8 * size * size / crop ** 2)
    ds = TripleDDataset({'dataroot': out, 'phase': 'val', 'scale': scale})
    with open(os.path.join(out, 'tripled_meta.json')) as f:
        samples = json.load(f)['samples']
    for i, smp in enumerate(samples):
        top, left, h, w = smp['box']
        assert (h, w) == (crop, crop) and top % scale == 0 and left % scale == 0
        name = smp['image_key']
        src_gt = cv2.imread(os.path.join(gt_dir, name + '.png'))
        src_lq = cv2.imread(os.path.join(lq_dir, name + '.png'))
        assert np.array_equal(ds.read_image(i, 'gt'), src_gt[top:top + h, left:left + w])
        s_ = scale
        assert np.array_equal(ds.read_image(i, 'lq'), src_lq[top // s_:(top + h) // s_, left // s_:(left + w) // s_])
        assert smp['key'] == f'{name}_y{top}_x{left}'
    if scale == 1 and not lmdb and not tile:  # a training patch larger than the crops: refused before training
        with pytest.raises(ValueError, match=rf'{crop}-px crops: lower gt_size to <= {crop}, or distil again with '
                                             r'source\.crop_size >= 32'):
            TripleDDataset({'dataroot': out, 'phase': 'train', 'scale': 1, 'gt_size': 32})
        assert len(TripleDDataset({'dataroot': out, 'phase': 'train', 'scale': 1, 'gt_size': crop})) == s['n']


def test_num_counts_crops_and_bad_options(tmp_path):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=4, size=48, seed=4)
    out = str(tmp_path / 'o')
    s = run_distill(tiny_options(gt, lq, out, source={'crop_size': 16, 'crop_step': 8},
                                 selection={'num': 5, 'clusters': 2}), progress=False)
    assert s['n'] == 5 and s['N'] == 4 * 25
    for src, pat in (({'crop_size': 30, 'scale': 4}, r'source\.crop_size \(30\) must be a multiple of source\.scale'),
                     ({'crop_step': 8}, r'source\.crop_step is set but source\.crop_size is 0'),
                     ({'crop_size': 4}, r'source\.crop_size must be 0 \(whole images\) or >= 8'),
                     ({'crop_size': 'big'}, r"source\.crop_size must be an integer; got 'big'"),
                     ({'crop_size': 96}, r'source\.crop_size 96 is larger than every source image')):
        o = str(tmp_path / 'bad')
        with pytest.raises(OptionError, match=pat):
            run_distill(tiny_options(gt, lq, o, source=src), progress=False)
        assert not os.path.exists(o) and not os.path.exists(o + '.work')
    with pytest.raises(OptionError, match=r'selection\.num = 999 must be between 1 and the number of crops'):
        run_distill(tiny_options(gt, lq, str(tmp_path / 'b2'), source={'crop_size': 16}, selection={'num': 999}),
                    progress=False)


@pytest.mark.parametrize('tile', [0, 64])
def test_raw_codec_stores_the_same_pixels_as_png(tmp_path, tile):
    from tripled_basicsr.data.distilled_format import decode_raw, encode_raw
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_raw(encode_raw(img)), img)
    gt, lq = write_pairs(str(tmp_path / 'src'), num=6, size=96, seed=5, scale=2)
    dss = {}
    for codec in ('png', 'raw'):
        out = str(tmp_path / codec)
        run_distill(tiny_options(gt, lq, out, source={'scale': 2}, output={'codec': codec, 'tile_size': tile},
                                 selection={'ratio': 0.5}), progress=False)
        dss[codec] = TripleDDataset({'dataroot': out, 'phase': 'val', 'scale': 2})
    assert dss['raw'].codec == 'raw' and dss['png'].codec == 'png' and dss['raw'].keys == dss['png'].keys
    for i in range(len(dss['raw'])):
        for which in ('gt', 'lq'):
            assert np.array_equal(dss['raw'].read_image(i, which), dss['png'].read_image(i, which))
        assert np.array_equal(dss['raw'].read_region(i, 'gt', 10, 20, 70, 30),
                              dss['png'].read_region(i, 'gt', 10, 20, 70, 30))
    # train phase: BasicSR's augment flips in place, so the returned crops must be writable
    tr = TripleDDataset({'dataroot': str(tmp_path / 'raw'), 'phase': 'train', 'scale': 2, 'gt_size': 32,
                         'use_hflip': True, 'use_rot': True})
    for i in range(len(tr)):
        assert tr[i]['gt'].shape == (3, 32, 32)
    # stock BasicSR cannot decode raw values: meta_info names them .raw, not .png
    with open(os.path.join(str(tmp_path / 'raw'), 'gt.lmdb', 'meta_info.txt')) as f:
        assert '.raw (' in f.readline()


def test_bad_codec(tmp_path):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=4, size=32, seed=6)
    o = str(tmp_path / 'o')
    with pytest.raises(OptionError, match=r"output\.codec must be one of auto, png, raw; got 'jpeg'"):
        run_distill(tiny_options(gt, lq, o, output={'codec': 'jpeg'}), progress=False)
    assert not os.path.exists(o) and not os.path.exists(o + '.work')


def test_auto_crop_size_rule():
    from tripled_basicsr.distill.crops import auto_crop_size
    assert auto_crop_size([(180, 180)] * 3) == 60  # Train400-sized: a third of the side, ~9 crops an image
    assert auto_crop_size([(1356, 2040), (1404, 2040), (1200, 2040)]) == 452  # DIV2K-sized
    assert auto_crop_size([(1356, 2040)], scale=4) == 448  # a multiple of 4 * scale (LQ aligned)
    assert auto_crop_size([(2160, 3840)], scale=2) == 480  # capped at BasicSR's 480-px sub-images
    assert auto_crop_size([(100, 300), (120, 120)]) == 48  # floor
    assert auto_crop_size([(64, 64), (64, 200), (300, 300)]) is None  # median short side < 96: whole images
    assert auto_crop_size([]) is None


def test_defaults_are_crops_statistics_and_importance_offline(tmp_path, monkeypatch, capsys):
    from tripled_basicsr.distill.backbone import AUTO_VIT, resolve_auto_backbone
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')  # no weights to be had: auto falls back without waiting for a hub
    gt, lq = write_pairs(str(tmp_path / 'src'), num=6, size=144, seed=3, sigma=5)
    before = sorted(os.listdir(gt))
    out = str(tmp_path / 'o')
    opt = {'source': {'dataroot_gt': gt, 'dataroot_lq': lq}, 'output': {'path': out},
           'features': {'num_workers': 0, 'device': 'cpu'}, 'selection': {'ratio': 0.1},
           'report': {'plot': False, 'random_repeats': 2}}
    run_distill(opt, progress=False)
    err = capsys.readouterr().err
    assert 'crop_size auto -> 48-px crops' in err and 'backbone auto -> tripled_stats' in err
    with open(os.path.join(out, 'tripled_meta.json')) as f:
        meta = json.load(f)
    used = meta['provenance']['options']
    assert used['source']['crop_size'] == 48 and used['features']['backbone'] == 'tripled_stats'
    assert used['selection']['type'] == 'importance' and used['calibration']['enabled'] is False
    assert used['selection']['power'] == 1.0 and used['selection']['quota'] == 'count'
    assert meta['summary']['timings']['difficulty'] > 0
    n = math.ceil(0.1 * 6 * 144 * 144 / 48 ** 2)  # the budget is a share of the pixels
    assert len(meta['samples']) == n and all(len(s['box']) == 4 and s['box'][2] == 48 for s in meta['samples'])
    assert sorted(os.listdir(gt)) == before
    # small crop set: stored uncompressed (output.codec auto -> raw), a patch is a slice of the stored array
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    from tripled_basicsr.distill.pipeline import auto_codec
    assert used['output']['codec'] == meta['codec'] == 'raw'
    ds = TripleDDataset({'dataroot': out, 'phase': 'val', 'scale': 1})
    top, left, h, w = meta['samples'][0]['box']
    src = cv2.imread(os.path.join(gt, meta['samples'][0]['image_key'] + '.png'))
    assert np.array_equal(ds.read_image(0, 'gt'), src[top:top + h, left:left + w])
    assert auto_codec(0, 1, 10) == 'png' and auto_codec(480, 4, 10 ** 6) == 'png'  # whole images; too large
    assert resolve_auto_backbone(pretrained=False) == 'tripled_stats'
    assert resolve_auto_backbone(checkpoint=str(tmp_path / 'w.pth')) == AUTO_VIT  # a local file: the ViT
    with pytest.raises(OptionError, match=r'source\.crop_step is set but source\.crop_size is auto'):
        run_distill(dict(opt, source={'dataroot_gt': gt, 'dataroot_lq': lq, 'crop_step': 8},
                         output={'path': str(tmp_path / 'o2')}), progress=False)
    with pytest.raises(OptionError, match=r"source\.crop_size must be an integer; got 'big'"):
        run_distill(dict(opt, source={'dataroot_gt': gt, 'dataroot_lq': lq, 'crop_size': 'big'},
                         output={'path': str(tmp_path / 'o3')}), progress=False)


def test_auto_crops_with_an_unreadable_image(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    gt, lq = write_pairs(str(tmp_path / 'src'), num=6, size=144, seed=3, sigma=5)
    bad = os.path.join(gt, sorted(os.listdir(gt))[2])
    with open(bad, 'wb') as f:
        f.write(b'not a png')

    def opt(out, on_error):
        return {'source': {'dataroot_gt': gt, 'dataroot_lq': lq, 'on_error': on_error}, 'output': {'path': out},
                'features': {'num_workers': 0, 'device': 'cpu'}, 'selection': {'ratio': 0.1},
                'report': {'plot': False, 'random_repeats': 2}}
    with pytest.raises(Exception, match=re.escape(bad)):
        run_distill(opt(str(tmp_path / 'a'), 'raise'), progress=False)
    assert not os.path.exists(tmp_path / 'a')
    run_distill(opt(str(tmp_path / 'b'), 'skip'), progress=False)
    with open(tmp_path / 'b' / 'tripled_meta.json') as f:
        meta = json.load(f)
    assert meta['provenance']['options']['source']['crop_size'] == 48  # the median of the readable sizes
    skipped = meta['summary']['skipped']
    assert [s['gt_path'] for s in skipped] == [bad] and skipped[0]['reason'].startswith(f'unreadable GT image: {bad}')
    assert os.path.splitext(os.path.basename(bad))[0] not in {s['image_key'] for s in meta['samples']}
    assert len(meta['samples']) == math.ceil(0.1 * 5 * 144 * 144 / 48 ** 2)  # the budget counts readable pixels


@pytest.mark.parametrize('lmdb', [False, True])
def test_crop_features_come_from_one_reduced_decode(tmp_path, lmdb):
    """The feature stage cuts crop units from one (reduced) decode of their image: for PNGs the
    result equals decoding each encoded crop at reduced size (the per-crop path); for a
    large JPEG the decode uses the DCT reduction and the crop maps back to its full-resolution box."""
    from tripled_basicsr.data.paired_source import PairedSource
    from tripled_basicsr.distill.crops import CropSource
    from tripled_basicsr.distill.features import decode_reduced
    gt_dir, lq_dir, gt, lq, _ = _source(tmp_path, 1, lmdb, size=96)
    src = CropSource(PairedSource(gt, lq), 48, 24)
    for i in range(len(src)):
        for w in ('gt', 'lq'):
            for target in (16, 48):
                got = src.read_reduced(i, w, target)
                want = decode_reduced(src.read_bytes(i, w), target)
                assert np.array_equal(got, want), (i, w, target)
    # a 1600x1200 JPEG: 400-px crops at target 96 decode at 1/4
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(cv2.resize(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8), (1600, 1200),
                                      interpolation=cv2.INTER_CUBIC), (0, 0), 4)
    jroot = tmp_path / 'jpg'
    for d in ('gt', 'lq'):
        os.makedirs(jroot / d)
        cv2.imwrite(str(jroot / d / 'a.jpg'), big, [cv2.IMWRITE_JPEG_QUALITY, 95])
    jsrc = CropSource(PairedSource(str(jroot / 'gt'), str(jroot / 'lq')), 400)
    assert len(jsrc) == 12
    for i in range(len(jsrc)):
        got = jsrc.read_reduced(i, 'gt', 96)
        want = decode_reduced(jsrc.read_bytes(i, 'gt'), 96)
        assert got.shape == want.shape == (96, 96, 3)
        # same content: the DCT reduction then a 100 -> 96 shrink, against one 400 -> 96 shrink
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 2.5
    assert ('reduced', 'gt', 4) in jsrc._cache
    # an LQ that is not GT / scale: the pair is refused from the headers, naming both files and sizes
    cv2.imwrite(str(jroot / 'lq' / 'a.jpg'), big[:800])
    with pytest.raises(ValueError, match=r'lq/a\.jpg is 1600x800 but GT .*gt/a\.jpg is 1600x1200'):
        CropSource(PairedSource(str(jroot / 'gt'), str(jroot / 'lq')), 400)
    # and should a header lie, the crop box is checked against the decoded image too, as by read()
    bad = CropSource(PairedSource(str(jroot / 'gt'), str(jroot / 'lq')), 400, shapes=[(1200, 1600)])
    with pytest.raises(ValueError, match=r'a\.jpg: LQ is 1600x800, too small for the crop box'):
        for i in range(len(bad)):
            bad.read_reduced(i, 'lq', 96)
    with pytest.raises(ValueError, match=r'a\.jpg: LQ is 1600x800, too small'):
        for i in range(len(bad)):
            bad.check_box(i, 'lq')


def test_decode_workers_give_the_same_subset_byte_for_byte(tmp_path, monkeypatch):
    """features.num_workers 2 runs the feature stage, the proxy difficulty and the write's reads in
    worker processes (each reading a contiguous run of units): same features, same difficulty,
    same subset and the same stored bytes as one process."""
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    gt, lq = write_pairs(str(tmp_path / 'src'), num=7, size=144, seed=4, sigma=5)
    outs = {}
    for workers in (0, 2):
        out = outs[workers] = str(tmp_path / f'w{workers}')
        run_distill({'source': {'dataroot_gt': gt, 'dataroot_lq': lq}, 'output': {'path': out},
                     'features': {'num_workers': workers, 'device': 'cpu', 'batch_size': 8},
                     'selection': {'ratio': 0.15}, 'report': {'plot': False, 'random_repeats': 2}}, progress=False)
    metas = []
    for out in outs.values():
        with open(os.path.join(out, 'tripled_meta.json')) as f:
            metas.append(json.load(f))
    assert metas[0]['summary']['features']['embedded_this_run'] == 7 * 9 and len(metas[0]['samples']) > 8
    assert [s['key'] for s in metas[0]['samples']] == [s['key'] for s in metas[1]['samples']]
    for a, b in zip(metas[0]['samples'], metas[1]['samples']):
        assert (a['complexity'], a['uncertainty'], a['cluster'], a['stage']) == \
            (b['complexity'], b['uncertainty'], b['cluster'], b['stage'])
    for name in ('features.f16', 'stats.f32'):
        assert open(os.path.join(outs[0] + '.work', name), 'rb').read() == \
            open(os.path.join(outs[2] + '.work', name), 'rb').read()
    for which in ('gt.lmdb', 'lq.lmdb'):
        assert open(os.path.join(outs[0], which, 'data.mdb'), 'rb').read() == \
            open(os.path.join(outs[2], which, 'data.mdb'), 'rb').read()
