"""Generated all-in-one data: five restoration tasks of unequal size, each with a val split.

``python -m tripled_basicsr.demo_data.allinone --out datasets/allinone_cpu`` writes::

    OUT/rain/train/{gt,lq}   400 pairs      OUT/rain/val/{gt,lq}   8 pairs
    OUT/haze/train/{gt,lq}   200 pairs      OUT/haze/val/{gt,lq}   8 pairs
    OUT/noise/train/{gt,lq}  100 pairs      ...
    OUT/blur/train/{gt,lq}    50 pairs
    OUT/lowlight/train/{gt,lq} 25 pairs
    OUT/allinone.json        the arguments, per task and split: seed, pairs, parameters

(the sizes are ``--sizes``, in the order of ``TASKS``), 64 x 64 GT by default so that CPU
studies are quick. GT images and degradations are those of ``python -m
tripled_basicsr.demo_data`` (``generate_gt``, ``degrade``); PNG folders through the package's
one folder writer; the whole OUT is built in a hidden sibling and renamed into place when
complete (``utils/ownership.AtomicOutputDir``: an existing OUT is replaced only with ``--overwrite``
and only when this project wrote it).

Each task and split draws its GT images with its own seed (``split_seed``), so the tasks
show different scenes (as real all-in-one sets do) and no val image is a train image.
Noise uses the three levels of the usual all-in-one benchmark, sigma 15, 25 and 50, in
turn over the images (image i gets ``NOISE_LEVELS[i % 3]``): discrete levels, so the
distiller's strata can separate them. The other tasks use the generator's default
parameter ranges.

Python::

    from tripled_basicsr.demo_data.allinone import write_allinone
    summary = write_allinone('datasets/allinone_cpu', sizes=(400, 200, 100, 50, 25), val=8, size=64, seed=0)
    # or generate_allinone(out, sizes={'rain': 400, ...}, quiet=True)
"""
import argparse
import json
import os.path as osp
import sys
import time

from tripled_basicsr.demo_data._common import DemoDataError
from tripled_basicsr.demo_data.generate import degrade, name_width
from tripled_basicsr.demo_data.options import int_option, parse_size
from tripled_basicsr.demo_data.sources import generate_gt, require_photos
from tripled_basicsr.utils.ownership import AtomicOutputDir

TASKS = ('rain', 'haze', 'noise', 'blur', 'lowlight')
DEFAULT_SIZES = (400, 200, 100, 50, 25)
NOISE_LEVELS = (15.0, 25.0, 50.0)
GENERATOR = 'tripled_basicsr.demo_data.allinone'


def split_seed(seed, task_index, split):
    """The GT seed of one task and split: distinct for every (seed, task, split)."""
    return 1000 * int(seed) + 10 * int(task_index) + (0 if split == 'train' else 1)


def task_params(task, index):
    """Degradation parameters of image ``index`` of ``task`` ({} = the generator's defaults)."""
    if task == 'noise':
        return {'sigma': NOISE_LEVELS[index % len(NOISE_LEVELS)]}
    return {}


def parse_sizes(sizes):
    """'400,200,100,50,25' / a sequence of 5 ints / {task: n} naming the 5 tasks -> tuple of 5
    ints >= 1 (in the order of TASKS)."""
    if isinstance(sizes, dict):
        if sorted(sizes) != sorted(TASKS):
            raise DemoDataError(f'--sizes: name each task once ({", ".join(TASKS)}); got {", ".join(map(str, sizes))}')
        sizes = [sizes[t] for t in TASKS]
    if isinstance(sizes, str):
        parts = [p.strip() for p in sizes.split(',') if p.strip()]
    elif isinstance(sizes, (list, tuple)):
        parts = list(sizes)
    else:
        parts = []
    if len(parts) != len(TASKS):
        raise DemoDataError(f'--sizes: give {len(TASKS)} numbers of pairs, one per task ({", ".join(TASKS)}), '
                            f'e.g. 400,200,100,50,25; got {sizes!r}')
    return tuple(int_option(f'--sizes ({t})', v, 1) for t, v in zip(TASKS, parts))


def _pairs(task, task_index, split, num, size, seed, source):
    s = split_seed(seed, task_index, split)
    width = name_width(num)
    for i in range(num):
        gt, _ = generate_gt(i, size, seed=s, source=source)
        yield f'{i:0{width}d}', gt, degrade(gt, task, task_params(task, i), seed=s, index=i)


