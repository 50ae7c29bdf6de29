"""Throughput and memory of the TripleD feature stage.

    python benchmarks/distill_throughput.py [--num 256] [--size 512] [--format jpg]
        [--backbone vit_small_patch16_224] [--input-size 128] [--batch-size 32] [--num-workers 2]
        [--device auto] [--out RESULTS.md]

1. ViT forward alone: images/s on pre-decoded, pre-resized tensors (the ceiling).
2. End to end: images/s of the feature stage (read + reduced decode + views + forward +
   memmap write) on N synthetic pairs. Target: >= 0.8 x the forward alone.
3. Peak RSS of a whole `run_distill` (features, k-means, scores, selection, write) at N and
   4N pairs, each in a fresh process. Target: far from 4x.

    python benchmarks/distill_throughput.py --crop-units 640 [--uhd-pairs 2] [--input-size 128]

4. Crop units of UHD pairs (3840x2160, JPEG and PNG): units/s of the feature stage's decode
   (every kind's views, no forward) when each crop is cut from one reduced decode of its
   frame (the distiller's path) against encoding each crop and decoding it at reduced size.

Random-initialised weights (no network). Data: synthetic GT/LQ pairs in a temp dir.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def make_data(root, num, size, fmt):
    import cv2
    import numpy as np

    from tripled_basicsr.data.pair_folders import write_pair_folders
    from tripled_basicsr.distill._testing import synthetic_image
    rng = np.random.default_rng(0)
    params = [cv2.IMWRITE_JPEG_QUALITY, 92] if fmt == 'jpg' else [cv2.IMWRITE_PNG_COMPRESSION, 1]

    def pairs():
        for i in range(num):
            gt = synthetic_image(rng, size, i % 4)
            lq = np.clip(gt.astype(np.int16) + rng.integers(-12, 13, gt.shape), 0, 255).astype(np.uint8)
            yield f'{i:06d}', gt, lq

    return write_pair_folders(root, pairs(), ext=f'.{fmt}', params=params)


def options(gt, lq, out, a):
    return {'name': 'bench', 'source': {'dataroot_gt': gt, 'dataroot_lq': lq},
            'output': {'path': out, 'overwrite': True},
            'features': {'backbone': a.backbone, 'pretrained': False, 'input_size': a.input_size,
                         'batch_size': a.batch_size, 'num_workers': a.num_workers, 'device': a.device},
            'selection': {'ratio': 0.02}, 'calibration': {'enabled': False}, 'report': {'plot': False}}


def forward_alone(a, num):
    import torch

    from tripled_basicsr.distill.backbone import build_backbone, embed, normalization
    from tripled_basicsr.utils.device import resolve_device
    dev = resolve_device(a.device)
    model = build_backbone(a.backbone, False, None, a.input_size).to(dev)
    mean, std = normalization(model)
    x = torch.rand(a.batch_size, 3, a.input_size, a.input_size, device=dev)
    with torch.no_grad():
        embed(model, x, mean, std)  # warm-up
        t0 = time.time()
        done = 0
        while done < num:
            b = min(a.batch_size, num - done)
            with torch.autocast(dev.type, enabled=dev.type == 'cuda'):
                f, _ = embed(model, x[:b], mean, std)
            f.cpu()
            done += b
    return num / (time.time() - t0)


def features_end_to_end(a, gt, lq, work):
    from tripled_basicsr.data.paired_source import PairedSource
    from tripled_basicsr.distill.backbone import build_backbone
    from tripled_basicsr.distill.features import FeatureStore, extract_features
    from tripled_basicsr.distill.options import merge_options
    opt = merge_options(options(gt, lq, work + '_out', a))
    src = PairedSource(gt, lq)
    model = build_backbone(a.backbone, False, None, a.input_size)
    store = FeatureStore(work, len(src), 1, model.num_features, {'bench': time.time()})
    t0 = time.time()
    info = extract_features(src, store, model, opt['features'], progress=False)
    return len(src) / (time.time() - t0), info


class _PerCrop:
    """A CropSource without ``read_reduced``: the feature stage falls back to decoding each
    crop's encoded bytes (the per-crop path, for comparison)."""

    def __init__(self, src):
        self._src = src

    def __len__(self):
        return len(self._src)

    def __getattr__(self, name):
        if name == 'read_reduced':
            raise AttributeError(name)
        return getattr(self._src, name)


