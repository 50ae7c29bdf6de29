"""``python -m tripled_basicsr.demo_data`` (console script ``tripled-demo-data``).

The task options (``--sigma``, ``--rain-angle``, ...) are generated from the degradation
registry, so a new degradation's parameters appear here without touching this file.
"""
import argparse
import sys

from tripled_basicsr.demo_data._common import DemoDataError, flag
from tripled_basicsr.demo_data.degradations import DEGRADATIONS
from tripled_basicsr.demo_data.options import SOURCES, tasks
from tripled_basicsr.demo_data.writer import summary_line, write_demo_dataset
from tripled_basicsr.utils.ownership import OutputConflictError


def _fmt_default(v):
    if v is None:
        return 'auto'
    if isinstance(v, tuple):
        return f'{v[0]:g},{v[1]:g}'
    return v if isinstance(v, str) else f'{v:g}'


def build_parser():
    p = argparse.ArgumentParser(
        prog='python -m tripled_basicsr.demo_data',
        description='Generate a deterministic paired (GT/LQ) demo dataset for BasicSR from bundled '
        'scikit-image photographs and procedural images. Writes OUT/gt + OUT/lq (PNG) or '
        'OUT/gt.lmdb + OUT/lq.lmdb (--lmdb).',
        epilog='Numeric task options accept a value or a range LO,HI drawn uniformly per image '
        '(write --rain-angle=-20,20 when LO is negative).')
    p.add_argument('--task', required=True, help=f'degradation: {", ".join(tasks())}, or a comma-separated chain '
                   'applied in order (e.g. blur,sr,noise)')
    p.add_argument('--num', required=True, help='number of pairs (>= 1)')
    p.add_argument('--size', default='256', help='GT size: 256 (square) or WIDTHxHEIGHT, e.g. 3840x2160 '
                   '(default 256)')
    p.add_argument('--out', required=True, help='output directory (created atomically)')
    p.add_argument('--lmdb', action='store_true', help='write OUT/gt.lmdb and OUT/lq.lmdb instead of PNG folders')
    p.add_argument('--scale', default=None, help='SR down-sampling factor (task sr only, default 4)')
    p.add_argument('--seed', default='0', help='random seed (default 0)')
    p.add_argument('--source', default='mixed', choices=SOURCES, help='GT source (default mixed)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing OUT written by tripled_basicsr (never an unrelated folder)')
    p.add_argument('--compress-level', default='1', help='PNG compression level 0..9 (default 1, as BasicSR)')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    g = p.add_argument_group('task options (defaults in brackets; LO,HI = uniform range per image)')
    for d in DEGRADATIONS.values():
        for q in d.params:
            g.add_argument(flag(q.name), dest=q.name, default=None, help=f'{q.help} [{_fmt_default(q.default)}]')
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    task_kwargs = {q.name: getattr(args, q.name) for d in DEGRADATIONS.values() for q in d.params}
    try:
        summary = write_demo_dataset(args.out, args.task, args.num, args.size, lmdb=args.lmdb, seed=args.seed,
                                     scale=args.scale, overwrite=args.overwrite, source=args.source,
                                     compress_level=args.compress_level, progress=not args.quiet, **task_kwargs)
    except (DemoDataError, FileExistsError, OutputConflictError) as e:
        parser.error(str(e))
    print(summary_line(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
