"""Training-loader throughput: samples/s of TripleDDataset printed beside its bounds.

On the same generated data (real-looking frames: smooth shading, edges, texture; LQ = GT
(scale 1: + noise; scale s: area-downscaled + noise)), for GT patch sizes 48, 128, 256 and 512
px, every reader doing the same augmentation (a random crop drawn as BasicSR's
``paired_random_crop`` draws it, ``augment`` with flips and rotations, ``img2tensor``):

  * ``memcpy bound``: the lower bound of the work. Reads the raw values from an LMDB
    environment opened once per process, ``np.frombuffer`` on the value (no decode), BasicSR's
    ``paired_random_crop`` on those views (tiles: only the tiles the patch overlaps), a copy of
    the crops, then the same ``augment`` and conversion (as TripleDDataset, a rotated patch is
    made contiguous before ``img2tensor``). Returns only lq/gt and paths.
  * ``TripleDDataset``: this version, raw (``output.codec: raw``) and PNG storage.
  * ``TripleDDataset, previous path``: the read path before the loader work (kept here only, to
    measure before/after in one run): ``open_lmdb_readonly`` (realpath + stat) on every read,
    a bytes copy of every whole value, one transaction per tile.
  * ``stock PairedImageDataset``: BasicSR's reader on a whole-image PNG LMDB of the same
    pairs (the units' PNG set itself; for UHD a whole-frame LMDB: it decodes two whole 4K
    PNGs per sample, so it is measured at batch 1).

Two layouts:

  * ``units``: crop units as the distiller stores them (``tile_size 0``), one set per patch
    size, unit side = 1.25 x the patch (the distiller's hint: gt_size + 25 %), cut from the frames;
  * ``tiles``: UHD frames (3840x2160) stored with ``tile_size 512``.

Each configuration runs a ``torch.utils.data.DataLoader`` (batch 16, random indices with
replacement) with 0, 2 and 4 workers; the main process and the workers use one thread each
(torch and OpenCV). More workers than cores oversubscribe the machine: the table says so.
Every reader is first checked to give the same tensors as the others for the same seed.

    python benchmarks/loader_throughput.py            # the whole table, a few minutes on 2 cores
    python benchmarks/loader_throughput.py --quick    # smoke run (seconds; numbers not meaningful)

Prints the tables, the "what a GPU step needs" table (its assumption stated) and, last, one
JSON line. Ratios are measured in the same run.
"""
import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # a clean checkout: the package of this tree, installed or not
    sys.path.insert(0, REPO)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import tripled_basicsr  # noqa: E402

tripled_basicsr.register()  # compat fixes (BasicSR on current torchvision), our components

from basicsr.data.paired_image_dataset import PairedImageDataset  # noqa: E402
from basicsr.data.transforms import augment, paired_random_crop  # noqa: E402
from basicsr.utils import img2tensor  # noqa: E402
from basicsr.utils.color_util import bgr2ycbcr  # noqa: E402

from tripled_basicsr.data.distilled_format import DistilledWriter, decode_raw, read_meta, tile_key  # noqa: E402
from tripled_basicsr.data.tripled_dataset import TripleDDataset  # noqa: E402
from tripled_basicsr.utils.lmdb_io import close_lmdb, open_lmdb_readonly  # noqa: E402

TILE = 512
UNIT_MARGIN = 1.25  # crop-unit side / patch side
# What a GPU step needs (an assumption, not measured here): EDSR-M x4 (BasicSR's train_EDSR_Mx4:
# 16 blocks, 64 channels, batch 16, GT 192 / LQ 48) is about 9 GFLOP forward per sample, ~27 GFLOP
# forward + backward; a step of batch 16 takes about 40 ms in FP32 on a V100-class GPU. Other
# patch sizes: step time in proportion to the patch area, never below 10 ms (launch-bound).
GPU_BATCH, GPU_ANCHOR_PATCH, GPU_ANCHOR_STEP, GPU_MIN_STEP = 16, 192, 0.040, 0.010


