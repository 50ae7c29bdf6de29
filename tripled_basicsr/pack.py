"""Pack a paired source into the distilled-LMDB format, with no selection.

    python -m tripled_basicsr.pack --gt DIR_OR_LMDB --lq DIR_OR_LMDB --out DIR \
        [--scale S] [--tile-size T] [--filename-tmpl '{}'] [--meta-info FILE] \
        [--compress-level 1] [--overwrite]

Useful on its own (tiled LMDB for fast UHD crops) and as the full-data baseline that
distilled subsets are compared with. The source is only read; ``--out`` may not be, contain
or lie inside ``--gt``/``--lq`` (put it next to them, e.g. ``DIR_packed``). The output is
written to a temporary directory and renamed into place; ``--overwrite`` replaces only an
earlier output of tripled_basicsr (see docs/safety.md).
"""
import argparse
import logging
import os
import sys
import time

from tqdm import tqdm

# test hook: after that many pairs, send this process a real signal ("N:INT" = Ctrl-C, "N:KILL" = kill -9)
_SIGNAL_ENV = 'TRIPLED_PACK_SIGNAL_AFTER'


def _signal_hook():
    spec = os.environ.get(_SIGNAL_ENV)
    if not spec:
        return None
    import signal
    count, name = spec.split(':')
    return int(count), getattr(signal, f'SIG{name}')


def pack(gt, lq, out, scale=1, tile_size=0, filename_tmpl='{}', meta_info=None, compress_level=1, overwrite=False,
         progress=True):
    """Pack all pairs of a source into ``out``. Returns the summary dict."""
    from tripled_basicsr.data.distilled_format import DistilledWriter
    from tripled_basicsr.data.paired_source import PairedSource
    t0 = time.time()
    sources = {'--gt': gt, '--lq': lq, '--meta-info': meta_info}
    # the output policy runs first: a bad --out fails before the source is even listed
    writer = DistilledWriter(out, scale=scale, tile_size=tile_size, compress_level=compress_level, overwrite=overwrite,
                             tool='pack', sources=sources)
    if os.path.realpath(gt) == os.path.realpath(lq):
        # legitimate (a clean->clean teacher, an identity check), but more often a typo
        logging.getLogger('tripled_basicsr.pack').warning(
            'pack: --gt and --lq are the same (%s): every pair will be an image and itself. Intended for a '
            'clean->clean teacher; otherwise pass the LQ folder as --lq.', os.path.abspath(gt))
    src = PairedSource(gt, lq, filename_tmpl=filename_tmpl, meta_info_file=meta_info, scale=scale)
    writer.provenance = {'source': src.describe()}
    hook = _signal_hook()
    nbytes = 0
    try:
        with writer as w:
            for i in tqdm(range(len(src)), desc='pack', unit='pair', disable=not progress):
                if hook and i == hook[0]:
                    os.kill(os.getpid(), hook[1])
                g, q = src.read_pair(i)
                nbytes += g.nbytes + q.nbytes
                w.add(src.keys[i], g, q, gt_path=src.source_path(i, 'gt'), lq_path=src.source_path(i, 'lq'))
            summary = {'num_pairs': len(src), 'source_kind': src.kind, 'tile_size': int(tile_size),
                       'scale': int(scale), 'seconds': round(time.time() - t0, 3),
                       'decoded_megabytes': round(nbytes / 2**20, 1)}
            w.set_summary(summary)
    except KeyboardInterrupt:
        if not writer.committed:
            raise
        # Ctrl-C during the final rename is held back until the output is complete: report it as done
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m tripled_basicsr.pack', description=__doc__.split('\n\n')[0])
    p.add_argument('--gt', required=True, help='GT folder or BasicSR .lmdb')
    p.add_argument('--lq', required=True, help='LQ folder or BasicSR .lmdb')
    p.add_argument('--out', required=True, help='output distilled dir, outside --gt/--lq (e.g. next to them)')
    p.add_argument('--scale', type=int, default=1, help='GT / LQ size ratio (default 1)')
    p.add_argument('--tile-size', type=int, default=0,
                   help='0: whole images, readable by stock PairedImageDataset; T: T-px GT tiles (e.g. 512, UHD)')
    p.add_argument('--filename-tmpl', default='{}', help="LQ name template, BasicSR's filename_tmpl (default '{}')")
    p.add_argument('--meta-info', default=None, help='optional list of GT names (BasicSR meta_info_file)')
    p.add_argument('--compress-level', type=int, default=1, help='PNG compression 0-9 (default 1)')
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing --out written by tripled_basicsr (never any other folder or file)')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    args = p.parse_args(argv)
    try:
        s = pack(args.gt, args.lq, args.out, args.scale, args.tile_size, args.filename_tmpl, args.meta_info,
                 args.compress_level, args.overwrite, progress=not args.quiet)
    except KeyboardInterrupt:
        print(f'pack: interrupted; {os.path.abspath(args.out)} is unchanged and no temporary files were left.',
              file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print(f'packed {s["num_pairs"]} pairs ({s["source_kind"]} source, scale {s["scale"]}, '
          f'tile_size {s["tile_size"]}) into {args.out} in {s["seconds"]:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
