"""Speed of tripled_basicsr.iqa (BRISQUE features, PIQE) vs. straightforward reference loops, on CPU.

Rows: exact and soft (differentiable) versions of ``brisque_features`` and ``piqe``
(torch, vectorised over blocks), soft forward+backward, and straightforward NumPy
references written the way the MATLAB code reads (PIQE: a Python loop over 16x16 blocks;
BRISQUE: per-scale loop, per-shift loop, brute-force grid search over all 9801 values).
The reference outputs are checked against ours before timing.

    python benchmarks/iqa_speed.py                 # 512x512 (3 repeats) and 3840x2160 (1 repeat)
    python benchmarks/iqa_speed.py --repeats 5 --repeats-4k 2 --threads 2 --backward-4k

Prints a table, then one JSON line (``{"benchmark": "iqa_speed", ...}``).
"""
import argparse
import json
import os
import platform
import time

import numpy as np
import torch
from scipy.ndimage import correlate
from scipy.special import gamma as gamma_fn

from tripled_basicsr.iqa import brisque_features, imresize, piqe
from tripled_basicsr.iqa._common import LUMA_WEIGHTS, gaussian_window_2d

SIZES = {'512x512': (512, 512), '3840x2160': (2160, 3840)}


# ----------------------------------------------------------------------------- references


def _window():
    return gaussian_window_2d(torch.float64).numpy()


def _luma(rgb):
    """MATLAB rgb2gray on uint8: weighted sum rounded half away from zero (np.round rounds to even)."""
    return np.floor(rgb[..., 0] * LUMA_WEIGHTS[0] + rgb[..., 1] * LUMA_WEIGHTS[1] + rgb[..., 2] * LUMA_WEIGHTS[2] + 0.5)


def reference_piqe(rgb_uint8):
    """MATLAB piqe.m, block by block (one Python iteration per 16x16 block)."""
    img = _luma(rgb_uint8.astype(np.float64))
    h, w = img.shape
    img = np.pad(img, ((0, (-h) % 16), (0, (-w) % 16)), mode='edge')
    win = _window()
    mu = correlate(img, win, mode='nearest')
    sigma = np.sqrt(np.abs(correlate(img * img, win, mode='nearest') - mu * mu))
    imnorm = (img - mu) / (sigma + 1)
    total, n_active = 0.0, 0
    surround_cols = [c for c in range(16) if c not in (7, 9)]
    for i in range(0, img.shape[0], 16):
        for j in range(0, img.shape[1], 16):
            block = imnorm[i:i + 16, j:j + 16]
            v = np.var(block, ddof=1)
            if v <= 0.1:
                continue
            n_active += 1
            impaired = False
            for edge in (block[0, :], block[:, 15], block[15, :], block[:, 0]):
                for s in range(11):
                    if np.std(edge[s:s + 6], ddof=1) < 0.1:
                        impaired = True
                        break
                if impaired:
                    break
            sig = np.sqrt(v)
            c_std = np.std(np.concatenate([block[:, 7], block[:, 8]]), ddof=1)
            s_std = np.std(block[:, surround_cols], ddof=1)
            with np.errstate(invalid='ignore', divide='ignore'):
                r = c_std / s_std
                r = 0.0 if np.isnan(r) else r
                beta = abs(sig - r) / max(sig, r)
            noisy = sig > 2 * beta
            total += impaired * (1 - v) + noisy * v
    return 100 * (total + 1) / (n_active + 1)


def _ref_tables():
    gam = np.arange(0.2, 10.0005, 0.001)
    return gam, gamma_fn(1 / gam) * gamma_fn(3 / gam) / gamma_fn(2 / gam)**2


def reference_brisque(rgb_uint8):
    """brisque_feature.m line by line in NumPy (brute-force grid search)."""
    gam, r_gam = _ref_tables()
    r_gam_aggd = 1 / r_gam
    img = _luma(rgb_uint8.astype(np.float64))
    win = _window()
    feat = []
    for scale in range(2):
        mu = correlate(img, win, mode='constant')
        sigma = np.sqrt(np.abs(correlate(img * img, win, mode='constant') - mu * mu))
        st = (img - mu) / (sigma + 1)
        st[np.abs(st) < 1e-9] = 0  # as ours: floating residue of flat neighbourhoods
        v = st.ravel()
        sigma_sq = np.mean(v**2)
        rho = sigma_sq / np.mean(np.abs(v))**2
        feat += [gam[np.argmin(np.abs(rho - r_gam))], sigma_sq]
        for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):
            pair = (st * np.roll(st, shift, axis=(0, 1))).ravel()
            left = np.sqrt(np.mean(pair[pair < 0]**2))
            right = np.sqrt(np.mean(pair[pair > 0]**2))
            g = left / right
            rhat = np.mean(np.abs(pair))**2 / np.mean(pair**2)
            rhatnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1)**2
            alpha = gam[np.argmin((r_gam_aggd - rhatnorm)**2)]
            const = np.sqrt(gamma_fn(1 / alpha)) / np.sqrt(gamma_fn(3 / alpha))
            eta = (right - left) * gamma_fn(2 / alpha) / gamma_fn(1 / alpha) * const
            feat += [alpha, eta, left**2, right**2]
        if scale == 0:
            img = imresize(torch.from_numpy(img), 0.5).numpy()  # MATLAB imresize(., 0.5)
    return np.array(feat)


