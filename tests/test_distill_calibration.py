"""Degradation-preserving calibration: grey stays grey, the LQ-GT residual statistics stay within
tolerance (or the transform is shrunk / refused), and weights-only calibration changes no pixel."""
import json
import os

import numpy as np
import pytest
import torch

from tripled_basicsr.distill._testing import tiny_options, write_pairs
from tripled_basicsr.distill.degradation import (is_grey, kmm_weights, noise_sigma, residual_drift, residual_stats,
                                                 weighted_mmd, within_tolerance)


def _grey_pair(rng, size=64, sigma=25):
    # values kept inside [20, 210] so a 10 % channel spread never clips (clipping is not the point here)
    g = (np.clip(rng.normal(110, 25, (size, size)), 60, 160)).astype(np.uint8)
    g = np.repeat(g[..., None], 3, 2)
    n = np.clip(g[..., :1].astype(np.float64) + rng.normal(0, sigma, (size, size, 1)), 20, 210).astype(np.uint8)
    return g, np.repeat(n, 3, 2)


def _colour_cal(gain=0.0, spread=0.3):
    """A calibrator whose transform is a fixed colour matrix: spreads channels, scales by 1 + gain."""
    from tripled_basicsr.archs.calibrator_arch import TripleDCalibrator
    cal = TripleDCalibrator(grid=2)
    with torch.no_grad():
        b = torch.zeros(12)
        mat = torch.tensor([[gain + spread, 0, 0], [0, gain, 0], [0, 0, gain - spread]]).flatten()
        b[:9] = mat
        cal.head.bias.copy_(torch.atanh(b / cal.max_delta))
    return cal.eval()


def test_noise_sigma_tracks_gaussian_noise():
    rng = np.random.default_rng(0)
    flat = np.full((128, 128), 128.0)
    for sigma in (5, 15, 25):
        est = noise_sigma(flat + rng.normal(0, sigma, flat.shape))
        assert abs(est - sigma) / sigma < 0.05
    assert noise_sigma(flat) == 0.0


def test_residual_stats_and_drift():
    rng = np.random.default_rng(1)
    gt, lq = _grey_pair(rng)
    s = residual_stats(gt, lq)
    assert 18 < s['std'][0] < 27 and abs(s['mean'][0]) < 3 and len(s['std']) == 3
    scaled = np.clip(128 + (lq.astype(np.float64) - 128) * 1.1, 0, 255)
    scaled_gt = np.clip(128 + (gt.astype(np.float64) - 128) * 1.1, 0, 255)
    d = residual_drift(s, residual_stats(scaled_gt, scaled))
    assert 0.05 < d['std'] < 0.15 and 0.05 < d['noise'] < 0.15
    assert not within_tolerance(d, 0.02) and within_tolerance(residual_drift(s, s), 0.0)
    # scale 4: the reference is the GT area-downsampled to the LQ size
    import cv2
    big = cv2.resize(gt, (256, 256), interpolation=cv2.INTER_NEAREST)
    s4 = residual_stats(big, lq, scale=4)
    assert abs(s4['std'][0] - s['std'][0]) < 1e-9


def test_grey_pair_stays_grey_and_residual_within_tolerance():
    from tripled_basicsr.distill.calibration import calibrate_pair
    rng = np.random.default_rng(2)
    gt, lq = _grey_pair(rng)
    assert is_grey(gt, lq)
    # a pure channel spread: on grey it would colour the image; the guard keeps only its grey action
    g2, l2, info = calibrate_pair(_colour_cal(gain=0.0, spread=0.1), gt, lq, tolerance=0.02)
    assert info['grey'] and is_grey(g2, l2) and info['strength'] == 1.0
    assert within_tolerance(residual_drift(residual_stats(gt, lq), residual_stats(g2, l2)), 0.02)
    # a 20 % gain rescales the noise: shrunk until the drift is within tolerance, or refused
    g3, l3, info = calibrate_pair(_colour_cal(gain=0.2, spread=0.0), gt, lq, tolerance=0.02)
    assert info['strength'] < 1.0 and is_grey(g3, l3)
    assert within_tolerance(residual_drift(residual_stats(gt, lq), residual_stats(g3, l3)), 0.02)
    if info['strength'] == 0:
        assert np.array_equal(g3, gt) and np.array_equal(l3, lq)
    # without tolerance the gain is applied as is and the noise level moves
    g4, l4, info = calibrate_pair(_colour_cal(gain=0.2, spread=0.0), gt, lq, tolerance=None)
    assert info['strength'] == 1.0
    assert residual_drift(residual_stats(gt, lq), residual_stats(g4, l4))['std'] > 0.1


def test_colour_pair_keeps_its_colour_transform():
    from tripled_basicsr.distill.calibration import calibrate_pair
    rng = np.random.default_rng(3)
    gt = rng.integers(60, 200, (48, 48, 3), dtype=np.uint8)
    g2, _, info = calibrate_pair(_colour_cal(gain=0.0, spread=0.01), gt, gt.copy(), tolerance=None)
    assert not info['grey'] and not is_grey(g2)


