"""Distilled-LMDB format: pack -> TripleDDataset round trips, stock compatibility, bad input."""
import json
import os
import random

import cv2
import lmdb
import numpy as np
import pytest
import torch
from basicsr.data.paired_image_dataset import PairedImageDataset

from conftest import write_pairs
from tripled_basicsr.data.distilled_format import FormatError, read_meta
from tripled_basicsr.data.paired_source import PairedSource, SourceError
from tripled_basicsr.data.tripled_dataset import TripleDDataset
from tripled_basicsr.pack import main as pack_main
from tripled_basicsr.pack import pack
from tripled_basicsr.utils.io import tree_fingerprint
from tripled_basicsr.utils.ownership import OutputExistsError


def to_rgb_tensor(bgr):
    return torch.from_numpy(bgr[:, :, ::-1].astype(np.float32).transpose(2, 0, 1) / 255.)


def dataset(root, phase='val', **kw):
    opt = {'name': 't', 'type': 'TripleDDataset', 'dataroot': str(root), 'phase': phase,
           'io_backend': {'type': 'lmdb'}}
    opt.update(kw)
    return TripleDDataset(opt)


@pytest.mark.parametrize('tile_size', [0, 64])
def test_pack_roundtrip_whole_images(tmp_path, sr_pairs, tile_size):
    gt_dir, lq_dir, images = sr_pairs
    out = tmp_path / 'packed'
    summary = pack(gt_dir, lq_dir, str(out), scale=2, tile_size=tile_size, progress=False)
    assert summary['num_pairs'] == 3
    ds = dataset(out, scale=2)
    assert len(ds) == 3
    for i in range(len(ds)):
        item = ds[i]
        gt, lq = images[item['key']]
        assert torch.equal(item['gt'], to_rgb_tensor(gt))
        assert torch.equal(item['lq'], to_rgb_tensor(lq))
        assert item['index'] == i and item['gt_path'] == item['key']
        assert np.isnan(item['complexity'].item()) and item['stage'] == 0 and item['cluster'] == -1


def test_tiled_crops_equal_source_regions_including_borders(tmp_path, sr_pairs):
    gt_dir, lq_dir, images = sr_pairs  # 150x200 GT, 75x100 LQ: the 64-px tile grid does not divide it
    out = tmp_path / 'tiled'
    pack(gt_dir, lq_dir, str(out), scale=2, tile_size=64, progress=False)
    ds = dataset(out, scale=2)
    key = ds.keys[0]
    gt, lq = images[key]
    for top, left, h, w in [(0, 0, 150, 200), (150 - 37, 200 - 41, 37, 41), (60, 60, 10, 10), (63, 127, 2, 2),
                            (0, 190, 150, 10)]:
        assert np.array_equal(ds.read_region(0, 'gt', top, left, h, w), gt[top:top + h, left:left + w])
    assert np.array_equal(ds.read_region(0, 'lq', 70, 90, 5, 10), lq[70:75, 90:100])
    with pytest.raises(ValueError, match='outside'):
        ds.read_region(0, 'gt', 140, 0, 20, 20)