# ----------------------------------------------------------------------------- timing


def _time(fn, repeats):
    fn()  # warm-up (tables, caches)
    best = float('inf')
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _soft_backward(f):

    def run(x):
        x = x.clone().requires_grad_()
        f(x).sum().backward()
        return x.grad

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=3, help='timed repeats at 512x512 (best is reported)')
    ap.add_argument('--repeats-4k', type=int, default=1, help='timed repeats at 3840x2160')
    ap.add_argument('--sizes', nargs='+', default=list(SIZES), choices=list(SIZES))
    ap.add_argument('--threads', type=int, default=None, help='torch intra-op threads (default: torch default)')
    ap.add_argument('--backward-4k', action='store_true', help='also time soft forward+backward at 4K')
    ap.add_argument('--no-reference', action='store_true', help='skip the reference loops')
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = []
    for size in args.sizes:
        h, w = SIZES[size]
        rng = np.random.default_rng(0)
        # natural-ish test image: smooth shading + texture + noise, uint8 RGB
        base = np.kron(rng.uniform(60, 200, (h // 16 + 1, w // 16 + 1, 3)), np.ones((16, 16, 1)))[:h, :w]
        rgb = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).round().astype(np.uint8)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        x64 = torch.from_numpy(rgb).permute(2, 0, 1)[None].double() / 255
        reps = args.repeats if size == '512x512' else args.repeats_4k
        methods = [
            ('brisque exact (f64)', lambda: brisque_features(x64)),
            ('brisque soft (f32)', lambda: brisque_features(x, soft=True)),
            ('piqe exact (f64)', lambda: piqe(x64)),
            ('piqe soft (f32)', lambda: piqe(x, soft=True)),
        ]
        if size == '512x512' or args.backward_4k:
            methods += [
                ('brisque soft fwd+bwd (f32)', lambda: _soft_backward(lambda t: brisque_features(t, soft=True))(x)),
                ('piqe soft fwd+bwd (f32)', lambda: _soft_backward(lambda t: piqe(t, soft=True).score)(x)),
            ]
        if not args.no_reference:
            bgr_free = rgb  # the references take the RGB uint8 array
            ours_p = float(piqe(x64).score[0])
            ref_p = reference_piqe(bgr_free)
            ours_b = brisque_features(x64)[0].numpy()
            ref_b = reference_brisque(bgr_free)
            assert abs(ours_p - ref_p) < 0.01, (ours_p, ref_p)
            assert np.allclose(ours_b, ref_b, rtol=1e-3, atol=1e-9), np.abs(ours_b - ref_b).max()
            methods += [('brisque reference loop (numpy)', lambda: reference_brisque(bgr_free)),
                        ('piqe reference per-block loop (numpy)', lambda: reference_piqe(bgr_free))]
        for name, fn in methods:
            sec = _time(fn, reps)
            rows.append({'size': size, 'method': name, 'seconds_per_image': sec, 'images_per_s': 1.0 / sec,
                         'repeats': reps})
            print(f'  {size:>10}  {name:<38} {sec * 1000:10.1f} ms  {1 / sec:8.3f} img/s', flush=True)

    # speed-ups vs references
    for size in args.sizes:
        ref = {r['method'].split()[0]: r['seconds_per_image'] for r in rows
               if r['size'] == size and 'reference' in r['method']}
        for r in rows:
            if r['size'] == size and 'reference' not in r['method'] and r['method'].split()[0] in ref:
                r['speedup_vs_reference'] = ref[r['method'].split()[0]] / r['seconds_per_image']

    print()
    print('| size | method | ms / image | images / s | x reference |')
    print('|---|---|---:|---:|---:|')
    for r in rows:
        sp = r.get('speedup_vs_reference')
        print(f"| {r['size']} | {r['method']} | {r['seconds_per_image'] * 1000:.1f} | {r['images_per_s']:.3f} | "
              f"{'' if sp is None else f'{sp:.1f}'} |")
    info = {'benchmark': 'iqa_speed', 'device': 'cpu', 'threads': torch.get_num_threads(),
            'cpu_count': os.cpu_count(), 'loadavg_1min_at_end': os.getloadavg()[0],
            'torch': torch.__version__, 'python': platform.python_version(), 'rows': rows}
    print(json.dumps(info))


if __name__ == '__main__':
    main()
