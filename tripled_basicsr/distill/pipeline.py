"""The TripleD pipeline: features -> scores -> selection -> calibration -> distilled LMDB.

``run_distill(opt)`` is the whole command; it runs the same code on one process and under
``torchrun`` (ranks share the embedding, rank 0 does the rest and writes).
"""
import hashlib
import math
import os
import sys
import time

import numpy as np
import torch

from tripled_basicsr.distill.options import (OptionError, feature_dependencies, merge_options, resolve_budget,
                                             work_dir_of)


# ---------------------------------------------------------------- distributed helpers
def init_distributed():
    """Initialise torch.distributed from torchrun's env (gloo on CPU, nccl on GPU). -> (rank, world)."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world <= 1:
        return 0, 1
    import torch.distributed as tdist
    if not tdist.is_initialized():
        backend = os.environ.get('TRIPLED_DIST_BACKEND') or ('nccl' if torch.cuda.is_available() else 'gloo')
        if backend == 'nccl':
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        tdist.init_process_group(backend=backend)
    from mmengine import dist
    return dist.get_rank(), dist.get_world_size()


def _on_rank0(fn, rank, world):
    """Run ``fn`` on rank 0 and re-raise its error on every rank (so no rank hangs)."""
    result, err = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001
            err = exc
    if world > 1:
        box = [None if err is None else (type(err).__name__, str(err))]
        torch.distributed.broadcast_object_list(box, src=0)
        if box[0] is not None and err is None:
            raise RuntimeError(f'rank 0 failed: {box[0][0]}: {box[0][1]}')
    if err is not None:
        raise err
    return result


# ---------------------------------------------------------------- source
def open_source(opt):
    """PairedSource from ``source`` options; with on_error: skip, unpaired files (GT without
    LQ or the reverse, folders or LMDBs) are left out and returned as skipped entries."""
    from tripled_basicsr.data.paired_source import PairedSource, SourceError
    s = opt['source']
    try:
        src = PairedSource(s['dataroot_gt'], s['dataroot_lq'], filename_tmpl=s['filename_tmpl'],
                           meta_info_file=s['meta_info_file'], scale=s['scale'],
                           on_missing='skip' if s['on_error'] == 'skip' else 'raise')
    except SourceError as exc:
        if 'partner' in str(exc) or 'has no LQ' in str(exc) or 'has no GT' in str(exc):
            raise SourceError(f'{exc} (Or set `source.on_error: skip` to leave unpaired files out.)') from exc
        raise
    return src, list(src.skipped)


def _weights_id(fopt):
    ck = fopt.get('checkpoint')
    if ck:
        p = os.path.abspath(os.path.expanduser(str(ck)))
        st = os.stat(p) if os.path.exists(p) else None
        return {'checkpoint': p, 'size': st.st_size if st else None, 'mtime': int(st.st_mtime) if st else None}
    return {'pretrained': bool(fopt.get('pretrained'))}


def _versions():
    import timm
    out = {'python': sys.version.split()[0], 'torch': torch.__version__, 'timm': timm.__version__,
           'numpy': np.__version__}
    for mod in ('basicsr', 'mmengine', 'tripled_basicsr'):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = 'unknown'
    return out


# ---------------------------------------------------------------- main
def run_distill(user_opt, progress=True):
    """Run the whole pipeline. Returns the summary dict on rank 0 (None on other ranks)."""
    from tripled_basicsr.distill.backbone import build_backbone
    from tripled_basicsr.distill.features import KINDS, FeatureStore, extract_features
    from tripled_basicsr.utils.io import AtomicOutputDir

    t_start = time.time()
    timings = {}
    opt = merge_options(user_opt)
    rank, world = init_distributed()
    out_path = os.path.abspath(os.path.expanduser(opt['output']['path']))
    AtomicOutputDir(out_path, opt['output']['overwrite'], 'output.overwrite: true')  # fail before any work
    work = work_dir_of(opt)
    fopt = opt['features']

    t = time.time()
    source, skipped_unpaired = open_source(opt)
    n_total = len(source)
    n_budget = resolve_budget(opt['selection'], n_total)  # fail fast; re-checked after skipping
    keys_hash = hashlib.sha256('\n'.join(source.keys).encode()).hexdigest()
    model = build_backbone(fopt['backbone'], fopt['pretrained'], fopt['checkpoint'], fopt['input_size'],
                           fopt['model_kwargs'], fopt['hub_timeout'], fopt['seed'])
    with torch.no_grad():
        from tripled_basicsr.distill.backbone import embed, normalization
        mean, std = normalization(model)
        probe, _ = embed(model, torch.zeros(1, 3, fopt['input_size'], fopt['input_size']), mean, std)
    dim = probe.shape[1]
    kinds = KINDS[fopt['image']]
    views_per_kind = 1 + int(fopt['local_views'])
    deps = feature_dependencies(opt, keys_hash, _weights_id(fopt))
    store = _on_rank0(lambda: FeatureStore(work, n_total, views_per_kind * len(kinds), dim, deps), rank, world)
    if rank != 0:
        store = FeatureStore(work, n_total, views_per_kind * len(kinds), dim, deps, rank=rank)
    timings['setup'] = time.time() - t

    t = time.time()
    interrupt = os.environ.get('TRIPLED_DISTILL_INTERRUPT_AFTER')
    feat_info = extract_features(source, store, model, fopt, opt['source']['on_error'], rank, world, progress,
                                 interrupt_after=int(interrupt) if interrupt else None)
    timings['features'] = time.time() - t
    if world > 1:
        torch.distributed.barrier()
    if rank != 0:
        return None
    return _select_and_write(opt, source, store.open('r'), model, feat_info, skipped_unpaired, n_budget, kinds,
                             views_per_kind, timings, t_start, world, progress, out_path, work)


def _select_and_write(opt, source, store, model, feat_info, skipped_unpaired, n_budget, kinds, views_per_kind,
                      timings, t_start, world, progress, out_path, work):
    from tqdm import tqdm

    from tripled_basicsr.data.distilled_format import DistilledWriter
    from tripled_basicsr.distill.features import pair_features, resolve_device
    from tripled_basicsr.distill.mmd import median_bandwidth, mmd_numpy
    from tripled_basicsr.distill.registry import COMPLEXITY, SELECTION, UNCERTAINTY, call_strategy
    from tripled_basicsr.distill.selection import curriculum_stages, kmeans, resolve_clusters

    fopt, sel_opt = opt['features'], dict(opt['selection'])
    done = np.asarray(store.done)
    valid = np.flatnonzero(done == 1)
    errors = store.errors()
    skipped = list(skipped_unpaired) + [{'key': source.keys[i], 'gt_path': source.source_path(i, 'gt'),
                                         'lq_path': source.source_path(i, 'lq'), 'reason': errors.get(i, '')}
                                        for i in np.flatnonzero(done == 2)]
    if len(valid) == 0:
        raise RuntimeError('No usable pairs: every pair was skipped (see errors above / work dir errors.json).')
    n_valid = len(valid)
    n = resolve_budget(sel_opt, n_valid) if len(valid) != source.__len__() else n_budget

    t = time.time()
    feats = pair_features(store.feat, len(kinds), views_per_kind)[valid]
    stats_arr = np.asarray(store.stats, np.float64)[valid]
    stats = {'entropy': stats_arr[:, 0], 'gradient': stats_arr[:, 1], 'token_var': stats_arr[:, 2]}
    seed = int(sel_opt.pop('seed'))
    clusters_opt = sel_opt.pop('clusters')
    kmeans_iters = int(sel_opt.pop('kmeans_iters'))
    sel_opt.pop('ratio', None)
    sel_opt.pop('num', None)
    k = resolve_clusters(clusters_opt, n, OptionError)
    labels, _ = kmeans(feats, k, seed=seed, iters=kmeans_iters, progress=progress)
    timings['kmeans'] = time.time() - t

    t = time.time()
    device = str(resolve_device(fopt['device']))
    ctx = {'seed': seed, 'labels': labels, 'progress': progress, 'device': device}
    c = np.clip(np.asarray(call_strategy(COMPLEXITY, opt['complexity'], feats, stats, ctx), np.float64), 0, 1)
    u = np.clip(np.asarray(call_strategy(UNCERTAINTY, opt['uncertainty'], feats, stats, ctx), np.float64), 0, 1)
    for name, arr in (('complexity', c), ('uncertainty', u)):
        if arr.shape != (n_valid,) or not np.isfinite(arr).all():
            raise RuntimeError(f'{name} strategy {opt[name]["type"]!r} returned an invalid array '
                               f'(shape {arr.shape}, finite: {np.isfinite(arr).all()}).')
    timings['scoring'] = time.time() - t

    t = time.time()
    stype = sel_opt.pop('type')
    if stype == 'tripled':
        sel_opt['clusters'] = k
    picked, _ = SELECTION.get(stype)(feats, c, u, n, ctx, **sel_opt)
    picked = np.asarray(picked, np.int64)
    if len(picked) != n or len(np.unique(picked)) != n:
        raise RuntimeError(f'selection {stype!r} returned {len(picked)} items ({len(np.unique(picked))} unique), '
                           f'expected {n}.')
    stages = curriculum_stages(c[picked], opt['curriculum']['easy_quantile'])
    timings['selection'] = time.time() - t

    # ---- MMD report: subset vs source, and baselines of the same size
    t = time.time()
    ropt = opt['report']
    rng = np.random.default_rng([seed, 7])
    m = int(ropt['mmd_samples'])
    bank_idx = np.sort(rng.choice(n_valid, min(m, n_valid), replace=False))
    bank = feats[bank_idx]
    bw = median_bandwidth(bank)

    def mmd_of(idx):
        idx = np.asarray(idx)
        if len(idx) > m:
            idx = np.sort(np.random.default_rng([seed, 8]).choice(idx, m, replace=False))
        return mmd_numpy(feats[idx], bank, bw)

    mmd_tripled = mmd_of(picked)
    rand = [mmd_of(np.random.default_rng([seed, 100 + r]).choice(n_valid, n, replace=False))
            for r in range(int(ropt['random_repeats']))]
    mmd_top = mmd_of(np.argsort(-c, kind='stable')[:n])
    timings['mmd'] = time.time() - t

    # ---- calibration
    t = time.time()
    copt = opt['calibration']
    cal, cal_report = None, {'enabled': bool(copt['enabled'])}
    if copt['enabled']:
        cal, cal_report = _calibrate(opt, source, store, model, valid, picked, seed, progress)
        cal_report['enabled'] = True
        worse = cal_report['mmd_after'] > cal_report['mmd_before']
        no_gain = cal_report['mmd_after'] == cal_report['mmd_before']
        cal_report['improved'] = not (worse or no_gain)
        if no_gain:
            print('note: calibration found no transform that brings the subset closer to the source (MMD '
                  f'{cal_report["mmd_before"]:.5g}); writing the subset uncalibrated.', file=sys.stderr)
            cal = None
            cal_report['applied'] = False
        elif worse:
            msg = (f'Calibration moved the subset away from the source: MMD {cal_report["mmd_before"]:.5g} '
                   f'before, {cal_report["mmd_after"]:.5g} after.')
            if copt['on_worse'] == 'raise':
                from tripled_basicsr.distill.calibration import CalibrationWorse
                raise CalibrationWorse(msg + ' Nothing was written. Set calibration.on_worse: skip (write the '
                                       'uncalibrated subset), keep (write it calibrated anyway), '
                                       'calibration.keep_best: true, or calibration.enabled: false; or try a lower '
                                       'lr / more iters.')
            if copt['on_worse'] == 'skip':
                print(f'warning: {msg} Writing the uncalibrated subset (on_worse: skip).', file=sys.stderr)
                cal = None
                cal_report['applied'] = False
        if cal is not None:
            cal_report['applied'] = True
    timings['calibration'] = time.time() - t

    # ---- write
    t = time.time()
    from tripled_basicsr.distill.calibration import calibrate_pair
    out = opt['output']
    sel_global = valid[picked]
    provenance = {'source': source.describe(), 'options': opt, 'work_dir': work}
    psnrs = []
    write_skipped = []
    summary = {}
    with DistilledWriter(out_path, scale=int(opt['source']['scale']), tile_size=out['tile_size'],
                         compress_level=out['compress_level'], overwrite=out['overwrite'], tool='distill',
                         provenance=provenance, overwrite_option='output.overwrite: true') as w:
        for j, gi in enumerate(tqdm(sel_global, desc='write', unit='pair', disable=not progress, dynamic_ncols=True)):
            gi = int(gi)
            try:
                gt, lq = source.read_pair(gi)
            except Exception as exc:  # noqa: BLE001
                if opt['source']['on_error'] == 'raise':
                    raise
                write_skipped.append({'key': source.keys[gi], 'reason': f'{type(exc).__name__}: {exc}'})
                continue
            if cal is not None:
                gt_c, lq_c = calibrate_pair(cal, gt, lq)
                mse = np.mean((gt_c.astype(np.float64) - gt.astype(np.float64)) ** 2)
                psnrs.append(100.0 if mse == 0 else min(100.0, 10 * math.log10(255.0 ** 2 / mse)))
                gt, lq = gt_c, lq_c
            pi = int(picked[j])
            w.add(source.keys[gi], gt, lq, gt_path=source.source_path(gi, 'gt'), lq_path=source.source_path(gi, 'lq'),
                  complexity=round(float(c[pi]), 6), uncertainty=round(float(u[pi]), 6), cluster=int(labels[pi]),
                  stage=int(stages[j]), calibrated=cal is not None, source_index=gi)
        if cal is not None:
            cal_report['psnr_fidelity'] = float(np.mean(psnrs)) if psnrs else None
            torch.save(cal.state_dict(), os.path.join(w.tmp, 'calibrator.pth'))
        timings['write'] = time.time() - t
        timings['total'] = time.time() - t_start
        sizes = np.bincount(labels, minlength=k)
        summary = {
            'name': opt['name'], 'N': int(len(source)), 'N_usable': int(n_valid), 'n': int(len(w.samples)),
            'n_selected': int(n), 'ratio': n / n_valid, 'selection': stype, 'clusters': int(k),
            'cluster_sizes': sizes.tolist(), 'cluster_picks': np.bincount(labels[picked], minlength=k).tolist(),
            'stage1': int((stages == 1).sum()), 'stage2': int((stages == 2).sum()),
            'mmd': {'subset': mmd_tripled, 'random_mean': float(np.mean(rand)), 'random_std': float(np.std(rand)),
                    'random_repeats': len(rand), 'top_complexity': mmd_top, 'bandwidth': bw,
                    'bank_size': int(len(bank_idx))},
            'complexity': {'type': opt['complexity']['type'], 'source_mean': float(c.mean()),
                           'subset_mean': float(c[picked].mean())},
            'uncertainty': {'type': opt['uncertainty']['type'], 'source_mean': float(u.mean()),
                            'subset_mean': float(u[picked].mean())},
            'calibration': cal_report,
            'features': {'backbone': fopt['backbone'], 'weights': model.tripled_weights, 'dim': int(feats.shape[1]),
                         'views_per_pair': int(store.v), 'embedded_this_run': feat_info['embedded_now'],
                         'resumed_from': feat_info['resumed_from'], 'world_size': int(world),
                         'forward_seconds': feat_info['forward_seconds']},
            'skipped': skipped + write_skipped,
            'timings': {k2: round(v, 3) for k2, v in timings.items()},
            'versions': _versions(),
            'options': opt,
        }
        w.set_summary(summary)
        from tripled_basicsr.distill.report import text_summary, write_report_png, write_scores_csv
        text = text_summary(summary, out_path)
        with open(os.path.join(w.tmp, 'report.txt'), 'w', encoding='utf-8') as f:
            f.write(text + '\n')
        if ropt['plot']:
            write_report_png(os.path.join(w.tmp, 'report.png'), feats, c, picked, labels, summary, seed)
        if ropt['scores_csv']:
            write_scores_csv(os.path.join(w.tmp, 'source_scores.csv'), source, valid, c, u, labels, picked, stats)
    if progress:
        print(text)
    return summary


def _calibrate(opt, source, store, model, valid, picked, seed, progress):
    from tripled_basicsr.distill.calibration import train_calibrator
    from tripled_basicsr.distill.features import EmbedInputs, _collate, resolve_device
    fopt, copt = opt['features'], opt['calibration']
    rng = np.random.default_rng([seed, 9])
    bank_rows = valid if len(valid) <= int(copt['bank_size']) else \
        np.sort(rng.choice(valid, int(copt['bank_size']), replace=False))
    bank = torch.from_numpy(np.asarray(store.feat[bank_rows, 0, :], np.float32))
    bank = torch.nn.functional.normalize(bank, dim=1)
    sub = valid[picked]
    if len(sub) > int(copt['max_images']):
        sub = np.sort(rng.choice(sub, int(copt['max_images']), replace=False))
    kinds = ('gt',) if fopt['image'] in ('gt', 'both') else ('gt', 'lq')
    ds = EmbedInputs(source, kinds, fopt['input_size'], 0, fopt['decode_size'], fopt['seed'])
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, sub.tolist()), batch_size=64,
                                         num_workers=int(fopt['num_workers']), collate_fn=_collate)
    views = []
    for _, v, _, errs in loader:
        if any(errs):
            raise RuntimeError(f'calibration: cannot decode a subset image: {next(e for e in errs if e)}')
        views.append(v)
    v = torch.cat(views).permute(0, 1, 4, 2, 3).float().div_(255)  # (n, kinds, 3, S, S)
    gt_views = v[:, 0].contiguous()
    target = gt_views if len(kinds) == 1 else v[:, 1].contiguous()
    cal, rep = train_calibrator(model, gt_views, target, bank, copt, device=str(resolve_device(fopt['device'])),
                                seed=seed, progress=progress)
    return cal, rep
