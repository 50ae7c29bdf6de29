"""UHD data loading: random GT crops per second from 4K pairs.

Compares, on the same generated 3840x2160 pairs and the same DataLoader settings:
  * stock BasicSR ``PairedImageDataset`` reading whole-image LMDB (what ``create_lmdb.py``
    produces; every sample decodes two whole 4K PNGs to cut one patch),
  * ``TripleDDataset`` on the same pairs packed with ``--tile-size 512`` (a crop decodes
    only the tiles it overlaps),
  * ``TripleDDataset`` on whole-image storage (``tile_size 0``), to separate the effect of
    tiling from everything else,
  * ``TripleDDataset`` on ``codec raw`` storage (uncompressed values, whole and tiled): a
    crop is an array slice, no PNG decode (``output.codec: raw`` of the distiller).

    python benchmarks/uhd_loading.py [--pairs 4] [--samples 24] [--workers 0] [--crops 256 512]

Prints a table and, last, one JSON line. Ratios are measured in the same run.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import torch

import tripled_basicsr
from basicsr.data.paired_image_dataset import PairedImageDataset
from tripled_basicsr.data.pair_folders import write_pair_folders
from tripled_basicsr.data.tripled_dataset import TripleDDataset
from tripled_basicsr.demo_data import generate_pairs
from tripled_basicsr.pack import pack

tripled_basicsr.register()  # compat fixes (BasicSR on current torchvision), our components


def make_source(root, pairs, size):
    return write_pair_folders(root, generate_pairs('noise', pairs, size, seed=0), compress_level=1)


def write_raw(src, out, tile):
    """The source's pairs as a distilled dir with uncompressed values (``codec='raw'``)."""
    from tripled_basicsr.data.distilled_format import DistilledWriter
    from tripled_basicsr.data.paired_source import PairedSource
    source = PairedSource(os.path.join(src, 'gt'), os.path.join(src, 'lq'))
    with DistilledWriter(out, tile_size=tile, tool='pack', codec='raw') as w:
        for i, key in enumerate(source.keys):
            gt, lq = source.read_pair(i)
            w.add(key, gt, lq)


def measure(dataset, samples, workers):
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=1,
        num_workers=workers,
        sampler=torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=samples + 2 * max(workers, 1)),
        persistent_workers=False)
    it = iter(loader)
    for _ in range(max(workers, 1) * 2):  # warm-up: worker start, LMDB open
        next(it)
    t0 = time.perf_counter()
    n = 0
    for batch in it:
        assert batch['gt'].shape[-1] == dataset.opt['gt_size']
        n += 1
    return n / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--pairs', type=int, default=4)
    p.add_argument('--size', default='3840x2160')
    p.add_argument('--samples', type=int, default=24, help='timed samples per configuration')
    p.add_argument('--workers', type=int, default=0, help='DataLoader workers (same for every reader)')
    p.add_argument('--crops', type=int, nargs='+', default=[256, 512])
    p.add_argument('--tile-sizes', type=int, nargs='+', default=[512, 256], help='tiled layouts to compare')
    p.add_argument('--raw-tile-sizes', type=int, nargs='*', default=[0, 512],
                   help='codec raw layouts to compare (0 = whole images)')
    p.add_argument('--workdir', default=None, help='keep generated data here (default: a temp dir, removed)')
    args = p.parse_args(argv)

    work = args.workdir or tempfile.mkdtemp(prefix='uhd_loading_')
    os.makedirs(work, exist_ok=True)
    try:
        src = os.path.join(work, 'src')
        if not os.path.isdir(src):
            t = time.time()
            make_source(src, args.pairs, args.size)
            print(f'generated {args.pairs} pairs of {args.size} in {time.time() - t:.1f} s', file=sys.stderr)
        whole = os.path.join(work, 'whole')
        tiled = {t: os.path.join(work, f'tiled{t}') for t in args.tile_sizes}
        for out, tile in [(whole, 0)] + [(d, t) for t, d in tiled.items()]:
            if not os.path.isdir(out):
                pack(os.path.join(src, 'gt'), os.path.join(src, 'lq'), out, tile_size=tile, progress=False)
        raw = {t: os.path.join(work, f'raw{t}') for t in args.raw_tile_sizes}
        for t, out in raw.items():
            if not os.path.isdir(out):
                write_raw(src, out, t)

        rows = []
        for crop in args.crops:
            def common(**kw):  # fresh dicts: stock PairedImageDataset mutates its io_backend options
                return dict(phase='train', gt_size=crop, use_hflip=True, use_rot=True, scale=1,
                            io_backend={'type': 'lmdb'}, **kw)

            readers = {
                'stock PairedImageDataset (whole LMDB)': PairedImageDataset(common(
                    name='stock', dataroot_gt=os.path.join(whole, 'gt.lmdb'),
                    dataroot_lq=os.path.join(whole, 'lq.lmdb'), filename_tmpl='{}')),
                'TripleDDataset (whole, tile_size 0)': TripleDDataset(common(name='w', dataroot=whole)),
            }
            for t, d in tiled.items():
                readers[f'TripleDDataset (tiled {t})'] = TripleDDataset(common(name=f't{t}', dataroot=d))
            for t, d in raw.items():
                readers[f'TripleDDataset (raw {"whole" if t == 0 else f"tiled {t}"})'] = TripleDDataset(
                    common(name=f'r{t}', dataroot=d))
            rates = {}
            for name, ds in readers.items():
                rates[name] = measure(ds, args.samples, args.workers)
                # py-lmdb allows one handle per LMDB per process: release it for the next reader
                if isinstance(ds, TripleDDataset):
                    ds.close()
                elif getattr(ds, 'file_client', None) is not None:
                    for env in ds.file_client.client._client.values():
                        env.close()
            base = rates['stock PairedImageDataset (whole LMDB)']
            for name, r in rates.items():
                rows.append({'crop': crop, 'reader': name, 'samples_per_s': r, 'vs_stock': r / base})

        print(f'\nUHD loading: {args.pairs} pairs {args.size}, {args.samples} timed samples, '
              f'{args.workers} workers, torch threads {torch.get_num_threads()}')
        print(f'{"crop":>5}  {"reader":<44} {"samples/s":>10} {"x stock":>8}')
        for r in rows:
            print(f'{r["crop"]:>5}  {r["reader"]:<44} {r["samples_per_s"]:>10.2f} {r["vs_stock"]:>8.1f}')
        result = {
            'benchmark': 'uhd_loading', 'pairs': args.pairs, 'size': args.size, 'workers': args.workers,
            'tile_sizes': args.tile_sizes, 'raw_tile_sizes': args.raw_tile_sizes,
            'speedup_tiled_vs_stock': {f'crop{r["crop"]}_{r["reader"].split("(")[1][:-1].replace(" ", "")}':
                                       round(r['vs_stock'], 2) for r in rows if '(tiled' in r['reader']},
            'rows': [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
        }
        print(json.dumps(result))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