def write_allinone(out, sizes=DEFAULT_SIZES, val=8, size=64, seed=0, source='mixed', overwrite=False,
                   compress_level=1, progress=True):
    """Write the five tasks (train + val) to ``out`` atomically; returns a summary dict.

    Args:
        out (str): the folder to create (OUT/<task>/{train,val}/{gt,lq}).
        sizes: train pairs per task, in the order of ``TASKS`` (a sequence or 'a,b,c,d,e').
        val (int): val pairs per task (0: no val split).
        size: GT size (64, '64' or 'WxH').
        seed (int): >= 0; every task and split has its own GT seed derived from it.
        source (str): GT source, as ``python -m tripled_basicsr.demo_data --source``.
        overwrite (bool): replace an earlier output of this project (never another folder).
    """
    from tripled_basicsr.data.pair_folders import write_pair_folders
    sizes = parse_sizes(sizes)
    val = int_option('--val', val, 0)
    seed = int_option('--seed', seed, 0)
    compress_level = int_option('--compress-level', compress_level, 0, maximum=9)
    w, h = parse_size(size)
    require_photos(source)
    atomic = AtomicOutputDir(out, overwrite, '--overwrite (overwrite=True)', empty_ok=True, tool='demo_data')
    t0 = time.time()
    record = {'generator': GENERATOR, 'gt_size': [w, h], 'seed': seed, 'source': source, 'tasks': {}}
    total = sum(sizes) + val * len(TASKS)
    from tqdm import tqdm
    bar = tqdm(total=total, unit='pair', desc='all-in-one demo data', disable=not progress, dynamic_ncols=True)
    try:
        with atomic as tmp:
            for k, (task, num) in enumerate(zip(TASKS, sizes)):
                rec = record['tasks'][task] = {}
                for split, n in (('train', num), ('val', val)):
                    if not n:
                        continue
                    pairs = _pairs(task, k, split, n, (w, h), seed, source)
                    write_pair_folders(osp.join(tmp, task, split), _counted(pairs, bar), compress_level=compress_level)
                    rec[split] = {'num': n, 'seed': split_seed(seed, k, split),
                                  'params': 'sigma 15/25/50 in turn (image i: NOISE_LEVELS[i % 3])'
                                  if task == 'noise' else 'demo_data defaults'}
            with open(osp.join(tmp, 'allinone.json'), 'w', encoding='utf-8') as f:
                json.dump(record, f, indent=1, sort_keys=True)
                f.write('\n')
    finally:
        bar.close()
    return {'out': atomic.out, 'tasks': list(TASKS), 'sizes': dict(zip(TASKS, sizes)), 'val': val,
            'gt_size': (w, h), 'seed': seed, 'seconds': time.time() - t0}


def generate_allinone(out, sizes=DEFAULT_SIZES, val=8, size=64, seed=0, quiet=False, **kw):
    """``write_allinone`` with ``quiet`` (no progress bar) in place of ``progress``."""
    return write_allinone(out, sizes, val, size, seed, progress=not quiet, **kw)


def _counted(pairs, bar):
    for p in pairs:
        yield p
        bar.update(1)


def summary_line(s):
    sizes = ', '.join(f'{t} {n}' for t, n in s['sizes'].items())
    w, h = s['gt_size']
    return (f'all-in-one demo data: {sizes} train pairs + {s["val"]} val pairs per task (GT {w}x{h}, seed '
            f'{s["seed"]}) -> {s["out"]} in {s["seconds"]:.1f} s')


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m tripled_basicsr.demo_data.allinone',
                                description='Generate five restoration tasks (rain, haze, noise, blur, lowlight) of '
                                'unequal size with a val split each: OUT/<task>/{train,val}/{gt,lq} PNG folders.')
    p.add_argument('--out', required=True, help='output directory (created atomically)')
    p.add_argument('--sizes', default=','.join(map(str, DEFAULT_SIZES)),
                   help=f'train pairs per task, in the order {",".join(TASKS)} (default '
                   f'{",".join(map(str, DEFAULT_SIZES))})')
    p.add_argument('--val', default='8', help='val pairs per task (default 8; 0: no val split)')
    p.add_argument('--size', default='64', help='GT size: 64 (square) or WIDTHxHEIGHT (default 64)')
    p.add_argument('--seed', default='0', help='random seed (default 0)')
    p.add_argument('--source', default='mixed', choices=('photos', 'procedural', 'mixed'),
                   help='GT source (default mixed)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing OUT written by tripled_basicsr (never an unrelated folder)')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    args = p.parse_args(argv)
    from tripled_basicsr.utils.ownership import OutputConflictError
    try:
        s = write_allinone(args.out, args.sizes, args.val, args.size, args.seed, args.source, args.overwrite,
                           progress=not args.quiet)
    except (DemoDataError, FileExistsError, OutputConflictError) as e:
        p.error(str(e))
    print(summary_line(s))
    return 0


if __name__ == '__main__':
    sys.exit(main())