def gpu_need(patch):
    step = max(GPU_MIN_STEP, GPU_ANCHOR_STEP * (patch / GPU_ANCHOR_PATCH) ** 2)
    return GPU_BATCH / step, step


# ----------------------------------------------------------------------------- data
def make_frame(rng, h, w):
    """A real-looking HxWx3 uint8 BGR frame: smooth shading + mid-frequency structure + edges +
    texture whose strength varies over the frame (PNG compresses it about as much as a photo)."""
    f32 = np.float32
    small = rng.uniform(30, 225, (h // 96 + 2, w // 96 + 2, 3)).astype(f32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img += cv2.resize(rng.normal(0, 18, (h // 12 + 1, w // 12 + 1, 3)).astype(f32), (w, h),
                      interpolation=cv2.INTER_LINEAR)
    for _ in range(max(8, h * w // 150000)):  # edges: flat shapes with hard borders
        color = tuple(float(c) for c in rng.uniform(-60, 60, 3))
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        if rng.uniform() < 0.5:
            cv2.circle(img, (x, y), int(rng.integers(8, max(9, h // 8))), color, -1, cv2.LINE_AA)
        else:
            cv2.line(img, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), color,
                     int(rng.integers(1, 6)), cv2.LINE_AA)
    amp = cv2.resize(rng.uniform(0, 1, (h // 160 + 2, w // 160 + 2)).astype(f32), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    tex = cv2.GaussianBlur(rng.standard_normal((h, w, 3), dtype=f32), (0, 0), 0.7)
    img += tex * (24 * np.clip(amp, 0, 1))[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def degrade(rng, gt, scale):
    lq = gt if scale == 1 else cv2.resize(gt, (gt.shape[1] // scale, gt.shape[0] // scale),
                                          interpolation=cv2.INTER_AREA)
    noisy = lq.astype(np.float32) + rng.standard_normal(lq.shape, dtype=np.float32) * 10
    return np.clip(noisy, 0, 255).astype(np.uint8)


def unit_side(crop, scale):
    step = 2 * scale
    return int(math.ceil(crop * UNIT_MARGIN / step) * step)


def build_data(work, frames, size, crops, scale, unit_bytes):
    """All sets of the run under ``work`` (kept and reused with ``--workdir``)."""
    w, h = size
    work = os.path.join(work, f'data_{frames}x{w}x{h}_x{scale}_{unit_bytes >> 10}k')
    sets = {'units': {}, 'tiles': {}}
    rng = np.random.default_rng(0)
    pairs = []
    t0 = time.time()
    for i in range(frames):
        gt = make_frame(rng, h, w)
        pairs.append((f'frame{i:02d}', gt, degrade(rng, gt, scale)))
    print(f'generated {frames} frames of {w}x{h} in {time.time() - t0:.1f} s', file=sys.stderr)

    def write(out, items, tile, codec):
        if not os.path.isdir(out):
            with DistilledWriter(out, scale=scale, tile_size=tile, codec=codec, compress_level=1,
                                 tool='pack') as wr:
                for key, g, q, fields in items:
                    wr.add(key, g, q, **fields)
        return out

    os.makedirs(work, exist_ok=True)
    frame_items = [(k, g, q, {}) for k, g, q in pairs]
    for codec in ('raw', 'png'):
        sets['tiles'][codec] = write(os.path.join(work, f'tiles_{codec}'), frame_items, TILE, codec)
    sets['tiles']['stock'] = write(os.path.join(work, 'frames_png_whole'), frame_items, 0, 'png')
    for crop in crops:
        u = unit_side(crop, scale)
        n = int(min(512, max(32, unit_bytes // (u * u * 3))))
        crng = np.random.default_rng(crop)
        units = []
        for j in range(n):
            key, g, q = pairs[j % len(pairs)]
            top = int(crng.integers(0, (h - u) // scale + 1)) * scale
            left = int(crng.integers(0, (w - u) // scale + 1)) * scale
            units.append((f'u{j:04d}_{key}',  # sorted = written order: stock sorts the keys
                          np.ascontiguousarray(g[top:top + u, left:left + u]),
                          np.ascontiguousarray(q[top // scale:(top + u) // scale, left // scale:(left + u) // scale]),
                          {'box': [top, left, u, u]}))
        for codec in ('raw', 'png'):
            sets['units'][crop, codec] = write(os.path.join(work, f'units{crop}_{codec}'), units, 0, codec)
        # stock reads a copy of the PNG set (whole-image PNG LMDBs: stock-readable): py-lmdb opens a file once
        # per process, and the 0-workers measurement holds every reader open at once
        stock = os.path.join(work, f'units{crop}_png_stock')
        if not os.path.isdir(stock):
            shutil.copytree(sets['units'][crop, 'png'], stock)
        sets['units'][crop, 'stock'] = stock
    print(f'data ready in {time.time() - t0:.1f} s ({work})', file=sys.stderr)
    return sets


# ----------------------------------------------------------------------------- readers
class MemcpyReader(torch.utils.data.Dataset):
    """The lower bound of the work: raw values read from an environment opened once per process
    (``np.frombuffer`` on the map, no decode, no metadata), BasicSR's crop on the views, a copy of
    the crops, BasicSR's ``augment`` and ``img2tensor``."""

    def __init__(self, root, gt_size, scale, use_hflip=True, use_rot=True):
        meta = read_meta(root)
        if meta.get('codec') != 'raw':
            raise ValueError(f'{root}: the memcpy bound reads raw values')
        self.root, self.tile = root, int(meta['tile_size'])
        self.keys = [s['key'] for s in meta['samples']]
        self.lq_shapes = [tuple(s['lq_shape'][:2]) for s in meta['samples']]
        self.gt_size, self.scale, self.hflip, self.rot = gt_size, scale, use_hflip, use_rot
        self.opt = {'gt_size': gt_size}
        self.paths = [os.path.join(root, 'gt.lmdb'), os.path.join(root, 'lq.lmdb')]
        self._envs, self._pid = None, None

    def __len__(self):
        return len(self.keys)

    def _open(self):
        if self._pid != os.getpid():
            self._envs = [open_lmdb_readonly(p) for p in self.paths]
            self._pid = os.getpid()
        return self._envs

    def _region(self, txn, key, top, left, size, t):
        out = np.empty((size, size, 3), np.uint8)
        for r in range(top // t, (top + size - 1) // t + 1):
            for c in range(left // t, (left + size - 1) // t + 1):
                tile = decode_raw(txn.get(tile_key(key, r, c).encode('ascii')))
                y0, x0 = max(top, r * t), max(left, c * t)
                y1, x1 = min(top + size, r * t + tile.shape[0]), min(left + size, c * t + tile.shape[1])
                out[y0 - top:y1 - top, x0 - left:x1 - left] = tile[y0 - r * t:y1 - r * t, x0 - c * t:x1 - c * t]
        return out

    def __getitem__(self, index):
        env_gt, env_lq = self._open()
        key = self.keys[index]
        s, gs = self.scale, self.gt_size
        with env_gt.begin(buffers=True) as tg, env_lq.begin(buffers=True) as tl:
            if not self.tile:
                gt, lq = paired_random_crop(decode_raw(tg.get(key.encode('ascii'))),
                                            decode_raw(tl.get(key.encode('ascii'))), gs, s, key)
                gt, lq = gt.copy(), lq.copy()
            else:  # the same draws as paired_random_crop, on the frame's LQ size
                h_lq, w_lq = self.lq_shapes[index]
                top, left = random.randint(0, h_lq - gs // s), random.randint(0, w_lq - gs // s)
                lq = self._region(tl, key, top, left, gs // s, TILE // s)
                gt = self._region(tg, key, top * s, left * s, gs, TILE)
        (gt, lq), (_, _, rot90) = augment([gt, lq], self.hflip, self.rot, return_status=True)
        if rot90:  # as TripleDDataset: the rotated uint8 patch made contiguous before the float conversion
            gt, lq = cv2.transpose(gt.transpose(1, 0, 2)), cv2.transpose(lq.transpose(1, 0, 2))
        gt, lq = img2tensor([gt.astype(np.float32) / 255., lq.astype(np.float32) / 255.], bgr2rgb=True,
                            float32=True)
        return {'lq': lq, 'gt': gt, 'lq_path': key, 'gt_path': key}

    def close(self):
        for p in self.paths:
            close_lmdb(p)


class PreviousTripleDDataset(TripleDDataset):
    """TripleDDataset's read path before the loader work (for before/after in one run only):
    ``open_lmdb_readonly`` (realpath + stat of data.mdb) on every value read, ``txn.get`` copying
    each whole value to bytes, one read transaction per tile, ``torch.tensor`` for the metadata."""

    def _env(self, which):
        return open_lmdb_readonly(os.path.join(self.root, f'{which}.lmdb'), **self.lmdb_kwargs)

    def _decode(self, which, key):
        with self._env(which).begin(write=False) as txn:
            buf = txn.get(key.encode('ascii'))
        if buf is None:
            raise KeyError(f'{self.root}/{which}.lmdb: entry {key!r} is missing')
        if self.codec == 'raw':
            self.tiles_decoded += 1
            return decode_raw(buf)
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        self.tiles_decoded += 1
        return img

    def read_region(self, index, which, top, left, height, width):
        h, w = self.image_shape(index, which)[:2]
        if top < 0 or left < 0 or top + height > h or left + width > w:
            raise ValueError('outside')
        key = self.keys[index]
        if not self.tile_size:
            region = self._decode(which, key)[top:top + height, left:left + width]
            return region.copy() if self.codec == 'raw' else region
        t = self.tile_size if which == 'gt' else self.tile_size // self.scale
        out = np.empty((height, width, 3), np.uint8)
        for r in range(top // t, (top + height - 1) // t + 1):
            for c in range(left // t, (left + width - 1) // t + 1):
                tile = self._decode(which, tile_key(key, r, c))
                y0, x0 = max(top, r * t), max(left, c * t)
                y1, x1 = min(top + height, r * t + tile.shape[0]), min(left + width, c * t + tile.shape[1])
                out[y0 - top:y1 - top, x0 - left:x1 - left] = tile[y0 - r * t:y1 - r * t, x0 - c * t:x1 - c * t]
        return out

    def __getitem__(self, index):
        index = int(index)
        key, scale = self.keys[index], self.scale
        gt_size = int(self.gt_size)
        lq_size = gt_size // scale
        h_lq, w_lq = self.image_shape(index, 'lq')[:2]
        top, left = random.randint(0, h_lq - lq_size), random.randint(0, w_lq - lq_size)
        img_lq = self.read_region(index, 'lq', top, left, lq_size, lq_size)
        img_gt = self.read_region(index, 'gt', top * scale, left * scale, gt_size, gt_size)
        img_gt, img_lq = augment([img_gt, img_lq], self.opt.get('use_hflip', False), self.opt.get('use_rot', False))
        img_gt = img_gt.astype(np.float32) / 255.
        img_lq = img_lq.astype(np.float32) / 255.
        if self.opt.get('color') == 'y':
            img_gt = bgr2ycbcr(img_gt, y_only=True)[..., None]
            img_lq = bgr2ycbcr(img_lq, y_only=True)[..., None]
        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        return {
            'lq': img_lq, 'gt': img_gt, 'lq_path': key, 'gt_path': key, 'key': key, 'index': index,
            'complexity': torch.tensor(self.complexity[index], dtype=torch.float32),
            'uncertainty': torch.tensor(self.uncertainty[index], dtype=torch.float32),
            'stage': int(self.stage[index]), 'cluster': int(self.cluster[index]), 'task': self.task[index]
        }


def make_reader(kind, root, crop, scale):
    common = dict(phase='train', gt_size=crop, use_hflip=True, use_rot=True, scale=scale, io_backend={'type': 'lmdb'})
    if kind == 'memcpy':
        return MemcpyReader(root, crop, scale)
    if kind == 'new':
        return TripleDDataset(dict(common, name='new', dataroot=root))
    if kind == 'previous':
        return PreviousTripleDDataset(dict(common, name='previous', dataroot=root))
    return PairedImageDataset(dict(common, name='stock', dataroot_gt=os.path.join(root, 'gt.lmdb'),
                                   dataroot_lq=os.path.join(root, 'lq.lmdb'), filename_tmpl='{}'))


def release(ds):
    """py-lmdb allows one handle per LMDB per process: free this reader's for the next one."""
    if isinstance(ds, (TripleDDataset, MemcpyReader)):
        ds.close()
    elif getattr(ds, 'file_client', None) is not None:
        for env in ds.file_client.client._client.values():
            env.close()
        ds.file_client = None


def _init_worker(_):
    cv2.setNumThreads(1)  # torch already runs one thread per worker


def measure(ds, batch, workers, seconds, min_batches, windows=2):
    """samples/s of a DataLoader over ``ds``: the best of ``windows`` consecutive windows of
    ``seconds / windows`` (and at least ``min_batches`` batches) each, after a warm-up (a batch
    from every worker: workers started, LMDBs opened). The best window discounts a stall caused
    by other jobs on the shared machine."""
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, num_workers=workers, drop_last=True, worker_init_fn=_init_worker if workers else None,
        sampler=torch.utils.data.RandomSampler(ds, replacement=True, num_samples=10 ** 8))
    it = iter(loader)
    for _ in range(max(1, workers)):
        next(it)
    best = 0.0
    for _ in range(windows):
        n, t0 = 0, time.perf_counter()
        while True:
            b = next(it)
            n += b['gt'].shape[0]
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds / windows and n >= min_batches * batch:
                break
        best = max(best, n / elapsed)
    assert b['gt'].shape[-1] == ds.opt['gt_size']
    del it, loader
    return best


def measure_interleaved(readers, seconds, slice_s=0.1):
    """samples/s of each ``(dataset, batch)`` through a DataLoader without workers, the readers
    taking turns of ``slice_s`` (at least one batch) until each ran ``seconds``: a change of load on
    the shared machine hits all of them alike, so their ratios hold."""
    its = []
    for ds, batch in readers:
        it = iter(torch.utils.data.DataLoader(
            ds, batch_size=batch, num_workers=0, drop_last=True,
            sampler=torch.utils.data.RandomSampler(ds, replacement=True, num_samples=10 ** 8)))
        next(it)  # warm-up: LMDBs open
        its.append(it)
    spent, done = [0.0] * len(its), [0] * len(its)
    while min(spent) < seconds:
        for i, it in enumerate(its):
            n, t0 = 0, time.perf_counter()
            while True:
                b = next(it)
                n += b['gt'].shape[0]
                elapsed = time.perf_counter() - t0
                if elapsed >= slice_s:
                    break
            assert b['gt'].shape[-1] == readers[i][0].opt['gt_size']
            spent[i] += elapsed
            done[i] += n
    return [n / t for n, t in zip(done, spent)]


def same_samples(readers, seed=7):
    """Every reader gives the same tensors for the same seed (the comparison is of equal work)."""
    ref = None
    for name, ds in readers:
        random.seed(seed)
        item = ds[len(ds) // 2]
        got = (item['gt'], item['lq'])
        release(ds)
        if ref is None:
            ref = (name, got)
        elif not (torch.equal(ref[1][0], got[0]) and torch.equal(ref[1][1], got[1])):
            raise AssertionError(f'{name} and {ref[0]} give different samples for the same seed')


# ----------------------------------------------------------------------------- main
READERS = (('memcpy', 'raw', 'memcpy bound (raw)'), ('new', 'raw', 'TripleDDataset raw'),
           ('previous', 'raw', 'TripleDDataset raw, previous path'), ('new', 'png', 'TripleDDataset PNG'),
           ('previous', 'png', 'TripleDDataset PNG, previous path'), ('stock', 'stock', 'stock PairedImageDataset'))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--quick', action='store_true', help='smoke run: small data, 2 sizes, 0/2 workers, short timings')
    p.add_argument('--crops', type=int, nargs='+', default=None, help='GT patch sizes (default 48 128 256 512)')
    p.add_argument('--workers', type=int, nargs='+', default=None, help='DataLoader workers (default 0 2 4)')
    p.add_argument('--layouts', nargs='+', choices=('units', 'tiles'), default=['units', 'tiles'])
    p.add_argument('--scale', type=int, default=1)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--seconds', type=float, default=None, help='timed seconds per configuration (default 1.0)')
    p.add_argument('--frames', type=int, default=None, help='generated frames (default 2)')
    p.add_argument('--size', default=None, help='frame size WxH (default 3840x2160)')
    p.add_argument('--unit-mb', type=float, default=24, help='about this many MB of GT per crop-unit set')
    p.add_argument('--workdir', default=None, help='keep generated data here (default: a temp dir, removed)')
    args = p.parse_args(argv)
    quick = args.quick
    crops = args.crops or ([48, 256] if quick else [48, 128, 256, 512])
    workers = args.workers if args.workers is not None else ([0, 2] if quick else [0, 2, 4])
    seconds = args.seconds if args.seconds is not None else (0.1 if quick else 1.0)
    frames = args.frames or (1 if quick else 2)
    size = tuple(int(v) for v in (args.size or ('1536x1024' if quick else '3840x2160')).lower().split('x'))
    unit_bytes = int(args.unit_mb * (0.1 if quick else 1) * 2 ** 20)
    scale = args.scale
    if min(size) < unit_side(max(crops), scale) or any(c % scale for c in crops):
        p.error('every patch (and its unit) must fit the frames and be a multiple of --scale')
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()

    if args.workdir:  # a folder of ours (created, or reused when an earlier run made it), never a user's
        from tripled_basicsr.utils.ownership import prepare_output_dir
        try:
            work = prepare_output_dir(args.workdir, tool='loader_throughput', reuse=True, layout=('data_*',))
        except (OSError, ValueError) as exc:
            raise SystemExit(f'loader_throughput: error: --workdir: {exc}') from None
    else:
        work = tempfile.mkdtemp(prefix='loader_throughput_')
    rows = []
    t_start = time.time()
    try:
        sets = build_data(work, frames, size, crops, scale, unit_bytes)
        for layout in args.layouts:
            for crop in crops:
                roots = {c: (sets['units'][crop, c] if layout == 'units' else sets['tiles'][c])
                         for c in ('raw', 'png', 'stock')}
                same_samples([(label, make_reader(kind, roots[codec], crop, scale)) for kind, codec, label in READERS])
                # stock on UHD frames decodes two whole 4K PNGs per sample: batch 1
                batches = [1 if kind == 'stock' and layout == 'tiles' else args.batch for kind, _, _ in READERS]
                for w in workers:
                    if w == 0:  # all readers in turns (ratios robust to the load of other jobs)
                        readers = [make_reader(kind, roots[codec], crop, scale) for kind, codec, _ in READERS]
                        rates = measure_interleaved(list(zip(readers, batches)), seconds)
                        for ds in readers:
                            release(ds)
                    else:  # one after the other (their workers would compete): best of 2 windows each
                        rates = []
                        for (kind, codec, _), batch in zip(READERS, batches):
                            ds = make_reader(kind, roots[codec], crop, scale)
                            rates.append(measure(ds, batch, w, seconds, 2))
                            release(ds)
                    for (_, _, label), batch, rate in zip(READERS, batches, rates):
                        rows.append({'layout': layout, 'crop': crop, 'reader': label, 'workers': w, 'batch': batch,
                                     'samples_per_s': rate})
                        print(f'  {layout:<5} {crop:>4} {w} workers  {label:<36} {rate:10.1f} samples/s',
                              file=sys.stderr)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    rate = {(r['layout'], r['crop'], r['reader'], r['workers']): r['samples_per_s'] for r in rows}
    for r in rows:
        bound = rate[r['layout'], r['crop'], 'memcpy bound (raw)', r['workers']]
        r['vs_memcpy'] = r['samples_per_s'] / bound
    over = [w for w in workers if w > cores]
    print(f'\nLoader throughput: samples/s, batch {args.batch}, scale {scale}, one thread per process, '
          f'{cores} cores; {frames} frames {size[0]}x{size[1]}, tiles {TILE} px; crop units = '
          f'{UNIT_MARGIN} x patch. "x bound" = / memcpy bound at the same workers.')
    if over:
        print(f'{", ".join(map(str, over))} workers oversubscribe the {cores} cores of this machine '
              f'(reported anyway).')
    for layout in args.layouts:
        title = {'units': 'crop units (tile_size 0)', 'tiles': f'{size[0]}x{size[1]} frames, tile_size {TILE}'}
        print(f'\n{layout}: {title[layout]}')
        head = f'{"crop":>5}  {"reader":<36}' + ''.join(f' {f"{w} workers":>10} {"x bound":>7}' for w in workers)
        print(head)
        for crop in crops:
            for _, _, label in READERS:
                cells = ''
                for w in workers:
                    r = next(x for x in rows if x['layout'] == layout and x['crop'] == crop and x['reader'] == label
                             and x['workers'] == w)
                    cells += f' {r["samples_per_s"]:>10.1f} {r["vs_memcpy"]:>7.2f}'
                note = ' (batch 1)' if layout == 'tiles' and label.startswith('stock') else ''
                print(f'{crop:>5}  {label + note:<36}{cells}')

    variants = [(lay, codec) for lay in args.layouts for codec in ('raw', 'PNG')]
    print(f'\nWhat a GPU step needs, assumed: EDSR-M x4 (batch {GPU_BATCH}) at {GPU_ANCHOR_STEP * 1000:.0f} ms/step '
          f'for GT {GPU_ANCHOR_PATCH} px (FP32, V100-class GPU), in proportion to the patch area, >= '
          f'{GPU_MIN_STEP * 1000:.0f} ms; against TripleDDataset samples/s per worker (one process, one thread = '
          f'the 0-workers column) and the workers that rate needs (ignores the IPC cost of workers, see the tables)')
    need_rows = []
    print(f'{"crop":>5}  {"step ms":>7} {"needs/s":>8}  ' + '  '.join(f'{f"{lay} {codec}":>14} {"workers":>7}'
                                                                       for lay, codec in variants))
    for crop in crops:
        need, step = gpu_need(crop)
        line = f'{crop:>5}  {step * 1000:>7.1f} {need:>8.0f}  '
        rec = {'crop': crop, 'step_ms': round(step * 1000, 1), 'needs_per_s': round(need, 1)}
        for lay, codec in variants:
            per = rate.get((lay, crop, f'TripleDDataset {codec}', 0))  # None: 0 workers not measured
            k = math.ceil(need / per) if per else None
            line += f'{per or float("nan"):>14.0f} {k or "-":>7}  '
            rec[f'{lay}_{codec.lower()}_per_worker'] = round(per, 1) if per else None
            rec[f'{lay}_{codec.lower()}_workers_needed'] = k
        need_rows.append(rec)
        print(line.rstrip())

    ratio = {f'{r["layout"]}{r["crop"]}_w{r["workers"]}': round(r['vs_memcpy'], 3) for r in rows
             if r['reader'] == 'TripleDDataset raw'}
    speedup = {f'{r["layout"]}{r["crop"]}_{"raw" if "raw" in r["reader"] else "png"}_w{r["workers"]}':
               round(r['samples_per_s'] / rate[r['layout'], r['crop'], f'{r["reader"]}, previous path', r['workers']],
                     2)
               for r in rows if r['reader'] in ('TripleDDataset raw', 'TripleDDataset PNG')}
    result = {
        'benchmark': 'loader_throughput', 'quick': quick, 'scale': scale, 'batch': args.batch, 'cores': cores,
        'frames': frames, 'size': f'{size[0]}x{size[1]}', 'tile_size': TILE, 'crops': crops, 'workers': workers,
        'seconds_per_config': seconds, 'wall_s': round(time.time() - t_start, 1),
        'raw_vs_memcpy': ratio, 'speedup_vs_previous': speedup, 'gpu_needs': need_rows,
        'rows': [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    }
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
