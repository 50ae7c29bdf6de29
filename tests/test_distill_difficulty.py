"""Proxy difficulty (distill/difficulty.py) and the `importance` selection built on it."""
import os

import cv2
import numpy as np
import pytest

from tripled_basicsr.distill import selection  # noqa: F401  (registers the strategies)
from tripled_basicsr.distill.difficulty import fit_proxy, neighbourhoods, residual, unit_difficulty
from tripled_basicsr.distill.registry import SELECTION
from tripled_basicsr.options import OptionError


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_neighbourhoods_match_filter2d():
    x = _rng().uniform(0, 1, (9, 11, 3)).astype(np.float32)
    k = _rng(1).normal(size=(3, 3)).astype(np.float32)
    ys, xs = np.array([0, 4, 8]), np.array([0, 5, 10])  # corners use the reflect-101 border
    rows = neighbourhoods(x, ys, xs, 3)  # (3 pixels * 3 channels, 9)
    want = cv2.filter2D(x, -1, k, borderType=cv2.BORDER_REFLECT_101)[ys, xs].reshape(-1)
    np.testing.assert_allclose(rows @ k.ravel(), want, atol=1e-5)


def _reference(gt, lq, scale, w, taps, pixels=64, seed=3):
    """The whole-image formulas the banded and gathered code must equal to the bit."""
    g = np.asarray(gt, np.float32) / 255.0
    x = np.asarray(lq, np.float32) / 255.0
    if scale > 1:
        x = cv2.resize(x, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_CUBIC)
    k = np.asarray(w[:-1], np.float32).reshape(taps, taps)
    out = cv2.filter2D(x, -1, k, borderType=cv2.BORDER_REFLECT_101) + np.float32(w[-1])
    r = (g - out.reshape(g.shape)) * 255.0
    rng = np.random.default_rng([seed, 11])
    m = min(pixels, g.shape[0] * g.shape[1])
    ys, xs = rng.integers(0, g.shape[0], m), rng.integers(0, g.shape[1], m)
    p = np.pad(x, ((taps // 2,) * 2, (taps // 2,) * 2, (0, 0)), mode='reflect')
    dy, dx = np.meshgrid(np.arange(taps), np.arange(taps), indexing='ij')
    win = p[ys[:, None] + dy.ravel()[None], xs[:, None] + dx.ravel()[None]].transpose(0, 2, 1).reshape(-1, taps * taps)
    a = np.concatenate([win, np.ones((len(win), 1), np.float32)], 1)
    b = g[ys, xs].reshape(-1)
    ata, atb = a.T.astype(np.float64) @ a, a.T.astype(np.float64) @ b
    fit = np.linalg.solve(ata + 1e-3 * np.trace(ata) / len(ata) * np.eye(len(ata)), atb)
    return (r * r).mean(2), fit


@pytest.mark.parametrize('scale,taps,shape', [(1, 7, (150, 97, 3)), (2, 5, (132, 90, 3)), (1, 3, (70, 33, 1)),
                                              (1, 13, (40, 30, 3)), (1, 7, (5, 4, 3))])
def test_banded_residual_and_gathered_fit_equal_the_whole_image_formulas(scale, taps, shape):
    """Heights 150, 132 and 70 cross the 64-row band edges; 13 taps and a 5-px image take the
    whole-image paths."""
    rng = _rng(5)
    gt = rng.integers(0, 256, shape, dtype=np.uint8)
    lq = cv2.resize(gt, (shape[1] // scale, shape[0] // scale), interpolation=cv2.INTER_AREA).reshape(
        shape[0] // scale, shape[1] // scale, shape[2])
    w = rng.normal(0, 0.2, taps * taps + 1)
    want_r2, want_fit = _reference(gt, lq, scale, w, taps)
    np.testing.assert_array_equal(residual(gt, lq, scale, w), want_r2)
    np.testing.assert_array_equal(fit_proxy([(gt, lq)], scale, taps, pixels=64, seed=3), want_fit)


def test_fit_recovers_a_linear_degradation_inverse():
    """GT = k * LQ + b exactly: the fitted proxy is k, b and its residual vanishes."""
    k = np.array([[0.0, 0.1, 0.0], [0.1, 0.6, 0.1], [0.0, 0.1, 0.0]], np.float32)
    pairs = []
    for s in range(4):
        lq = _rng(s).uniform(0, 1, (40, 40, 3)).astype(np.float32)
        gt = cv2.filter2D(lq, -1, k, borderType=cv2.BORDER_REFLECT_101) + 0.05
        pairs.append(((gt * 255).astype(np.float64), (lq * 255).astype(np.float64)))
    w = fit_proxy(pairs, 1, taps=3, ridge=1e-9)
    np.testing.assert_allclose(w[:-1].reshape(3, 3), k, atol=1e-3)
    assert abs(w[-1] - 0.05) < 1e-3
    assert residual(*pairs[0], 1, w).max() < 1e-3


def test_fit_refuses_an_even_filter():
    with pytest.raises(ValueError, match='taps must be an odd'):
        fit_proxy([], 1, taps=4)


def _write(root, pairs):
    from tripled_basicsr.data.pair_folders import write_pair_folders
    return write_pair_folders(root, ((f'img{i}', g, q) for i, (g, q) in enumerate(pairs)), ext='.png')


def _half_textured(seed, size=64, sigma=15):
    """Left half flat grey, right half fine texture; LQ = GT + Gaussian noise."""
    rng = _rng(seed)
    gt = np.full((size, size, 3), 128, np.float32)
    gt[:, size // 2:] += rng.normal(0, 50, (size, size // 2, 1))
    gt = np.clip(gt, 0, 255).astype(np.uint8)
    lq = np.clip(gt + rng.normal(0, sigma, gt.shape), 0, 255).astype(np.uint8)
    return gt, lq


def _source(gt, lq, crop, scale=1):
    from tripled_basicsr.distill.options import DEFAULTS
    from tripled_basicsr.distill.pipeline import open_source
    src = dict(DEFAULTS['source'], dataroot_gt=gt, dataroot_lq=lq, crop_size=crop, scale=scale)
    return open_source({'source': src})[0]


def test_textured_crops_are_harder_than_flat_ones(tmp_path):
    gt, lq = _write(str(tmp_path), [_half_textured(s) for s in range(3)])
    src = _source(gt, lq, 32)  # 2 x 2 crops per image: x = 0 flat, x = 32 textured
    d = unit_difficulty(src)
    flat = np.array([k.endswith('_x0') for k in src.keys])
    assert len(d) == len(src) == 12
    assert d[~flat].min() > d[flat].max() + 1  # noise alone (flat) vs noise + texture


def test_crop_difficulty_pools_to_the_whole_image_one(tmp_path):
    """Crops that tile an image: the RMS over their boxes is the image's own difficulty (x2 SR)."""
    pairs = []
    for s in range(2):
        gt, _ = _half_textured(s)
        pairs.append((gt, cv2.resize(gt, (32, 32), interpolation=cv2.INTER_AREA)))
    gt, lq = _write(str(tmp_path), pairs)
    whole = unit_difficulty(_source(gt, lq, 0, scale=2))
    crops = unit_difficulty(_source(gt, lq, 32, scale=2))
    np.testing.assert_allclose(np.sqrt((crops.reshape(2, 4) ** 2).mean(1)), whole, rtol=1e-5)


def test_rows_limit_what_is_read(tmp_path):
    gt, lq = _write(str(tmp_path), [_half_textured(s) for s in range(3)])
    src = _source(gt, lq, 32)
    first = unit_difficulty(src, rows=range(8))  # the units of images 0 and 1
    os.remove(os.path.join(gt, 'img2.png'))  # units 8-11: never read when not asked for
    np.testing.assert_array_equal(unit_difficulty(src, rows=range(8)), first)
    with pytest.raises(Exception, match='img2'):
        unit_difficulty(src, rows=[8])


def test_each_image_is_decoded_once_and_workers_change_nothing(tmp_path):
    """The pairs decoded for the fit are scored from memory (a small pool: one decode per image);
    without that cache, or in decode workers, the values are the same to the bit."""
    gt, lq = _write(str(tmp_path), [_half_textured(s) for s in range(5)])
    src = _source(gt, lq, 32)
    reads = []
    read_pair = src.base.read_pair
    src.base.read_pair = lambda i: reads.append(i) or read_pair(i)
    cached = unit_difficulty(src, fit_images=3)
    assert sorted(reads) == list(range(5))
    reads.clear()
    uncached = unit_difficulty(src, fit_images=3, cache_bytes=0)
    assert len(reads) == 5 + 3
    src.base.read_pair = read_pair
    in_workers = unit_difficulty(src, fit_images=3, workers=2)
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(cached, in_workers)
    assert np.isfinite(cached).all() and len(cached) == 20


def test_worker_order_gives_each_worker_one_contiguous_run():
    from tripled_basicsr.distill.features import assign_batches, worker_order
    for n in range(0, 12):
        for workers in (1, 2, 3, 4):
            order = worker_order(n, workers)
            assert sorted(order) == list(range(n))
            for w in range(workers):
                got = order[w::workers]  # what round-robin hands worker w
                assert got == list(range(got[0], got[0] + len(got))) if got else True
    # ranks: contiguous blocks of batches, every index once, the same batches for any world size
    remaining = np.arange(3, 40)
    for world in (1, 2, 3):
        parts = [assign_batches(remaining, 4, world, r, 2) for r in range(world)]
        assert len({rounds for _, rounds in parts}) == 1 and all(len(b) <= parts[0][1] for b, _ in parts)
        batches = [b.tolist() for got, _ in parts for b in got]
        assert sorted(batches) == [remaining[s:s + 4].tolist() for s in range(0, 37, 4)]
        for got, _ in parts:
            firsts = sorted(b[0] for b in got)
            assert firsts == list(range(firsts[0], firsts[0] + 4 * len(firsts), 4)) if firsts else True


def _ctx(d, seed=0):
    return {'seed': seed, 'difficulty': lambda taps: np.asarray(d, np.float64)}


def _importance(d, n, seed=0, **kw):
    feats = np.zeros((len(d), 2), np.float32)
    c = u = np.zeros(len(d))
    return SELECTION.call({'type': 'importance', **kw}, feats, c, u, n, _ctx(d, seed))[0]


def test_importance_is_seeded_and_tilted():
    d = np.r_[np.full(500, 1.0), np.full(500, 4.0)]
    a, b = _importance(d, 100, seed=0), _importance(d, 100, seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, _importance(d, 100, seed=1))  # a seed is another subset
    hard = lambda idx: np.mean(idx >= 500)  # noqa: E731
    # p ~ d: the hard half is 4 / 5 of the draw (without replacement: a little less)
    assert 0.7 < hard(_importance(d, 100, power=1.0)) < 0.9
    assert 0.3 < hard(_importance(d, 100, power=0.0)) < 0.7  # power 0: uniform
    assert hard(_importance(d, 100, power=2.0)) > 0.85


def test_importance_trim_leaves_out_the_hardest():
    d = np.arange(1, 101, dtype=np.float64)
    picked = _importance(d, 20, trim=0.1, power=3.0)
    assert picked.max() < 90  # the 10 hardest units are out
    assert len(_importance(d, 95, trim=0.1)) == 95  # never fewer units left than asked for


def test_importance_needs_the_distillers_difficulty():
    feats = np.zeros((10, 2), np.float32)
    with pytest.raises(OptionError, match='importance needs the proxy difficulty'):
        SELECTION.call({'type': 'importance'}, feats, np.zeros(10), np.zeros(10), 3, {'seed': 0})


def test_importance_option_checks():
    with pytest.raises(OptionError, match='selection.trim'):
        SELECTION.resolve({'type': 'importance', 'trim': 0.7})
    for kind in ('importance', 'systematic'):  # an even filter fails when the options are read, not after features
        with pytest.raises(OptionError, match='selection.taps must be an odd integer'):
            SELECTION.resolve({'type': kind, 'taps': 4})
    assert SELECTION.resolve({'type': 'systematic', 'taps': 5})['taps'] == 5


def test_systematic_pps_inclusion_and_certainty():
    from tripled_basicsr.distill.selection import systematic_pps
    w = np.r_[np.ones(50), 4 * np.ones(50)]
    counts = np.zeros(100)
    for s in range(400):
        p = systematic_pps(w, 10, _rng(s))
        assert len(np.unique(p)) == 10
        counts[p] += 1
    np.testing.assert_allclose([counts[:50].mean() / 400, counts[50:].mean() / 400], [0.04, 0.16], atol=0.01)
    p = systematic_pps(np.r_[np.ones(99), 1000.0], 10, _rng(0))  # one unit heavier than the step: taken once
    assert 99 in p and len(np.unique(p)) == 10


def test_systematic_importance_gives_every_stratum_its_share():
    """Along k-means strata, a systematic draw gives each stratum its expected count +- 1 on every
    seed (independent draws scatter); the subset still changes with the seed."""
    d = np.ones(600)
    labels = np.repeat(np.arange(3), 200)
    feats = np.zeros((600, 2), np.float32)
    for seed in range(5):
        ctx = {**_ctx(d, seed), 'labels': labels}
        picked = SELECTION.call({'type': 'importance', 'draw': 'systematic'}, feats, d, d, 30, ctx)[0]
        assert len(np.unique(picked)) == 30
        assert np.all(np.abs(np.bincount(labels[picked], minlength=3) - 10) <= 1)
    one = SELECTION.call({'type': 'importance', 'draw': 'systematic'}, feats, d, d, 30, {**_ctx(d, 0), 'labels': labels})
    two = SELECTION.call({'type': 'importance', 'draw': 'systematic'}, feats, d, d, 30, {**_ctx(d, 1), 'labels': labels})
    assert not np.array_equal(one[0], two[0])
    with pytest.raises(OptionError, match='selection.draw must be one of systematic, independent; got '):
        SELECTION.resolve({'type': 'importance', 'draw': 'stratified'})
    with pytest.raises(OptionError, match='selection.quota must be one of weight, count; .* Did you mean count'):
        SELECTION.resolve({'type': 'importance', 'quota': 'counts'})


def test_importance_candidates_spread_the_picks():
    """candidates: k-center among a drawn candidate set: the picks are spread over the features,
    and only candidates (never units outside the draw) can be picked."""
    rng = _rng(0)
    feats = np.r_[rng.normal(0, 0.01, (300, 2)), rng.normal(1, 0.01, (300, 2))].astype(np.float32)
    d = np.ones(600)
    c = np.zeros(600)
    picked = SELECTION.call({'type': 'importance', 'candidates': 4.0}, feats, c, c, 2, _ctx(d, 3))[0]
    assert (picked < 300).sum() == 1  # one from each of the two far-apart groups
    base = SELECTION.call({'type': 'importance'}, feats, c, c, 8, _ctx(d, 3))[0]
    assert len(base) == 8


def test_count_quota_keeps_each_strata_share_and_tilts_inside():
    """quota: count - a hard stratum does not take the budget of an easy one; inside a stratum
    the harder units are still favoured."""
    labels = np.repeat([0, 1], 300)
    d = np.r_[np.linspace(1, 2, 300), np.linspace(10, 20, 300)]  # stratum 1 is ten times harder
    feats = np.zeros((600, 2), np.float32)
    sel = {'type': 'importance', 'draw': 'systematic'}
    by_weight = SELECTION.call({**sel, 'quota': 'weight'}, feats, d, d, 60, {**_ctx(d, 0), 'labels': labels})[0]
    assert np.bincount(labels[by_weight])[0] < 10
    hard_half = []
    for seed in range(4):
        picked = SELECTION.call(sel, feats, d, d, 60, {**_ctx(d, seed), 'labels': labels})[0]  # count: the default
        assert np.all(np.abs(np.bincount(labels[picked]) - 30) <= 1)
        hard_half.append(np.mean(picked[labels[picked] == 0] >= 150))
    assert np.mean(hard_half) > 0.5


def test_systematic_default_draws_like_random_but_stratified():
    """selection.type systematic (the default): every unit has the random inclusion probability n/N
    whatever its difficulty, and every stratum gets its share +- 1 on every seed."""
    rng = _rng(0)
    labels = np.repeat(np.arange(4), [50, 100, 150, 100])
    d = rng.uniform(1, 30, 400)
    feats = np.zeros((400, 2), np.float32)
    counts = np.zeros(400)
    for seed in range(300):
        picked = SELECTION.call({'type': 'systematic'}, feats, d, d, 40, {**_ctx(d, seed), 'labels': labels})[0]
        assert len(np.unique(picked)) == 40
        assert np.all(np.abs(np.bincount(labels[picked], minlength=4) - [5, 10, 15, 10]) <= 1)
        counts[picked] += 1
    freq = counts / 300
    assert abs(freq.mean() - 0.1) < 1e-9
    hard = d > np.median(d)
    assert abs(freq[hard].mean() - freq[~hard].mean()) < 0.02  # no tilt
