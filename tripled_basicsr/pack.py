"""Pack a paired source into the distilled-LMDB format, with no selection.

    python -m tripled_basicsr.pack --gt DIR_OR_LMDB --lq DIR_OR_LMDB --out DIR \
        [--scale S] [--tile-size T] [--filename-tmpl '{}'] [--meta-info FILE] \
        [--compress-level 1] [--overwrite] [--on-error raise|skip] [--restart]

Useful on its own (tiled LMDB for fast UHD crops) and as the full-data baseline that
distilled subsets are compared with. The source is only read; ``--out`` may not be, contain
or lie inside ``--gt``/``--lq`` (put it next to them, e.g. ``DIR_packed``). The output is
written to a temporary directory and renamed into place; ``--overwrite`` replaces only an
earlier output of tripled_basicsr (see docs/safety.md).

A pair that cannot be read stops the run with an error naming it (``--on-error skip`` leaves
such pairs out and lists them in ``tripled_meta.json``). A failed, interrupted or killed run
keeps the pairs it committed (batches of 256 pairs or 64 MiB) in ``.OUT.partial``; running
the same command again continues from there (``--restart`` starts over).
"""
import argparse
import logging
import os
import re
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


def _logger():
    return logging.getLogger('tripled_basicsr.pack')


def _stamp_of(src):
    """key -> (size, mtime_ns) of the pair's GT and LQ files (of the LMDB data files for an LMDB
    source): what a resumed pack compares to tell a pair it may keep from one that changed."""
    def stat(path):
        try:
            st = os.stat(path)
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]

    if src.kind == 'lmdb':
        fixed = [stat(os.path.join(r, 'data.mdb')) for r in (src.dataroot_gt, src.dataroot_lq)]
        return lambda key: fixed
    index = {k: i for i, k in enumerate(src.keys)}
    return lambda key: [stat(src.source_path(index[key], w)) for w in ('gt', 'lq')] if key in index else None


def _identity(gt, lq, filename_tmpl, meta_info):
    """What identifies the run: a partial output of an earlier run is continued only when all of it is equal."""
    return {'gt': os.path.abspath(os.path.expanduser(gt)), 'lq': os.path.abspath(os.path.expanduser(lq)),
            'filename_tmpl': filename_tmpl or '{}',
            'meta_info': os.path.abspath(os.path.expanduser(meta_info)) if meta_info else None}


def _open_source(gt, lq, filename_tmpl, meta_info, scale, on_error):
    """The PairedSource to pack; an unpaired file's error names ``--on-error skip``."""
    from tripled_basicsr.data.paired_source import PairedSource, SourceError
    if os.path.realpath(gt) == os.path.realpath(lq):
        # legitimate (a clean->clean teacher, an identity check), but more often a typo
        _logger().warning(
            'pack: --gt and --lq are the same (%s): every pair will be an image and itself. Intended for a '
            'clean->clean teacher; otherwise pass the LQ folder as --lq.', os.path.abspath(gt))
    try:
        return PairedSource(gt, lq, filename_tmpl=filename_tmpl, meta_info_file=meta_info, scale=scale,
                            on_missing=on_error)
    except SourceError as exc:
        if on_error == 'raise' and re.search(r'has no (LQ|GT)\b', str(exc)):
            raise SourceError(f'{exc} (Or pass --on-error skip to leave unpaired files out.)') from exc
        raise


def _check_resumed(w, src):
    """An interrupted run being continued must list no pair the source lost; says what it keeps."""
    from tripled_basicsr.data.paired_source import SourceError
    done, n = w.resumed_keys, len(src)
    gone = sorted(done - set(src.keys))
    if gone:
        raise SourceError(f'{w.out}: the interrupted run being continued wrote pairs that the source no '
                          f'longer lists ({", ".join(map(repr, gone[:3]))}{" ..." if len(gone) > 3 else ""}); '
                          f'the source changed since. Pass --restart to start over.')
    if done:
        _logger().warning('pack: continuing an interrupted run: %d of %d pairs were written already (kept '
                          'in %s); reading the other %d.', len(done), n, w.resumed_from,
                          n - len(done))
    for e in src.skipped:
        _logger().warning('pack: skipped %s: %s', e.get('gt_path') or e.get('lq_path'), e['reason'])


def _read_pair(src, i, w, on_error):
    """Pair ``i`` of ``src`` as (GT, LQ); None when it cannot be read and ``on_error`` is skip
    (then recorded as skipped in ``w``)."""
    from tripled_basicsr.data.paired_source import SourceError
    from tripled_basicsr.utils.lmdb_io import DamagedLmdbError
    key, n = src.keys[i], len(src)
    gt_path, lq_path = src.source_path(i, 'gt'), src.source_path(i, 'lq')
    try:
        return src.read_pair(i)
    except DamagedLmdbError:
        raise  # the whole source is damaged, not this pair
    except Exception as exc:  # noqa: BLE001 - unreadable, truncated, corrupt, wrong size
        where = f'pair {i + 1} of {n} (key {key!r}; GT {gt_path}, LQ {lq_path})'
        if on_error == 'raise':
            raise SourceError(f'Cannot read {where}: {exc} Fix or replace that file (or remove the '
                              f'pair from the source), or pass --on-error skip to leave unreadable '
                              f'pairs out.') from exc
        _logger().warning('pack: skipped %s: %s', where, exc)
        w.skip(key, f'{type(exc).__name__}: {exc}', gt_path=gt_path, lq_path=lq_path)
        return None


