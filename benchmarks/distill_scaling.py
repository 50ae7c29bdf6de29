"""Distillation throughput at N, 4N and 16N frames: Mpx/s per stage, peak memory, PNG decode as the bound.

Real-looking frames (smooth shading, edges, texture of varying strength: the loader benchmark's
``make_frame``) at 1920x1080, 2560x1440 and 3840x2160 in turn, GT and LQ (= GT + Gaussian noise
sigma 10, scale 1) as PNG (compression 1). For each pool size, in a fresh process each:

  * ``decode``: every GT and LQ PNG of the pool read and decoded once (``cv2.imread``), one thread:
    the least work any stage that looks at every pixel can do;
  * ``distill``: ``run_distill`` with the distiller's defaults (what a stand-alone distill does with
    only source, output, ratio and seed: crop units at ``crop_size: auto``, ``tripled_stats``
    features when no ViT weights can be had, ``importance`` selection with its proxy difficulty),
    plus ``--num-workers`` decode workers for the feature and difficulty stages. Seconds and Mpx/s
    (GT pixels of the pool / stage seconds) of every stage the summary times, peak RSS of the
    largest process.

The pools are nested (the first N frames of 4N, of 16N; hard links), so time per Mpx compares
like with like. Last, the projection for a 10,000-frame 3840x2160 pool from the largest run.

    OMP_NUM_THREADS=1 python benchmarks/distill_scaling.py [--base 4] [--factors 1 4 16] [--num-workers 1]
    python benchmarks/distill_scaling.py --quick      # smoke run (seconds; numbers not meaningful)

Prints the table and, last, one JSON line.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from loader_throughput import degrade, make_frame

SIZES = ((1080, 1920), (1440, 2560), (2160, 3840))
UHD_FRAMES, UHD_PX = 10000, 3840 * 2160
STAGES = ('setup', 'features', 'difficulty', 'kmeans', 'scoring', 'selection', 'mmd', 'write', 'total')


def make_pool(root, count, sizes, seed=0):
    """``root/all/{gt,lq}`` with ``count`` frames; returns [(gt path, lq path, GT pixels)]."""
    rng = np.random.default_rng(seed)
    out = []
    for w in ('gt', 'lq'):
        os.makedirs(os.path.join(root, 'all', w), exist_ok=True)
    for i in range(count):
        h, wd = sizes[i % len(sizes)]
        paths = [os.path.join(root, 'all', w, f'{i:05d}.png') for w in ('gt', 'lq')]
        if not all(os.path.exists(p) for p in paths):
            gt = make_frame(rng, h, wd)
            lq = degrade(rng, gt, 1)
            for p, img in zip(paths, (gt, lq)):
                cv2.imwrite(p + '.tmp.png', img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
                os.replace(p + '.tmp.png', p)
        out.append((*paths, h * wd))
    return out


def linked_pool(root, frames, n):
    """``root/n{n}/{gt,lq}``: hard links to the first ``n`` frames."""
    d = os.path.join(root, f'n{n}')
    for k, w in enumerate(('gt', 'lq')):
        os.makedirs(os.path.join(d, w), exist_ok=True)
        for f in frames[:n]:
            dst = os.path.join(d, w, os.path.basename(f[k]))
            if not os.path.exists(dst):
                os.link(f[k], dst)
    return os.path.join(d, 'gt'), os.path.join(d, 'lq')


def decode_alone(frames):
    cv2.setNumThreads(1)
    t = time.perf_counter()
    for gt, lq, _ in frames:
        for p in (gt, lq):
            if cv2.imread(p, cv2.IMREAD_UNCHANGED) is None:
                raise RuntimeError(f'cannot decode {p}')
    return time.perf_counter() - t


CHILD = '''
import json, resource, sys, time
from tripled_basicsr.distill import run_distill
opt = json.loads(sys.argv[1])
t = time.time()
s = run_distill(opt, progress=False)
me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("RESULT", json.dumps({"seconds": time.time() - t, "timings": s["timings"], "N": s["N"], "n": s["n"],
                            "units": s.get("units"), "rss_mb": max(me, kids) / 1024}))
'''


def distill(gt, lq, out, ratio, workers):
    opt = {'source': {'dataroot_gt': gt, 'dataroot_lq': lq}, 'output': {'path': out},
           'selection': {'ratio': ratio, 'seed': 0}, 'features': {'num_workers': workers}}
    r = subprocess.run([sys.executable, '-c', CHILD, json.dumps(opt)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads([ln for ln in r.stdout.splitlines() if ln.startswith('RESULT')][-1][len('RESULT '):])


def projection(row):
    """Hours for UHD_FRAMES 4K frames from one run's seconds per GT Mpx (linear in N): the feature
    stage and the proxy difficulty split over every process (torchrun ranks x decode workers); the
    write's reads over the decode workers of rank 0 (one machine); clustering, scoring, selection
    and the report work per unit on rank 0. Assumes 16 decode workers per 16-core machine."""
    per_mpx = {k: row['stages_s'][k] / row['gt_mpx'] for k in STAGES}
    uhd_mpx = UHD_FRAMES * UHD_PX / 1e6
    out = {}
    for label, machines in (('1 core', 0), ('16 cores', 1), ('4 x 16 cores', 4)):
        procs, local = max(1, 16 * machines), 16 if machines else 1
        sec = (per_mpx['features'] + per_mpx['difficulty']) / procs + per_mpx['write'] / local + \
            sum(per_mpx[k] for k in ('kmeans', 'scoring', 'selection', 'mmd'))
        out[label] = round(sec * uhd_mpx / 3600, 2)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--base', type=int, default=4, help='N: frames of the smallest pool')
    ap.add_argument('--factors', type=int, nargs='+', default=[1, 4, 16])
    ap.add_argument('--ratio', type=float, default=0.02)
    ap.add_argument('--num-workers', type=int, default=1, help='features.num_workers of the distill runs')
    ap.add_argument('--workdir', default=None, help='keep the generated pools here (reused when run again)')
    ap.add_argument('--quick', action='store_true', help='2 and 4 small frames')
    a = ap.parse_args(argv)
    sizes = SIZES
    if a.quick:
        a.base, a.factors, a.ratio, sizes = 2, [1, 2], 0.1, ((240, 320), (360, 480))
    if a.workdir:  # a folder of ours (created, or reused when an earlier run made it), never a user's
        from tripled_basicsr.utils.ownership import prepare_output_dir
        try:
            work = prepare_output_dir(a.workdir, tool='distill_scaling', reuse=True,
                                      layout=('all', 'n*', 'out_n*.lmdb', 'out_n*.lmdb.work'))
        except (OSError, ValueError) as exc:
            raise SystemExit(f'distill_scaling: error: --workdir: {exc}') from None
    else:
        work = tempfile.mkdtemp(prefix='distill_scaling_')
    t0 = time.time()
    frames = make_pool(work, a.base * max(a.factors), sizes)
    rows = []
    for f in a.factors:
        n = a.base * f
        gt, lq = linked_pool(work, frames, n)
        mpx = sum(fr[2] for fr in frames[:n]) / 1e6
        dec = decode_alone(frames[:n])
        out = os.path.join(work, f'out_n{n}.lmdb')
        res = distill(gt, lq, out, a.ratio, a.num_workers)
        subprocess.run(['rm', '-rf', out, out + '.work'], check=True)
        tm = dict(res['timings'])
        tm['selection'] = tm.get('selection', 0.0) - tm.get('difficulty', 0.0)  # the summary times difficulty inside it
        rows.append({'frames': n, 'gt_mpx': round(mpx, 1), 'units': res['N'], 'picked': res['n'],
                     'decode_s': round(dec, 2), 'decode_mpx_s': round(mpx / dec, 1),
                     'stages_s': {k: round(tm.get(k, 0.0), 2) for k in STAGES},
                     'features_vs_decode': round(tm['features'] / dec, 2),
                     'rss_mb': round(res['rss_mb'])})
    head = ['frames', 'GT Mpx', 'units', 'decode s', 'decode Mpx/s'] + [f'{k} s' for k in STAGES] + \
        ['features / decode', 's per GT Mpx', 'peak RSS MB']
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---:|' * len(head))
    for r in rows:
        st = r['stages_s']
        cells = [r['frames'], r['gt_mpx'], r['units'], r['decode_s'], r['decode_mpx_s']] + [st[k] for k in STAGES] + \
            [r['features_vs_decode'], round(st['total'] / r['gt_mpx'], 4), r['rss_mb']]
        print('| ' + ' | '.join(str(c) for c in cells) + ' |')
    big = rows[-1]
    proj = projection(big)
    print(f'\nProjection for {UHD_FRAMES} frames of 3840x2160 ({UHD_FRAMES * UHD_PX / 1e9:.0f} Gpx GT) from the '
          f'{big["frames"]}-frame run (s per GT Mpx, linear in N): ' +
          ', '.join(f'{k}: {v} h' for k, v in proj.items()))
    print(json.dumps({'benchmark': 'distill_scaling', 'quick': a.quick, 'ratio': a.ratio, 'num_workers': a.num_workers,
                      'threads': os.environ.get('OMP_NUM_THREADS'), 'rows': rows, 'projection_h': proj,
                      'wall_s': round(time.time() - t0, 1)}))
    if not a.workdir:
        subprocess.run(['rm', '-rf', work], check=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