def test_train_crops_read_only_needed_tiles_and_match_source(tmp_path, sr_pairs):
    gt_dir, lq_dir, images = sr_pairs
    out = tmp_path / 'tiled'
    pack(gt_dir, lq_dir, str(out), scale=2, tile_size=64, progress=False)
    ds = dataset(out, phase='train', scale=2, gt_size=32, use_hflip=False, use_rot=False)
    for seed in range(20):
        random.seed(seed)
        top, left = random.randint(0, 75 - 16), random.randint(0, 100 - 16)
        random.seed(seed)
        before = ds.tiles_decoded
        item = ds[1]
        gt, lq = images[ds.keys[1]]
        assert torch.equal(item['lq'], to_rgb_tensor(lq[top:top + 16, left:left + 16]))
        assert torch.equal(item['gt'], to_rgb_tensor(gt[2 * top:2 * top + 32, 2 * left:2 * left + 32]))
        # a 32-px GT crop touches at most 2x2 GT tiles; the LQ crop likewise at most 2x2 LQ tiles
        gt_tiles = len({(r, c) for r in (2 * top // 64, (2 * top + 31) // 64)
                        for c in (2 * left // 64, (2 * left + 31) // 64)})
        lq_tiles = len({(r, c) for r in (top // 32, (top + 15) // 32) for c in (left // 32, (left + 15) // 32)})
        assert ds.tiles_decoded - before == gt_tiles + lq_tiles
    assert ds.tiles_decoded < 20 * 8


def test_whole_format_is_readable_by_stock_paired_image_dataset(tmp_path, sr_pairs):
    gt_dir, lq_dir, images = sr_pairs
    out = tmp_path / 'whole'
    pack(gt_dir, lq_dir, str(out), scale=2, tile_size=0, progress=False)
    stock = PairedImageDataset({'name': 's', 'type': 'PairedImageDataset', 'dataroot_gt': str(out / 'gt.lmdb'),
                                'dataroot_lq': str(out / 'lq.lmdb'), 'io_backend': {'type': 'lmdb'},
                                'phase': 'val', 'scale': 2, 'filename_tmpl': '{}'})
    stock_items = [stock[i] for i in range(len(stock))]
    # py-lmdb allows one open handle per LMDB per process: release the stock reader's first
    for env in stock.file_client.client._client.values():
        env.close()
    ours = dataset(out, scale=2)
    assert len(stock) == len(ours) == 3
    for i in range(3):
        a, b = stock_items[i], ours[i]
        assert a['gt_path'] == b['key']
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq'])
    line = open(out / 'gt.lmdb' / 'meta_info.txt').readline().split()
    assert line[0] == f'{ours.keys[0]}.png' and line[1] == '(150,200,3)' and line[2] == '1'


def test_meta_json_records_provenance_and_samples(tmp_path, pairs):
    gt_dir, lq_dir, _ = pairs
    out = tmp_path / 'p'
    pack(gt_dir, lq_dir, str(out), progress=False)
    meta = read_meta(str(out))
    assert meta['format'] == 'tripled-distilled' and meta['format_version'] == 1
    assert meta['provenance']['source']['dataroot_gt'] == os.path.abspath(gt_dir)
    s = meta['samples'][0]
    assert s['gt_path'].endswith('0000.png') and s['gt_shape'] == [60, 80, 3]
    assert {'complexity', 'uncertainty', 'cluster', 'stage', 'calibrated'} <= set(s)


def test_sources_basicsr_lmdb_meta_info_and_filename_tmpl(tmp_path):
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    gt_dir, lq_dir, images = write_pairs(str(tmp_path / 's'), n=3, size=(40, 48), lq_tmpl='{}_x1')
    # folder source with BasicSR's filename_tmpl
    src = PairedSource(gt_dir, lq_dir, filename_tmpl='{}_x1')
    assert src.keys == ['0000', '0001', '0002']
    # BasicSR LMDB pair made by BasicSR's own lmdb util (what create_lmdb.py calls)
    names = sorted(os.listdir(gt_dir))
    make_lmdb_from_imgs(gt_dir, str(tmp_path / 'gt.lmdb'), names, [n[:-4] for n in names])
    lq_names = sorted(os.listdir(lq_dir))
    make_lmdb_from_imgs(lq_dir, str(tmp_path / 'lq.lmdb'), lq_names, [n[:-7] for n in lq_names])
    pack(str(tmp_path / 'gt.lmdb'), str(tmp_path / 'lq.lmdb'), str(tmp_path / 'from_lmdb'), progress=False)
    ds = dataset(tmp_path / 'from_lmdb')
    for i in range(3):
        gt, lq = images[ds.keys[i]]
        assert np.array_equal(ds.read_image(i, 'gt'), gt) and np.array_equal(ds.read_image(i, 'lq'), lq)
    # meta_info list selects a subset of the GT folder
    meta = tmp_path / 'meta.txt'
    meta.write_text('0002.png (40,48,3)\n0000.png (40,48,3)\n')
    src = PairedSource(gt_dir, lq_dir, filename_tmpl='{}_x1', meta_info_file=str(meta))
    assert src.kind == 'meta_info' and src.keys == ['0000', '0002']


def test_keys_with_dots_in_file_names_are_sanitised(tmp_path):
    root = tmp_path / 's'
    gt_dir, lq_dir, _ = write_pairs(str(root), n=1, size=(32, 32))
    os.rename(os.path.join(gt_dir, '0000.png'), os.path.join(gt_dir, 'img.v2.png'))
    os.rename(os.path.join(lq_dir, '0000.png'), os.path.join(lq_dir, 'img.v2.png'))
    pack(gt_dir, lq_dir, str(tmp_path / 'o'), progress=False)
    assert read_meta(str(tmp_path / 'o'))['samples'][0]['key'] == 'img_v2'


# ----------------------------------------------------------------------------- conversions
def test_grayscale_rgba_and_16bit_sources_are_converted_as_documented(tmp_path):
    rng = np.random.default_rng(3)
    gt_dir, lq_dir = tmp_path / 'gt', tmp_path / 'lq'
    gt_dir.mkdir()
    lq_dir.mkdir()
    gray = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    rgba = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    deep = rng.integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    for name, img in (('gray', gray), ('rgba', rgba), ('deep', deep)):
        cv2.imwrite(str(gt_dir / f'{name}.png'), img)
        cv2.imwrite(str(lq_dir / f'{name}.png'), img)
    pack(str(gt_dir), str(lq_dir), str(tmp_path / 'o'), progress=False)
    ds = dataset(tmp_path / 'o')
    got = {ds.keys[i]: ds.read_image(i, 'gt') for i in range(len(ds))}
    assert np.array_equal(got['gray'], np.repeat(gray[:, :, None], 3, axis=2))
    assert np.array_equal(got['rgba'], rgba[:, :, :3])
    assert np.array_equal(got['deep'], np.round(deep / 257.0).astype(np.uint8))


# ----------------------------------------------------------------------------- bad input
def _assert_nothing_written(tmp_path, out, src_root, fingerprint):
    assert not os.path.exists(out)
    assert not [p for p in os.listdir(os.path.dirname(out)) if p.startswith('.' + os.path.basename(out))]
    assert tree_fingerprint(src_root) == fingerprint


@pytest.mark.parametrize('case', ['missing_lq', 'missing_gt', 'size', 'truncated'])
def test_bad_sources_give_clear_errors_and_write_nothing(tmp_path, case):
    root = str(tmp_path / 'src')
    gt_dir, lq_dir, _ = write_pairs(root, n=3, size=(40, 40), scale=2)
    if case == 'missing_lq':
        os.remove(os.path.join(lq_dir, '0001.png'))
        expect = "GT image '0001.png' has no LQ partner"
    elif case == 'missing_gt':
        os.remove(os.path.join(gt_dir, '0002.png'))
        expect = "LQ image '0002.png'.*has no GT partner"
    elif case == 'size':
        cv2.imwrite(os.path.join(lq_dir, '0001.png'), np.zeros((19, 20, 3), np.uint8))
        expect = r"Pair '0001'.*LQ is 20x19 but GT is 40x40.*scale 2"
    else:
        data = open(os.path.join(gt_dir, '0002.png'), 'rb').read()
        open(os.path.join(gt_dir, '0002.png'), 'wb').write(data[:len(data) // 3])
        expect = r'0002.png: could not decode'
    fp = tree_fingerprint(root)
    out = str(tmp_path / 'out')
    with pytest.raises(SourceError if case != 'truncated' else ValueError, match=expect):
        pack(gt_dir, lq_dir, out, scale=2, progress=False)
    _assert_nothing_written(tmp_path, out, root, fp)


def test_lmdb_with_dotted_keys_is_refused(tmp_path):
    for which in ('gt', 'lq'):
        p = tmp_path / f'{which}.lmdb'
        env = lmdb.open(str(p), map_size=1 << 24)
        with env.begin(write=True) as txn:
            txn.put(b'a.b', cv2.imencode('.png', np.zeros((8, 8, 3), np.uint8))[1].tobytes())
        env.close()
        (p / 'meta_info.txt').write_text('a.b.png (8,8,3) 1\n')
    with pytest.raises(SourceError, match=r"key 'a.b' contains a dot.*Rebuild it"):
        pack(str(tmp_path / 'gt.lmdb'), str(tmp_path / 'lq.lmdb'), str(tmp_path / 'o'), progress=False)
    assert not os.path.exists(tmp_path / 'o')


def test_existing_output_is_refused_unless_overwrite(tmp_path, pairs, capsys):
    gt_dir, lq_dir, _ = pairs
    out = tmp_path / 'o'
    pack(gt_dir, lq_dir, str(out), progress=False)
    before = tree_fingerprint(str(out))
    with pytest.raises(OutputExistsError, match='already exists.*--overwrite'):
        pack(gt_dir, lq_dir, str(out), tile_size=32, progress=False)
    assert tree_fingerprint(str(out)) == before
    assert pack_main(['--gt', gt_dir, '--lq', lq_dir, '--out', str(out), '--quiet']) == 2
    assert 'already exists' in capsys.readouterr().err
    assert pack_main(['--gt', gt_dir, '--lq', lq_dir, '--out', str(out), '--tile-size', '32', '--overwrite',
                      '--quiet']) == 0
    assert read_meta(str(out))['tile_size'] == 32


def test_interrupted_pack_leaves_no_output(tmp_path, pairs, monkeypatch):
    gt_dir, lq_dir, _ = pairs
    calls = {'n': 0}
    real = PairedSource.read_pair

    def flaky(self, i):
        calls['n'] += 1
        if calls['n'] == 3:
            raise KeyboardInterrupt
        return real(self, i)

    monkeypatch.setattr(PairedSource, 'read_pair', flaky)
    with pytest.raises(KeyboardInterrupt):
        pack(gt_dir, lq_dir, str(tmp_path / 'o'), progress=False)
    assert os.listdir(tmp_path) == ['src']


def test_dataset_bad_options_and_dirs(tmp_path, pairs):
    gt_dir, lq_dir, _ = pairs
    out = tmp_path / 'o'
    pack(gt_dir, lq_dir, str(out), progress=False)
    with pytest.raises(ValueError, match=r"smaller than gt_size 96 .*GT 60 px on its short side\); lower gt_size "
                                         r"to <= 60 or leave the small images out"):
        dataset(out, phase='train', gt_size=96)  # before any training step
    with pytest.raises(KeyError, match='gt_size'):
        dataset(out, phase='train')
    with pytest.raises(ValueError, match='written with scale 1 but the options say scale 4'):
        dataset(out, scale=4)
    with pytest.raises(KeyError, match='dataroot_gt/dataroot_lq are for PairedImageDataset'):
        TripleDDataset({'dataroot_gt': 'x', 'phase': 'val'})
    with pytest.raises(FormatError, match='has no tripled_meta.json.*tripled_basicsr.pack'):
        dataset(tmp_path / 'src')
    meta_path = out / 'tripled_meta.json'
    meta = json.loads(meta_path.read_text())
    meta['format_version'] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match='newer than this tripled_basicsr supports.*Upgrade'):
        dataset(out)


def test_unpaired_files_can_be_skipped_and_are_listed(tmp_path):
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs
    gt_dir, lq_dir, _ = write_pairs(str(tmp_path / 's'), n=4, size=(32, 32))
    os.remove(os.path.join(lq_dir, '0001.png'))
    os.remove(os.path.join(gt_dir, '0003.png'))
    src = PairedSource(gt_dir, lq_dir, on_missing='skip')
    assert src.keys == ['0000', '0002']
    assert sorted(e.get('gt_path', e.get('lq_path'))[-8:] for e in src.skipped) == ['0001.png', '0003.png']
    assert src.describe()['num_unpaired_skipped'] == 2
    for name, d in (('gt', gt_dir), ('lq', lq_dir)):
        files = sorted(os.listdir(d))
        make_lmdb_from_imgs(d, str(tmp_path / f'{name}.lmdb'), files, [f[:-4] for f in files])
    with pytest.raises(SourceError, match="GT key '0001'.*has no LQ"):
        PairedSource(str(tmp_path / 'gt.lmdb'), str(tmp_path / 'lq.lmdb'))
    src = PairedSource(str(tmp_path / 'gt.lmdb'), str(tmp_path / 'lq.lmdb'), on_missing='skip')
    assert src.keys == ['0000', '0002'] and len(src.skipped) == 2
    with pytest.raises(ValueError, match='on_missing'):
        PairedSource(gt_dir, lq_dir, on_missing='ignore')


def test_hidden_files_and_folders_in_a_source_are_ignored(tmp_path):
    gt_dir, lq_dir, _ = write_pairs(str(tmp_path / 'src'), n=2, size=(16, 16))
    for d in (gt_dir, lq_dir):
        with open(os.path.join(d, '.DS_Store'), 'wb') as f:  # BasicSR's scandir crashes on this
            f.write(b'\0')
        os.makedirs(os.path.join(d, '.thumbs'))
        cv2.imwrite(os.path.join(d, '.thumbs', '0000.png'), np.zeros((16, 16, 3), np.uint8))
    os.makedirs(os.path.join(gt_dir, 'sub'))
    os.makedirs(os.path.join(lq_dir, 'sub'))
    img = np.full((16, 16, 3), 7, np.uint8)
    cv2.imwrite(os.path.join(gt_dir, 'sub', 'x.png'), img)
    cv2.imwrite(os.path.join(lq_dir, 'sub', 'x.png'), img)
    src = PairedSource(gt_dir, lq_dir)
    assert src.keys == ['0000', '0001', 'sub__x']
