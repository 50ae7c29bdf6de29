"""Calibration when enabled: per-sample weights (mode weights, no pixel changes), or the
calibrator CNN (mode pixels), kept only when it brings the subset closer to the source."""
import time
from dataclasses import dataclass

import numpy as np
import torch

from tripled_basicsr.utils.log import note, warn


@dataclass
class Calibration:
    report: dict  # summary.calibration (write adds the fidelity numbers)
    cal: object = None  # the calibrator network, when its pixels are applied
    weights: object = None  # (n,) per-sample weights of the picked items (mode: weights)


def calibrate(run, fs, sc, sel, device):
    """Calibrate when enabled: per-sample weights (mode weights, no pixel changes), or train the
    calibrator CNN (mode pixels) and decide, by MMD before/after, whether to apply it. -> Calibration."""
    copt = run.opt['calibration']
    if not copt['enabled']:
        return Calibration(report={'enabled': False, 'mode': copt['mode']})
    if copt['mode'] == 'weights':
        return _weights_calibration(run, sc, sel)
    cal, rep = _train_calibrator(run, fs, sc, sel, device)
    rep['enabled'] = True
    worse = rep['mmd_after'] > rep['mmd_before']
    no_gain = rep['mmd_after'] == rep['mmd_before']
    rep['improved'] = not (worse or no_gain)
    rep['applied'] = True
    if no_gain:
        note('calibration found no transform that brings the subset closer to the source (MMD '
             f'{rep["mmd_before"]:.5g}); writing the subset uncalibrated.')
        cal, rep['applied'] = None, False
    elif worse:
        msg = (f'Calibration moved the subset away from the source: MMD {rep["mmd_before"]:.5g} before, '
               f'{rep["mmd_after"]:.5g} after.')
        if copt['on_worse'] == 'raise':
            from tripled_basicsr.distill.calibration import CalibrationWorse
            raise CalibrationWorse(msg + ' Nothing was written. Set calibration.on_worse: skip (write the '
                                   'uncalibrated subset), keep (write it calibrated anyway), '
                                   'calibration.keep_best: true, or calibration.enabled: false; or try a lower '
                                   'lr / more iters.')
        if copt['on_worse'] == 'skip':
            warn(f'{msg} Writing the uncalibrated subset (on_worse: skip).')
            cal, rep['applied'] = None, False
    return Calibration(report=rep, cal=cal)


def _weights_calibration(run, sc, sel):
    """Kernel mean matching of the subset to a full-set feature bank (degradation.kmm_weights)."""
    from tripled_basicsr.distill.degradation import kmm_weights
    from tripled_basicsr.utils.distribution import median_bandwidth
    copt, seed = run.opt['calibration'], run.opt['selection']['seed']
    t = time.time()
    n_valid = len(sc.valid)
    rng = np.random.default_rng([seed, 9])
    bank_idx = np.arange(n_valid) if n_valid <= copt['bank_size'] else np.sort(
        rng.choice(n_valid, copt['bank_size'], replace=False))
    bank = sc.feats[bank_idx].astype(np.float64)
    bw = median_bandwidth(bank)
    lo, hi = copt['weight_range']
    w, before, after = kmm_weights(sc.feats[sel.picked], bank, bw, lo=lo, hi=hi)
    rep = {'enabled': True, 'mode': 'weights', 'applied': True, 'improved': bool(after < before),
           'mmd_before': before, 'mmd_after': after, 'weight_min': float(w.min()), 'weight_max': float(w.max()),
           'weight_range': [lo, hi], 'bank_size': int(len(bank_idx)), 'bandwidth': bw, 'iters': None,
           'seconds': time.time() - t}
    return Calibration(report=rep, weights=w)


def _train_calibrator(run, fs, sc, sel, device):
    from tripled_basicsr.distill.calibration import train_calibrator
    from tripled_basicsr.distill.features import EmbedInputs, _collate
    fopt, copt, seed = run.opt['features'], run.opt['calibration'], run.opt['selection']['seed']
    valid = sc.valid
    rng = np.random.default_rng([seed, 9])
    bank_rows = valid if len(valid) <= copt['bank_size'] else np.sort(rng.choice(valid, copt['bank_size'],
                                                                               replace=False))
    bank = torch.from_numpy(np.asarray(fs.store.feat[bank_rows, 0, :], np.float32))
    bank = torch.nn.functional.normalize(bank, dim=1)
    sub = valid[sel.picked]
    if len(sub) > copt['max_images']:
        sub = np.sort(rng.choice(sub, copt['max_images'], replace=False))
    kinds = ('gt',) if fopt['image'] in ('gt', 'both') else ('gt', 'lq')
    ds = EmbedInputs(fs.source, kinds, fopt['input_size'], 0, fopt['decode_size'], fopt['seed'])
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, sub.tolist()), batch_size=64,
                                         num_workers=fopt['num_workers'], collate_fn=_collate)
    views = []
    for _, v, _, errs, _ in loader:
        if any(errs):
            raise RuntimeError(f'calibration: cannot decode a subset image: {next(e for e in errs if e)}')
        views.append(v)
    v = torch.cat(views).permute(0, 1, 4, 2, 3).float().div_(255)  # (n, kinds, 3, S, S)
    gt_views = v[:, 0].contiguous()
    target = gt_views if len(kinds) == 1 else v[:, 1].contiguous()
    return train_calibrator(fs.model, gt_views, target, bank, copt, device=str(device), seed=seed,
                            progress=run.progress)
