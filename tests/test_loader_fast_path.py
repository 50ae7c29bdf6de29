"""TripleDDataset's training read path: per-process LMDB handles, zero-copy crops (benchmarks/loader_throughput.py)."""
import copy
import os
import pickle
import random
import re

import cv2
import numpy as np
import pytest
import torch
from basicsr.data.transforms import augment, paired_random_crop
from basicsr.utils import img2tensor
from basicsr.utils.color_util import bgr2ycbcr

from conftest import make_image
from tripled_basicsr.data.distilled_format import DistilledWriter
from tripled_basicsr.data.tripled_dataset import TripleDDataset
from tripled_basicsr.utils import lmdb_io
from tripled_basicsr.utils.lmdb_io import DamagedLmdbError


def _write_set(out, scale, tile, codec, n=3, size=(96, 128), seed=0):
    """``n`` pairs written as a distilled dir; returns {key: (gt, lq)} of the arrays written."""
    rng = np.random.default_rng(seed)
    images = {}
    h, w = size
    with DistilledWriter(str(out), scale=scale, tile_size=tile, codec=codec) as wr:
        for i in range(n):
            gt = make_image(rng, h, w)
            lq = cv2.resize(gt, (w // scale, h // scale), interpolation=cv2.INTER_AREA) if scale > 1 else \
                np.clip(gt.astype(np.int16) + rng.integers(-10, 10, gt.shape), 0, 255).astype(np.uint8)
            wr.add(f'p{i}', gt, lq)
            images[f'p{i}'] = (gt, lq)
    return images


def _train(root, scale, gt_size, **kw):
    opt = {'name': 't', 'dataroot': str(root), 'phase': 'train', 'scale': scale, 'gt_size': gt_size,
           'use_hflip': True, 'use_rot': True, 'io_backend': {'type': 'lmdb'}}
    opt.update(kw)
    return TripleDDataset(opt)


def _reference(gt, lq, gt_size, scale, color=None):
    """What BasicSR's PairedImageDataset does with the same random numbers (crop, augment, convert)."""
    g, q = paired_random_crop(gt, lq, gt_size, scale)
    g, q = augment([g.copy(), q.copy()], True, True)
    g, q = g.astype(np.float32) / 255., q.astype(np.float32) / 255.
    if color == 'y':
        g, q = bgr2ycbcr(g, y_only=True)[..., None], bgr2ycbcr(q, y_only=True)[..., None]
    return img2tensor([g, q], bgr2rgb=True, float32=True)


@pytest.mark.parametrize('codec', ['raw', 'png'])
@pytest.mark.parametrize('tile', [0, 64], ids=['units', 'tiles'])
@pytest.mark.parametrize('scale', [1, 4])
def test_fast_reads_equal_the_stored_pixels(tmp_path, codec, tile, scale):
    """Crop units and tiles, raw and PNG, scale 1 and 4: train items equal BasicSR's crop of the
    written arrays for the same seed (same random numbers), regions and whole images equal them too."""
    images = _write_set(tmp_path / 'd', scale, tile, codec)
    ds = _train(tmp_path / 'd', scale, 32)
    assert ds.codec == codec and ds.tile_size == tile
    for seed in range(12):
        index = seed % len(ds)
        gt, lq = images[ds.keys[index]]
        random.seed(seed)
        want_gt, want_lq = _reference(gt, lq, 32, scale)
        random.seed(seed)
        item = ds[index]
        assert torch.equal(item['gt'], want_gt) and torch.equal(item['lq'], want_lq), (seed, index)
        assert item['gt'].stride() == want_gt.stride() and item['lq'].stride() == want_lq.stride()
    for index, key in enumerate(ds.keys):
        gt, lq = images[key]
        for top, left, hh, ww in [(0, 0, 96, 128), (60, 60, 8, 8), (63, 63, 2, 2), (10, 100, 80, 28)]:
            assert np.array_equal(ds.read_region(index, 'gt', top, left, hh, ww), gt[top:top + hh, left:left + ww])
        assert np.array_equal(ds.read_region(index, 'lq', 1, 2, 20 // scale, 24 // scale),
                              lq[1:1 + 20 // scale, 2:2 + 24 // scale])
        assert np.array_equal(ds.read_image(index, 'gt'), gt) and np.array_equal(ds.read_image(index, 'lq'), lq)
    val = TripleDDataset({'dataroot': str(tmp_path / 'd'), 'phase': 'val', 'scale': scale})
    item = val[1]
    gt, lq = images[val.keys[1]]
    assert torch.equal(item['gt'], img2tensor(gt.astype(np.float32) / 255., bgr2rgb=True))
    assert torch.equal(item['lq'], img2tensor(lq.astype(np.float32) / 255., bgr2rgb=True))
    ds.close()


def test_y_channel_items_equal_basicsr_too(tmp_path):
    images = _write_set(tmp_path / 'd', 2, 64, 'raw')
    ds = _train(tmp_path / 'd', 2, 32, color='y')
    for seed in range(8):
        random.seed(seed)
        want_gt, want_lq = _reference(*images[ds.keys[1]], 32, 2, color='y')
        random.seed(seed)
        item = ds[1]
        assert item['gt'].shape == (1, 32, 32)
        assert torch.equal(item['gt'], want_gt) and torch.equal(item['lq'], want_lq), seed
    ds.close()


@pytest.mark.parametrize('tile', [0, 64])
def test_raw_crops_are_copies_that_outlive_the_transaction_and_the_handle(tmp_path, tile):
    images = _write_set(tmp_path / 'd', 1, tile, 'raw')
    ds = _train(tmp_path / 'd', 1, 32)
    region = ds.read_region(0, 'gt', 5, 7, 40, 50)
    whole = ds.read_image(0, 'lq')
    ds.close()  # the map is gone: what was returned must not point into it
    for arr in (region, whole):
        assert arr.flags.writeable and arr.flags.c_contiguous and not isinstance(arr.base, memoryview)
    region[0, 0] = 0
    assert np.array_equal(region[1:], images['p0'][0][6:45, 7:57]) and np.array_equal(whole, images['p0'][1])


def test_each_lmdb_is_opened_and_checked_once_per_process(tmp_path, monkeypatch):
    """No realpath, stat or open per read: the handle is resolved once, then reused."""
    _write_set(tmp_path / 'd', 1, 64, 'raw')
    ds = _train(tmp_path / 'd', 1, 32)
    gt, lq = (os.path.join(str(tmp_path / 'd'), f'{w}.lmdb') for w in ('gt', 'lq'))
    assert lmdb_io.open_count(gt) == lmdb_io.open_count(lq) == 0  # the build-time check keeps no handle
    ds[0]
    assert lmdb_io.open_count(gt) == lmdb_io.open_count(lq) == 1
    calls = []
    import lmdb
    real_open, real_realpath, real_file_id = lmdb.open, os.path.realpath, lmdb_io._file_id
    monkeypatch.setattr(lmdb, 'open', lambda *a, **k: calls.append('open') or real_open(*a, **k))
    monkeypatch.setattr(lmdb_io.os.path, 'realpath', lambda p: calls.append('realpath') or real_realpath(p))
    monkeypatch.setattr(lmdb_io, '_file_id', lambda p: calls.append('stat') or real_file_id(p))
    for i in range(30):
        ds[i % len(ds)]
    ds.read_image(1, 'gt')
    assert calls == []
    assert lmdb_io.open_count(gt) == lmdb_io.open_count(lq) == 1
    monkeypatch.undo()
    # a second dataset on the same dir shares the handle; close() of one makes the other open again
    other = _train(tmp_path / 'd', 1, 32)
    other[0]
    assert other._env('gt') is ds._env('gt') and lmdb_io.open_count(gt) == 1
    ds.close()
    other[1]
    assert lmdb_io.open_count(gt) == 2
    other.close()


class _Probe(TripleDDataset):
    """Adds the worker's pid and its open counts to every item."""

    def __getitem__(self, index):
        item = super().__getitem__(index)
        item['pid'] = os.getpid()
        item['opens'] = [lmdb_io.open_count(os.path.join(self.root, f'{w}.lmdb')) for w in ('gt', 'lq')]
        return item


def test_a_forked_worker_opens_its_own_handle_once(tmp_path):
    _write_set(tmp_path / 'd', 2, 0, 'raw', n=4)
    ds = _Probe({'dataroot': str(tmp_path / 'd'), 'phase': 'train', 'scale': 2, 'gt_size': 32})
    first = ds[0]  # the parent reads first: its handle must not leak into the workers
    parent_env = ds._env('gt')
    assert first['opens'] == [1, 1]
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, multiprocessing_context='fork',
                                         sampler=torch.utils.data.RandomSampler(ds, replacement=True, num_samples=24))
    items = list(loader)
    pids = {it['pid'] for it in items}
    assert os.getpid() not in pids and len(pids) == 2
    assert all(it['opens'] == [1, 1] for it in items)  # each worker opened each LMDB once, for all its reads
    assert ds._env('gt') is parent_env and lmdb_io.open_count(os.path.join(ds.root, 'gt.lmdb')) == 1
    ds.close()


def test_copies_of_the_dataset_carry_no_handle(tmp_path):
    """spawn-started workers get a pickled dataset; it must pickle after reads and open its own handle."""
    _write_set(tmp_path / 'd', 1, 0, 'png')
    ds = _train(tmp_path / 'd', 1, 32)
    random.seed(3)
    want = ds[2]
    for clone in (pickle.loads(pickle.dumps(ds)), copy.deepcopy(ds)):
        random.seed(3)
        got = clone[2]
        assert torch.equal(got['gt'], want['gt']) and torch.equal(got['lq'], want['lq'])
        assert clone._env('gt') is ds._env('gt')  # in this process: the one shared handle
    ds.close()


def test_a_truncated_lmdb_is_still_refused_naming_the_file(tmp_path):
    _write_set(tmp_path / 'd', 1, 64, 'raw')
    root = str(tmp_path / 'd')
    ds = _train(root, 1, 32)
    ds[0]
    ds.close()
    data = os.path.join(root, 'gt.lmdb', 'data.mdb')
    size = os.path.getsize(data)
    os.truncate(data, size // 2)
    pattern = rf'{re.escape(data)} is truncated: it is {size // 2} bytes, but the LMDB needs at least'
    with pytest.raises(DamagedLmdbError, match=pattern):  # the first read after close opens and checks again
        ds[0]
    with pytest.raises(DamagedLmdbError, match=pattern):  # a new dataset: at build time
        _train(root, 1, 32)
    # a worker (forked from a process that never read) checks its own open and names the file too
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=1, multiprocessing_context='fork')
    with pytest.raises(DamagedLmdbError, match=pattern):
        next(iter(loader))
    assert os.path.realpath(os.path.join(root, 'gt.lmdb')) not in lmdb_io._ENVS
