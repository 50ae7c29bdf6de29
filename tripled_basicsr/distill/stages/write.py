"""Write the subset (calibrated when applied), the summary and the report files, atomically."""
import math
import os
import sys
import time

import numpy as np
import torch

from tripled_basicsr.distill.options import is_multi, scale_of


def _versions():
    from importlib import metadata
    out = {'python': sys.version.split()[0]}
    for dist in ('torch', 'timm', 'numpy', 'basicsr', 'tripled_basicsr'):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = 'unknown'
    return out


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 100.0 if mse == 0 else min(100.0, 10 * math.log10(255.0 ** 2 / mse))


RAW_AUTO_MAX = 4 << 30  # output.codec auto: raw up to 4 GiB of GT + LQ arrays


def auto_codec(crop, scale, n, limit=RAW_AUTO_MAX):
    """``output.codec: auto`` -> 'raw' for n crop units of ``crop`` px whose GT + LQ arrays fit in
    ``limit`` bytes (a small distilled set can afford no compression: a random patch is a slice,
    not a decode); 'png' for whole images (their sizes vary, and PNG values stay readable by
    stock BasicSR datasets) and for larger sets."""
    if not crop:
        return 'png'
    return 'raw' if n * 3 * crop * crop * (1 + 1 / scale ** 2) <= limit else 'png'


