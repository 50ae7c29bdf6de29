"""The study's arithmetic, as pure functions (no I/O, no torch): seed statistics, gain
retention, the paired TripleD-vs-baseline test with its tie rule, time-to-quality, and the
two budget rules (random-crop count, dataset enlarge ratio)."""
import itertools
import math

import numpy as np


def mean_std(values):
    """-> (mean, sample std (ddof=1; 0 for one value), n), ignoring None."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return None, None, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def gain_retention(psnr_arm, psnr_full, psnr_input):
    """(PSNR_arm - PSNR_input) / (PSNR_full - PSNR_input): the share of the full-data gain an
    arm keeps. None when the full model does not beat the input (the ratio would be meaningless)."""
    if None in (psnr_arm, psnr_full, psnr_input):
        return None
    gain = psnr_full - psnr_input
    if gain <= 1e-9:
        return None
    return (psnr_arm - psnr_input) / gain


def sign_flip_p(diffs, exact_limit=16, draws=20000, seed=0):
    """Two-sided p of a paired permutation test on the mean difference: under H0 each
    difference's sign is a fair coin. Exact over all 2^n sign patterns for n <= ``exact_limit``
    (so with 3 seeds the smallest possible p is 2/8 = 0.25), Monte Carlo beyond."""
    d = np.asarray(diffs, dtype=np.float64)
    n = d.size
    if n == 0:
        return None
    obs = abs(d.mean())
    if n <= exact_limit:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(draws, n))
    stats = np.abs((signs * d).mean(axis=1))
    return float(np.mean(stats >= obs - 1e-12))


def paired_test(a, b, use_scipy=True):
    """Paired comparison of two arms over the same seeds (``a[i]`` and ``b[i]`` share seed i).

    Returns dict: n, mean_diff (a - b), std_diff, p, method ('t-test (scipy)' when scipy is
    importable, n >= 2 and the differences vary; else the exact sign-flip permutation test).
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = int(d.size)
    if n == 0:
        return {'n': 0, 'mean_diff': None, 'std_diff': None, 'p': None, 'method': None}
    out = {'n': n, 'mean_diff': float(d.mean()), 'std_diff': float(d.std(ddof=1)) if n > 1 else 0.0}
    if use_scipy and n >= 2 and out['std_diff'] > 0:
        try:
            from scipy import stats
            out['p'] = float(stats.ttest_rel(a, b).pvalue)
            out['method'] = 't-test (scipy)'
            return out
        except ImportError:
            pass
    out['p'] = sign_flip_p(d) if n >= 1 else None
    out['method'] = 'sign-flip permutation (exact)'
    return out


def verdict(mean_diff, spread_a, spread_b, n, alpha=None, p=None):
    """'better' / 'worse' / 'tie' for a - b.

    A difference inside the seed spread (|mean_diff| <= the larger of the two arms' seed
    standard deviations) is a tie, and so is anything measured on fewer than 2 seeds; with
    ``alpha`` set, a p-value above it is a tie too.
    """
    if mean_diff is None or n < 2:
        return 'tie'
    if abs(mean_diff) <= max(spread_a or 0.0, spread_b or 0.0):
        return 'tie'
    if alpha is not None and (p is None or p > alpha):
        return 'tie'
    return 'better' if mean_diff > 0 else 'worse'


def time_to_reach(times, values, target, start=None):
    """First time a curve reaches ``target``, linearly interpolated between checkpoints.

    Args:
        times, values: the curve, in training order (seconds, PSNR).
        target (float): the quality to reach.
        start (tuple | None): (time, value) before the first checkpoint, e.g. (0, input PSNR).
    Returns:
        float, or None when the curve never reaches the target.
    """
    pts = ([tuple(start)] if start is not None else []) + list(zip(times, values))
    prev = None
    for t, v in pts:
        if v is not None and v >= target:
            if prev is None or prev[1] is None or v == prev[1]:
                return float(t)
            frac = (target - prev[1]) / (v - prev[1])
            return float(prev[0] + frac * (t - prev[0]))
        prev = (t, v)
    return None


def time_to_quality(prep_s, arm_times, arm_values, full_times, full_values, start_value=None):
    """Wall time for a subset arm to reach its final quality (preparation, e.g. distillation,
    plus training until its curve first reaches that value) vs. full-data training to reach the
    same value. ``speedup`` = full / arm; None when the full curve never gets there (then
    ``full_s`` is None and ``full_total_s`` says how long it trained)."""
    target = arm_values[-1]
    start = (0.0, start_value) if start_value is not None else None
    arm_train = time_to_reach(arm_times, arm_values, target, start)
    arm_s = prep_s + (arm_train if arm_train is not None else arm_times[-1])
    full_s = time_to_reach(full_times, full_values, target, start)
    return {'target': float(target), 'arm_s': float(arm_s), 'prep_s': float(prep_s),
            'full_s': full_s, 'full_total_s': float(full_times[-1]) if len(full_times) else None,
            'speedup': (full_s / arm_s) if (full_s and arm_s > 0) else None}


def time_to_full_quality(prep_s, arm_times, arm_values, full_times, full_values, start_value=None, margin=0.1):
    """Wall time for an arm to reach the full pool's final quality minus ``margin`` dB
    (preparation + training until its curve first gets there, interpolated between
    checkpoints), beside the full-pool training's own time to that value. ``arm_s`` is None when
    the arm never gets there in the iterations it trained; ``speedup`` = full_s / arm_s."""
    target = float(full_values[-1]) - margin
    start = (0.0, start_value) if start_value is not None else None
    arm_train = time_to_reach(arm_times, arm_values, target, start)
    full_s = time_to_reach(full_times, full_values, target, start)
    arm_s = None if arm_train is None else float(prep_s) + arm_train
    return {'full_target': target, 'to_full_arm_s': arm_s, 'to_full_full_s': full_s,
            'to_full_speedup': (full_s / arm_s) if (arm_s and full_s is not None) else None}


def crop_count(total_pixels, ratio, crop_size):
    """Number of crop_size x crop_size GT crops holding ``ratio`` of the source pixels (>= 1), by the
    distiller's rule (options.units_for: rounded up), so a random arm gets the distiller's count."""
    from tripled_basicsr.distill.options import units_for
    return max(1, units_for(ratio, total_pixels, crop_size * crop_size))


def enlarge_ratio(num_samples, batch_size, world_size=1, min_batches=50):
    """BasicSR ``dataset_enlarge_ratio`` so that an epoch has at least ``min_batches`` full
    batches. With ``EnlargedSampler`` and ``drop_last`` a set smaller than a batch would
    otherwise train zero steps (BasicSR then loops over empty epochs forever), and a tiny set
    would pay the loader start-up every few steps. Iterations stay optimiser steps."""
    need = batch_size * world_size * max(1, min_batches)
    return max(1, math.ceil(need / max(1, num_samples)))