def _copy_pairs(src, w, on_error, progress):
    """Every pair of ``src`` not written yet into the entered writer ``w``. -> bytes decoded."""
    hook = _signal_hook()
    nbytes, n, done = 0, len(src), w.resumed_keys
    with tqdm(total=n, initial=len(done), desc='pack', unit='pair', disable=not progress) as bar:
        for i in range(n):
            if hook and i == hook[0]:
                os.kill(os.getpid(), hook[1])
            key = src.keys[i]
            if key in done:
                continue
            pair = _read_pair(src, i, w, on_error)
            if pair is not None:
                g, q = pair
                nbytes += g.nbytes + q.nbytes
                w.add(key, g, q, gt_path=src.source_path(i, 'gt'), lq_path=src.source_path(i, 'lq'))
            bar.update()
    return nbytes


def pack(gt, lq, out, *, scale=1, tile_size=0, filename_tmpl='{}', meta_info=None, compress_level=1, overwrite=False,
         progress=True, on_error='raise', restart=False):
    """Pack all pairs of a source into ``out``. Returns the summary dict. The parameters are
    the command's flags (``main``), one to one; all but the three paths by keyword.

    ``on_error``: 'raise' (default) stops at the first pair that cannot be read (unreadable,
    truncated or corrupt file, LQ not GT / scale) with an error naming it; 'skip' leaves such
    pairs (and unpaired files) out with a warning each and lists them in
    ``tripled_meta.json`` (``summary.skipped``). A failed or interrupted run keeps the pairs it
    committed in ``.OUT.partial``; the next call with the same sources and options continues
    from there (other options are refused unless ``restart``, which starts over).
    """
    from tripled_basicsr.data.distilled_format import DistilledWriter
    from tripled_basicsr.data.paired_source import SourceError, check_filename_tmpl
    if on_error not in ('raise', 'skip'):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    t0 = time.time()
    check_filename_tmpl(filename_tmpl or '{}', '--filename-tmpl')  # named as the option, before any work
    sources = {'--gt': gt, '--lq': lq, '--meta-info': meta_info}
    # the output policy runs first: a bad --out fails before the source is even listed
    writer = DistilledWriter(out, scale=scale, tile_size=tile_size, compress_level=compress_level, overwrite=overwrite,
                             tool='pack', sources=sources, resume=_identity(gt, lq, filename_tmpl, meta_info),
                             restart=restart)
    src = _open_source(gt, lq, filename_tmpl, meta_info, scale, on_error)
    writer.provenance = {'source': src.describe(), 'on_error': on_error}
    writer.stamp_of = _stamp_of(src)  # a pair changed since an interrupted run wrote it is read again
    n = len(src)
    try:
        with writer as w:
            _check_resumed(w, src)
            nbytes = _copy_pairs(src, w, on_error, progress)
            if not w.samples:
                raise SourceError(f'Every one of the {n} pairs was skipped (unreadable); nothing to pack. See the '
                                  f'warnings above.')
            w.sort_samples(src.keys)
            skipped = src.skipped + w.skipped
            summary = {'num_pairs': len(w.samples), 'num_source_pairs': n, 'source_kind': src.kind,
                       'tile_size': int(tile_size), 'scale': int(scale), 'seconds': round(time.time() - t0, 3),
                       'decoded_megabytes': round(nbytes / 2**20, 1), 'resumed_pairs': w.resumed,
                       'on_error': on_error, 'skipped': skipped}
            w.set_summary(summary)
    except KeyboardInterrupt as exc:
        if not writer.committed:
            exc.tripled_partial = writer.partial_dir
            raise
        # Ctrl-C during the final rename is held back until the output is complete: report it as done
    except BaseException as exc:
        exc.tripled_partial = writer.partial_dir
        raise
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
    p.add_argument('--on-error', choices=('raise', 'skip'), default='raise',
                   help='a pair that cannot be read (unreadable, truncated or corrupt file, wrong LQ size) or an '
                        'unpaired file: raise (default) stops with an error naming it; skip leaves it out with a '
                        'warning and lists it in tripled_meta.json (summary.skipped)')
    p.add_argument('--restart', action='store_true',
                   help='delete the progress a failed or interrupted run kept in .OUT.partial and start over (by '
                        'default a run with the same arguments continues from it)')
    p.add_argument('--quiet', action='store_true', help='no progress bar')
    args = p.parse_args(argv)
    out = os.path.abspath(args.out)
    try:
        s = pack(args.gt, args.lq, args.out, scale=args.scale, tile_size=args.tile_size,
                 filename_tmpl=args.filename_tmpl, meta_info=args.meta_info, compress_level=args.compress_level,
                 overwrite=args.overwrite, progress=not args.quiet, on_error=args.on_error, restart=args.restart)
    except KeyboardInterrupt as exc:
        kept = getattr(exc, 'tripled_partial', None)
        if kept:
            print(f'pack: interrupted; {out} is unchanged. {_kept_line(kept)}', file=sys.stderr)
        else:
            print(f'pack: interrupted; {out} is unchanged and no temporary files were left.', file=sys.stderr)
        return 130
    except (ValueError, KeyError, OSError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        kept = getattr(exc, 'tripled_partial', None)
        if kept:
            print(f'pack: {out} was not written. {_kept_line(kept)}', file=sys.stderr)
        return 2
    skipped = len(s['skipped'])
    note = f'; {skipped} skipped, listed in tripled_meta.json summary.skipped' if skipped else ''
    resumed = f', {s["resumed_pairs"]} of them by an earlier run' if s['resumed_pairs'] else ''
    print(f'packed {s["num_pairs"]} pairs{resumed} ({s["source_kind"]} source, scale {s["scale"]}, '
          f'tile_size {s["tile_size"]}{note}) into {args.out} in {s["seconds"]:.1f} s')
    return 0


def _kept_line(kept):
    return (f'The pairs written so far are kept in {kept}: run the same command again to continue from them '
            f'(or add --restart to start over).')


if __name__ == '__main__':
    sys.exit(main())