class _PickedPairs:
    """Item j -> [(gi, (gt, lq) or None)] for the j-th run of ``chunk`` consecutive picks; None:
    the read failed, the caller reads it again in its own process, where the error is raised or
    skipped exactly as without workers."""

    def __init__(self, source, rows, chunk):
        self.source, self.rows, self.chunk = source, rows, chunk

    def __len__(self):
        return -(-len(self.rows) // self.chunk)

    def __getitem__(self, j):
        out = []
        for gi in self.rows[j * self.chunk:(j + 1) * self.chunk]:
            try:
                out.append((int(gi), self.source.read_pair(int(gi))))
            except Exception:  # noqa: BLE001 - handled by the caller
                out.append((int(gi), None))
        return out


def _prefetched(source, rows, workers, chunk=16):
    """Yields (gi, pair or None) in the order of ``rows``, the pairs read by ``workers`` decode
    processes, ``chunk`` consecutive picks at a time (one worker decodes a run of neighbouring
    units, whose source image it reads once); None: read it here (no workers, or a failed read)."""
    from tripled_basicsr.distill.features import loaded
    if workers <= 0 or len(rows) < 2:
        for gi in rows:
            yield int(gi), None
        return
    for items in loaded(_PickedPairs(source, rows, chunk), workers):
        yield from items


def _write_pairs(run, w, fs, sc, sel, cal):
    """Every picked unit into the entered writer ``w``. -> (skipped entries, calibration fidelity)."""
    from tqdm import tqdm

    from tripled_basicsr.distill.calibration import calibrate_pair
    opt, source = run.opt, fs.source
    psnrs, write_skipped, strengths, greys = [], [], [], 0
    tol = opt['calibration']['residual_tolerance']
    multi = is_multi(opt)
    rows = sc.valid[sel.picked]
    # whole images: one pair per chunk (a 4K pair is ~50 MB; prefetch holds 2 chunks per worker)
    parts = [p[1] for p in source.parts] if hasattr(source, 'parts') else [source]
    chunk = 16 if all(hasattr(p, 'image_index') for p in parts) else 1
    reads = _prefetched(source, rows, int(opt['features']['num_workers']), chunk)
    for j, (gi, pair) in enumerate(tqdm(reads, total=len(rows), desc='write', unit='pair', disable=not run.progress,
                                        dynamic_ncols=True)):
        try:
            gt, lq = pair if pair is not None else source.read_pair(gi)
        except Exception as exc:  # noqa: BLE001
            if (source.options_of(gi)[0] if multi else opt['source'])['on_error'] == 'raise':
                raise
            write_skipped.append({'key': source.keys[gi], 'reason': f'{type(exc).__name__}: {exc}'})
            continue
        extra = {}
        if cal.cal is not None:
            gt_c, lq_c, info = calibrate_pair(cal.cal, gt, lq, scale=scale_of(opt), tolerance=tol)
            psnrs.append(_psnr(gt_c, gt))
            strengths.append(info['strength'])
            greys += int(info['grey'])
            extra['calibration_strength'] = info['strength']
            gt, lq = gt_c, lq_c
        if cal.weights is not None:
            extra['weight'] = round(float(cal.weights[j]), 6)
        if hasattr(source, 'provenance'):  # crop units: image key, image index, GT box
            extra.update(source.provenance(gi))
        if multi:
            extra['task'] = source.task_of(gi)
        pi = int(sel.picked[j])
        w.add(source.keys[gi], gt, lq, gt_path=source.source_path(gi, 'gt'),
              lq_path=source.source_path(gi, 'lq'), complexity=round(float(sc.c[pi]), 6),
              uncertainty=round(float(sc.u[pi]), 6), cluster=int(sc.labels[pi]), stage=int(sel.stages[j]),
              calibrated=cal.cal is not None and extra.get('calibration_strength', 1.0) > 0,
              source_index=gi, **extra)
    fidelity = {}
    if cal.cal is not None:
        fidelity = {'psnr_fidelity': float(np.mean(psnrs)) if psnrs else None, 'residual_tolerance': tol,
                    'grey_pairs': greys, 'strength_mean': float(np.mean(strengths)) if strengths else None,
                    'refused_pairs': int(sum(1 for v in strengths if v == 0))}
    return write_skipped, fidelity


def write(run, pre, fs, feat_info, sc, sel, rep, cal):
    """Write the subset (calibrated when applied), the summary and the report files, atomically,
    into ``pre.writer``; prints the text summary when ``run.progress``. -> the summary dict."""
    t = time.time()
    opt, w = run.opt, pre.writer
    if opt['output']['codec'] == 'auto':  # resolved into the options, so the output records what was written
        opt['output']['codec'] = w.codec = auto_codec(getattr(fs.source, 'crop', 0), scale_of(opt), len(sel.picked))
    w.provenance = {'source': fs.source.describe(), 'options': opt, 'work_dir': pre.work}
    with w:
        write_skipped, fidelity = _write_pairs(run, w, fs, sc, sel, cal)
        if cal.cal is not None:
            cal.report.update(fidelity)
            torch.save(cal.cal.state_dict(), os.path.join(w.tmp, 'calibrator.pth'))
        run.timings['write'] = time.time() - t
        run.timings['total'] = time.time() - run.t_start
        summary = _summary(run, pre, fs, feat_info, sc, sel, rep, cal,
                           n_written=len(w.samples), skipped=fs.skipped + sc.unusable + write_skipped)
        w.set_summary(summary)
        text = _write_reports(run, fs, sc, sel, summary, pre.out_path, w.tmp)
    if run.progress:
        print(text)
    return summary


def _summary(run, pre, fs, feat_info, sc, sel, rep, cal, n_written, skipped):
    opt, fopt, c, u, picked, n_valid = run.opt, run.opt['features'], sc.c, sc.u, sel.picked, len(sc.valid)
    source, n, labels, k = fs.source, sc.n, sc.labels, sc.k
    return {
        'name': opt['name'], 'output': pre.out_path, 'N': int(len(source)), 'N_usable': int(n_valid), 'n': int(n_written),
        'n_selected': int(n), 'ratio': n / n_valid,
        'units': 'crops' if getattr(source, 'crop', 0) else 'images',
        'pixel_ratio': (n * source.crop ** 2 / source.total_pixels) if getattr(source, 'crop', 0) else None,
        'selection': opt['selection']['type'], 'clusters': int(k),
        'cluster_sizes': np.bincount(labels[labels >= 0], minlength=k).tolist(),  # -1: a task of share 0
        'cluster_picks': np.bincount(labels[picked], minlength=k).tolist(),
        'stage1': int((sel.stages == 1).sum()), 'stage2': int((sel.stages == 2).sum()),
        'mmd': rep.mmd,
        'complexity': {'type': opt['complexity']['type'], 'source_mean': float(c.mean()),
                       'subset_mean': float(c[picked].mean())},
        'uncertainty': {'type': opt['uncertainty']['type'], 'source_mean': float(u.mean()),
                        'subset_mean': float(u[picked].mean())},
        'calibration': cal.report,
        'features': {'backbone': fopt['backbone'], 'weights': fs.model.tripled_weights, 'dim': int(sc.feats.shape[1]),
                     'views_per_pair': int(fs.store.v), 'embedded_this_run': feat_info['embedded_now'],
                     'resumed_from': feat_info['resumed_from'], 'changed_since_last_run': len(fs.changed),
                     'world_size': int(run.world), 'forward_seconds': feat_info['forward_seconds']},
        'skipped': skipped,
        'timings': {k: round(v, 3) for k, v in run.timings.items()},
        'versions': _versions(),
        'options': opt,
        **({'tasks': rep.tasks, 'task_quota': opt['selection']['task_quota']} if is_multi(opt) else {}),
    }


def _write_reports(run, fs, sc, sel, summary, out_path, directory):
    """report.txt, report.png and source_scores.csv into ``directory``. -> the text summary."""
    from tripled_basicsr.distill.report import text_summary, write_report_png, write_scores_csv
    ropt, seed = run.opt['report'], run.opt['selection']['seed']
    text = text_summary(summary, out_path)
    with open(os.path.join(directory, 'report.txt'), 'w', encoding='utf-8') as f:
        f.write(text + '\n')
    tasks = None
    if is_multi(run.opt):  # the task of every usable unit (report.png colours, source_scores.csv column)
        tasks = np.asarray(fs.source.tasks, dtype=object)[fs.source.task_index[sc.valid]]
    if ropt['plot']:
        write_report_png(os.path.join(directory, 'report.png'), sc.feats, sc.c, sel.picked, sc.labels, summary,
                         seed, tasks=tasks)
    if ropt['scores_csv']:
        write_scores_csv(os.path.join(directory, 'source_scores.csv'), fs.source, sc.valid, sc.c, sc.u, sc.labels,
                         sel.picked, sc.stats, tasks=tasks)
    return text

