"""Writing a demo dataset: PNG folders or BasicSR LMDBs, through the package's shared writers.

Images go through the same pieces as ``pack``/``distill`` (``data/distilled_format.py``:
PNG encoding and the LMDB + ``meta_info.txt`` writer; ``data/paired_source.py``: the
paired-folder layout) and the output through the shared output policy
(``utils/ownership.AtomicOutputDir``): built in a hidden sibling, renamed into place when
complete, and ``overwrite`` replaces only an earlier output of this project.
"""
import json
import os.path as osp
import time

from tripled_basicsr.data.distilled_format import _LmdbOut
from tripled_basicsr.data.pair_folders import write_pair_folders
from tripled_basicsr.demo_data.generate import iter_pairs
from tripled_basicsr.demo_data.options import int_option, resolve
from tripled_basicsr.demo_data.sources import require_photos
from tripled_basicsr.utils.ownership import AtomicOutputDir

GENERATOR = 'tripled_basicsr.demo_data'  # demo_data.json "generator": also how utils/ownership recognises old outputs


def write_demo_dataset(out,
                       task,
                       num,
                       size,
                       lmdb=False,
                       seed=0,
                       scale=None,
                       overwrite=False,
                       source='mixed',
                       compress_level=1,
                       progress=True,
                       **task_kwargs):
    """Generate ``num`` pairs and write them to ``out``; returns a summary dict.

    Layout: ``out/gt/0000.png`` + ``out/lq/0000.png`` ... or, with ``lmdb=True``,
    ``out/gt.lmdb`` + ``out/lq.lmdb`` (BasicSR LMDB convention: keys ``0000``..., PNG-encoded
    values, ``meta_info.txt`` lines ``0000.png (h,w,c) compress_level``). ``out/demo_data.json``
    records the arguments and the origin of every GT image. An existing ``out`` is refused
    unless it is empty, or ``overwrite=True`` and it is an earlier output of this project
    (never an unrelated folder or a file).
    """
    req = resolve(task, num, size, seed, scale, source, task_kwargs)
    require_photos(source)
    compress_level = int_option('--compress-level', compress_level, 0, maximum=9)
    atomic = AtomicOutputDir(out, overwrite, '--overwrite (overwrite=True)', empty_ok=True, tool='demo_data')
    (w, h), scale = req.size, req.scale
    t0 = time.time()
    kinds = {}
    with atomic as tmp:
        pairs = _progress(iter_pairs(req), req, progress)
        try:
            if lmdb:
                _write_lmdbs(tmp, _recording(pairs, kinds), compress_level)
            else:
                write_pair_folders(tmp, _recording(pairs, kinds), compress_level=compress_level)
        finally:
            if hasattr(pairs, 'close'):
                pairs.close()
        meta = {
            'generator': GENERATOR,
            'task': ','.join(req.tasks),
            'num': req.num,
            'gt_size': [w, h],
            'lq_size': [w // scale, h // scale],
            'scale': scale,
            'seed': req.seed,
            'source': source,
            'format': 'lmdb' if lmdb else 'png',
            'compress_level': compress_level,
            'params': {k: list(v) if isinstance(v, tuple) else v
                       for k, v in req.params.items()},
            'images': kinds,
        }
        with open(osp.join(tmp, 'demo_data.json'), 'w') as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.write('\n')
    n_photo = sum(1 for k in kinds.values() if k.startswith('photo:'))
    summary = {k: meta[k] for k in ('task', 'num', 'scale', 'seed', 'source', 'format')}
    summary.update(out=atomic.out, gt=osp.join(atomic.out, 'gt.lmdb' if lmdb else 'gt'),
                   lq=osp.join(atomic.out, 'lq.lmdb' if lmdb else 'lq'), gt_size=(w, h),
                   lq_size=(w // scale, h // scale), num_photo=n_photo, num_procedural=req.num - n_photo,
                   params=dict(req.params), seconds=time.time() - t0)
    return summary


def _recording(pairs, kinds):
    """``(name, gt, lq)`` of each pair, noting each GT's origin in ``kinds``."""
    for name, gt, lq, kind in pairs:
        kinds[name] = kind
        yield name, gt, lq


def _progress(pairs, req, enabled):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a basicsr dependency
        return pairs
    return tqdm(pairs, total=req.num, unit='pair', desc=f'demo-data {",".join(req.tasks)}', disable=not enabled,
                dynamic_ncols=True)


def _write_lmdbs(root, pairs, compress_level):
    outs = [_LmdbOut(osp.join(root, f'{which}.lmdb'), compress_level) for which in ('gt', 'lq')]
    try:
        for name, gt, lq in pairs:
            outs[0].put(name, gt)
            outs[1].put(name, lq)
    except BaseException:
        for o in outs:
            o.abort()
        raise
    for o in outs:
        o.close()


def summary_line(s):
    """One-line human-readable summary of a :func:`write_demo_dataset` result."""
    (w, h), (lw, lh) = s['gt_size'], s['lq_size']
    return (f"demo-data: wrote {s['num']} {s['task']} pairs (GT {w}x{h}, LQ {lw}x{lh}, {s['format']}, "
            f"{s['num_photo']} photo / {s['num_procedural']} procedural, seed {s['seed']}) to {s['out']} "
            f"in {s['seconds']:.2f}s")