def crop_units(a):
    """Section 4: -> rows of (format, path, units/s, x per-crop)."""
    import cv2
    import numpy as np

    from tripled_basicsr.data.pair_folders import write_pair_folders
    from tripled_basicsr.data.paired_source import PairedSource
    from tripled_basicsr.distill.crops import CropSource
    from tripled_basicsr.distill.features import EmbedInputs
    rng = np.random.default_rng(0)
    frames = [cv2.GaussianBlur(cv2.resize(rng.integers(0, 256, (270, 480, 3), dtype=np.uint8), (3840, 2160),
                                          interpolation=cv2.INTER_CUBIC), (0, 0), 2) for _ in range(a.uhd_pairs)]
    decode = a.input_size * 2  # features.decode_size: auto with local_views 0
    tmp = tempfile.mkdtemp(prefix='tripled_bench_crops_')
    rows = []
    for fmt, params in (('jpg', [cv2.IMWRITE_JPEG_QUALITY, 92]), ('png', [cv2.IMWRITE_PNG_COMPRESSION, 1])):
        gt, lq = write_pair_folders(os.path.join(tmp, fmt), ((f'{i:04d}', f, f) for i, f in enumerate(frames)),
                                    ext=f'.{fmt}', params=params)
        rates = {}
        for r in range(a.repeats):  # interleaved A/B: a shared machine changes speed over minutes
            for name, wrap in (('per-crop encode + reduced decode', _PerCrop), ('one reduced decode per frame', None)):
                src = CropSource(PairedSource(gt, lq), a.crop_units)
                ds = EmbedInputs(wrap(src) if wrap else src, ('gt',), a.input_size, 0, decode, 0)
                t0 = time.time()
                for i in range(len(ds)):
                    assert not ds[i][3], ds[i][3]
                rates.setdefault(name, []).append(len(ds) / (time.time() - t0))
        base = sorted(rates['per-crop encode + reduced decode'])[a.repeats // 2]
        for name, v in rates.items():
            med = sorted(v)[a.repeats // 2]
            rows.append({'format': fmt, 'path': name, 'units': len(ds), 'units_per_s': round(med, 2),
                         'vs_per_crop': round(med / base, 2)})
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    return rows


def child_peak_rss(opt_path):
    code = ('import json,resource,sys,time; import tripled_basicsr; from tripled_basicsr.distill import run_distill;'
            'from tripled_basicsr.utils.io import load_yaml_safe; t=time.time();'
            f's=run_distill(load_yaml_safe({opt_path!r}), progress=False);'
            'print("RESULT", json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024,'
            '"seconds": time.time()-t, "n": s["n"], "N": s["N"]}))')
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    line = [ln for ln in r.stdout.splitlines() if ln.startswith('RESULT')][-1]
    return json.loads(line[len('RESULT '):])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--num', type=int, default=256)
    p.add_argument('--size', type=int, default=512)
    p.add_argument('--format', default='jpg', choices=('jpg', 'png'))
    p.add_argument('--backbone', default='vit_small_patch16_224')
    p.add_argument('--input-size', type=int, default=128)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--num-workers', type=int, default=2)
    p.add_argument('--device', default='auto')
    p.add_argument('--repeats', type=int, default=3, help='interleaved forward/end-to-end repeats (median)')
    p.add_argument('--skip-memory', action='store_true')
    p.add_argument('--out', default=None, help='append the markdown table to this file')
    p.add_argument('--crop-units', type=int, default=0, metavar='CROP',
                   help='only section 4: CROP-px crop units of 3840x2160 pairs, decode paths compared')
    p.add_argument('--uhd-pairs', type=int, default=2)
    a = p.parse_args(argv)
    import yaml

    import torch
    if a.crop_units:
        rows = crop_units(a)
        print(f'\n### crop units: {a.crop_units}-px crops of {a.uhd_pairs} 3840x2160 frames, decode for '
              f'{a.input_size}-px views, median of {a.repeats}\n')
        print('| format | path | units | units/s | x per-crop |\n|---|---|---|---|---|')
        for r in rows:
            print(f'| {r["format"]} | {r["path"]} | {r["units"]} | {r["units_per_s"]:.2f} | {r["vs_per_crop"]:.2f} |')
        print(json.dumps({'benchmark': 'distill_crop_units', 'crop': a.crop_units, 'rows': rows}))
        return

    tmp = tempfile.mkdtemp(prefix='tripled_bench_')
    gt, lq = make_data(os.path.join(tmp, 'n'), a.num, a.size, a.format)
    # interleaved A/B repeats: other jobs on a shared machine change the speed over minutes
    fwds, e2es = [], []
    for r in range(a.repeats):
        fwds.append(forward_alone(a, a.num))
        e2es.append(features_end_to_end(a, gt, lq, os.path.join(tmp, f'work_e2e{r}'))[0])
    ratios = sorted(e / f for e, f in zip(e2es, fwds))
    fwd, e2e = sorted(fwds)[len(fwds) // 2], sorted(e2es)[len(e2es) // 2]
    rows = [('ViT forward alone (pre-decoded tensors)', f'{fwd:.1f} img/s',
             f'median of {a.repeats}: ' + ', '.join(f'{v:.1f}' for v in fwds)),
            ('features end to end (read+decode+forward+write)', f'{e2e:.1f} img/s',
             f'median of {a.repeats}: ' + ', '.join(f'{v:.1f}' for v in e2es)),
            ('ratio end to end / forward alone (paired runs)', f'{ratios[len(ratios) // 2]:.2f}',
             'per pair: ' + ', '.join(f'{v:.2f}' for v in ratios) + ' (target >= 0.8)')]
    if not a.skip_memory:
        gt4, lq4 = make_data(os.path.join(tmp, 'n4'), 4 * a.num, a.size, a.format)
        mem = []
        for tag, (g, q) in (('N', (gt, lq)), ('4N', (gt4, lq4))):
            path = os.path.join(tmp, f'{tag}.yml')
            with open(path, 'w') as f:
                yaml.safe_dump(options(g, q, os.path.join(tmp, f'out_{tag}'), a), f)
            mem.append(child_peak_rss(path))
        rows.append((f'peak RSS, whole run, N = {mem[0]["N"]}', f'{mem[0]["rss_mb"]:.0f} MB',
                     f'{mem[0]["seconds"]:.1f} s'))
        rows.append((f'peak RSS, whole run, 4N = {mem[1]["N"]}', f'{mem[1]["rss_mb"]:.0f} MB',
                     f'{mem[1]["seconds"]:.1f} s; x{mem[1]["rss_mb"] / mem[0]["rss_mb"]:.2f} of N (target: far from 4x)'))
    dev = 'cuda' if (a.device == 'auto' and torch.cuda.is_available()) else (a.device if a.device != 'auto' else 'cpu')
    head = (f'\n### distill throughput: {a.backbone} @ {a.input_size}px, batch {a.batch_size}, {a.num_workers} '
            f'workers, {dev} ({torch.get_num_threads()} threads), {a.num} x {a.size}px {a.format.upper()} pairs\n\n'
            '| measurement | value | note |\n|---|---|---|\n')
    table = head + '\n'.join(f'| {r[0]} | {r[1]} | {r[2]} |' for r in rows) + '\n'
    print(table)
    if a.out:
        with open(a.out, 'a', encoding='utf-8') as f:
            f.write(table)
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