def test_kmm_weights_lower_mmd_within_bounds():
    rng = np.random.default_rng(4)
    bank = rng.normal(0, 1, (300, 8))
    sub = np.concatenate([rng.normal(0, 1, (12, 8)), rng.normal(3, 0.3, (4, 8))])  # 4 outliers
    from tripled_basicsr.utils.distribution import median_bandwidth
    w, before, after = kmm_weights(sub, bank, median_bandwidth(bank), lo=0.25, hi=4.0)
    assert after < before and abs(w.mean() - 1) < 1e-6 and w.min() >= 0.25 - 1e-9 and w.max() <= 4 + 1e-9
    assert w[12:].mean() < w[:12].mean()  # the off-distribution items weigh less
    with pytest.raises(ValueError, match='weight_range'):
        kmm_weights(sub, bank, 1.0, lo=1.5, hi=4.0)
    k = np.eye(3)
    assert weighted_mmd(k, np.zeros(3), 0.0, np.ones(3)) == pytest.approx(1 / 3)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return write_pairs(str(tmp_path_factory.mktemp('src')), num=24, size=32)


def _hash_tree(root):
    import hashlib
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            with open(os.path.join(d, f), 'rb') as fh:
                h.update(f.encode() + fh.read())
    return h.hexdigest()


def test_weights_mode_changes_no_pixel_and_feeds_the_sampler(data, tmp_path):
    from tripled_basicsr.data.curriculum_sampler import TripleDCurriculumSampler
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    from tripled_basicsr.distill import run_distill
    gt, lq = data
    before = _hash_tree(os.path.dirname(gt))
    outs = {}
    for name, cal in (('w', {'enabled': True, 'mode': 'weights'}), ('off', {'enabled': False})):
        out = str(tmp_path / name)
        s = run_distill(tiny_options(gt, lq, out, calibration=cal), progress=False)
        outs[name] = (out, s)
    assert _hash_tree(os.path.dirname(gt)) == before
    (ow, sw), (oo, _) = outs['w'], outs['off']
    assert sw['calibration']['mode'] == 'weights' and sw['calibration']['mmd_after'] <= sw['calibration']['mmd_before']
    dw = TripleDDataset({'dataroot': ow, 'phase': 'val'})
    do = TripleDDataset({'dataroot': oo, 'phase': 'val'})
    assert dw.keys == do.keys
    for i in range(len(dw)):  # same subset, identical pixels
        for which in ('gt', 'lq'):
            assert np.array_equal(dw.read_image(i, which), do.read_image(i, which))
    with open(os.path.join(ow, 'tripled_meta.json')) as f:
        w = np.array([x['weight'] for x in json.load(f)['samples']])
    assert np.allclose(dw.weight, w) and (w > 0).all() and abs(w.mean() - 1) < 1e-3
    assert np.all(do.weight == 1.0) and not os.path.exists(os.path.join(ow, 'calibrator.pth'))
    # the sampler's stage-1 probabilities are proportional to the weights
    smp = TripleDCurriculumSampler(dw, batch_size=2, total_iter=10, stage2_start=0.5, online_uncertainty=False)
    p = smp.probabilities(0)
    pool = smp.stage1_pool
    assert np.allclose(p[pool] / p[pool].sum(), w[pool] / w[pool].sum())
    flat = TripleDCurriculumSampler(dw, batch_size=2, total_iter=10, stage2_start=0.5, online_uncertainty=False,
                                    sample_weights=False)
    assert np.allclose(flat.probabilities(0)[pool], 1 / len(pool))


def test_pixels_mode_reports_guard(data, tmp_path):
    from tripled_basicsr.distill import run_distill
    gt, lq = data
    out = str(tmp_path / 'p')
    s = run_distill(tiny_options(gt, lq, out, calibration={'enabled': True, 'mode': 'pixels', 'iters': 3,
                                                           'on_worse': 'keep', 'keep_best': False}), progress=False)
    cal = s['calibration']
    assert cal['residual_tolerance'] == 0.02 and 0 <= cal['strength_mean'] <= 1 and cal['grey_pairs'] == 0
    with open(os.path.join(out, 'tripled_meta.json')) as f:
        samples = json.load(f)['samples']
    assert all('calibration_strength' in x for x in samples)
    assert all(x['calibrated'] == (x['calibration_strength'] > 0) for x in samples)


def test_kcenter_covers_every_separated_cluster():
    from tripled_basicsr.distill.registry import SELECTION
    rng = np.random.default_rng(5)
    centres = rng.normal(0, 10, (6, 4))
    sizes = [200, 100, 50, 20, 5, 2]  # random picks of 6 would almost surely miss the small ones
    feats = np.concatenate([c + rng.normal(0, 0.1, (k, 4)) for c, k in zip(centres, sizes)]).astype(np.float32)
    label = np.repeat(np.arange(6), sizes)
    sel, _ = SELECTION.call({'type': 'kcenter'}, feats, np.zeros(len(feats)), np.zeros(len(feats)), 6, {'seed': 0})
    assert sorted(label[sel].tolist()) == list(range(6))
    again, _ = SELECTION.call({'type': 'kcenter'}, feats, None, None, 6, {'seed': 0})
    assert np.array_equal(sel, again)
    with pytest.raises(ValueError, match='1 <= n <= N'):
        SELECTION.call({'type': 'kcenter'}, feats, None, None, len(feats) + 1, {'seed': 0})
