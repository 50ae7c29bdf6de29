"""Training throughput of options/tripled_uhd.yml: iterations/s and data-wait fraction.

Runs BasicSR's own training pieces (``create_train_val_dataloader`` as patched by compat,
``build_model``, ``CPUPrefetcher``, ``model.optimize_parameters``) for a fixed number of
iterations, on the same generated pairs, with

  * ``tripled``:  TripleDDataset (tiled LMDB) + TripleDCurriculumSampler + TripleDModel,
    i.e. tripled_uhd.yml as written (shrunk);
  * ``tripled-nosampler``: TripleDDataset (tiled) + stock EnlargedSampler + SRModel, to
    separate the curriculum's own cost from the data format's;
  * ``stock``:    stock PairedImageDataset on whole-image LMDB of the same pairs + SRModel.

"Shrunk to CPU size" (defaults): 2048x1152 pairs instead of 3840x2160, 256-px tiles and
patches instead of 512, RRDBNet with 16 features and 1 block, batch 2. The data-wait
fraction is the time the loop spends blocked on the next batch divided by wall time, as
BasicSR's ``data_time``/``time`` columns. GPU numbers need a GPU (``--device cuda``, with
the full-size options ``--full``).

    python benchmarks/training_throughput.py [--iters 30] [--workers 1] [--pairs 8]

Prints a table and, last, one JSON line.
"""
import argparse
import copy
import json
import logging
import os
import shutil
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
import yaml

import tripled_basicsr

tripled_basicsr.register()  # components in BasicSR's registries, compat fixes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_sets(root, pairs, width, height, tile):
    """Same pairs twice: tiled distilled dir (with curriculum metadata) and whole-image LMDB."""
    from tripled_basicsr.data.distilled_format import DistilledWriter
    rng = np.random.default_rng(0)
    tiled, whole = os.path.join(root, 'tiled'), os.path.join(root, 'whole')
    with DistilledWriter(tiled, scale=1, tile_size=tile) as wt, DistilledWriter(whole, scale=1, tile_size=0) as ww:
        for i in range(pairs):
            small = rng.integers(0, 256, (height // 16, width // 16, 3)).astype(np.uint8)
            gt = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
            gt = np.clip(gt + rng.normal(0, 6, gt.shape), 0, 255).astype(np.uint8)  # texture
            lq = np.clip(gt * 0.3 + rng.normal(0, 8, gt.shape), 0, 255).astype(np.uint8)  # dark + noisy
            meta = dict(complexity=i / max(pairs - 1, 1), uncertainty=float(rng.uniform()),
                        stage=1 if i < pairs // 2 else 2, cluster=i % 2)
            wt.add(f'img{i:03d}', gt, lq, **meta)
            ww.add(f'img{i:03d}', gt, lq, **meta)
    return tiled, whole


def shrink(opt, args, dataroot, variant):
    opt = copy.deepcopy(opt)
    tr = opt['datasets']['train']
    opt['datasets'] = {'train': tr}
    opt.pop('val', None)
    opt['num_gpu'] = 0 if args.device == 'cpu' else 1
    if not args.full:
        tr.update(gt_size=args.patch, batch_size_per_gpu=args.batch, dataset_enlarge_ratio=100)
        opt['network_g'].update(num_feat=16, num_block=1, num_grow_ch=8)
    tr.update(num_worker_per_gpu=args.workers, prefetch_mode=None, pin_memory=False)
    if variant == 'stock':
        for k in ('type', 'dataroot', 'sampler'):
            tr.pop(k, None)
        tr.update(type='PairedImageDataset', dataroot_gt=os.path.join(dataroot, 'gt.lmdb'),
                  dataroot_lq=os.path.join(dataroot, 'lq.lmdb'), io_backend={'type': 'lmdb'})
        opt['model_type'] = 'SRModel'
    else:
        tr['dataroot'] = dataroot
        if variant == 'tripled-nosampler':
            tr.pop('sampler')
            opt['model_type'] = 'SRModel'
    opt['train']['total_iter'] = args.iters + args.warmup
    opt['train'].pop('curriculum', None) if opt['model_type'] == 'SRModel' else None
    opt['train']['scheduler'] = {'type': 'MultiStepLR', 'milestones': [10 ** 9], 'gamma': 0.5}
    opt['train']['ema_decay'] = 0
    # what parse_options adds
    opt.update(is_train=True, dist=False, rank=0, world_size=1, root_path=args.workdir, auto_resume=False,
               name=f'bench_{variant}')
    opt['path'] = {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}
    for phase, ds in opt['datasets'].items():
        ds.update(phase=phase, scale=opt['scale'])
    opt['network_g'].setdefault('scale', opt['scale'])
    return opt


def run(opt, args):
    import basicsr.train as bt
    from basicsr.data.prefetch_dataloader import CPUPrefetcher
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed
    set_random_seed(0)
    logger = logging.getLogger('basicsr')
    train_loader, sampler, _, _, _ = bt.create_train_val_dataloader(opt, logger)  # compat-patched
    model = build_model(opt)
    prefetcher = CPUPrefetcher(train_loader)
    sampler.set_epoch(0)
    prefetcher.reset()
    wait = 0.0
    it, t0 = 0, None
    while it < args.warmup + args.iters:
        t = time.perf_counter()
        data = prefetcher.next()
        if data is None:
            prefetcher.reset()
            continue
        if it >= args.warmup:
            wait += time.perf_counter() - t
        it += 1
        if it == args.warmup:
            t0 = time.perf_counter()
        model.feed_data(data)
        model.optimize_parameters(it)
    wall = time.perf_counter() - t0
    return {'it_per_s': args.iters / wall, 'data_wait': wait / wall, 'samples_per_s': args.iters * args.batch / wall}


def sampler_cost(sizes=(1000, 10000, 100000), steps=50, batch=8):
    """Main-process cost of one lazily drawn global step (stage 2, online uncertainty on)."""
    from tripled_basicsr.data.curriculum_sampler import TripleDCurriculumSampler

    class Meta:  # per-sample arrays only
        def __init__(self, n):
            r = np.random.default_rng(0)
            self.keys = [f'k{i}' for i in range(n)]
            self.complexity, self.uncertainty = r.uniform(size=n), r.uniform(size=n)
            self.stage = np.where(self.complexity < 0.5, 1, 2)

        def __len__(self):
            return len(self.keys)

    out = {}
    for n in sizes:
        s = TripleDCurriculumSampler(Meta(n), batch_size=batch, total_iter=steps * 2, stage2_start=0)
        t = time.perf_counter()
        for step in range(steps):
            idx = s.draw(step)
            s.update(idx, np.random.default_rng(step).uniform(size=len(idx)), step=step)
        out[n] = (time.perf_counter() - t) / steps * 1e3
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--options', default=os.path.join(REPO, 'options', 'tripled_uhd.yml'))
    p.add_argument('--pairs', type=int, default=8)
    p.add_argument('--size', default='2048x1152', help='WxH of the generated pairs')
    p.add_argument('--tile', type=int, default=256)
    p.add_argument('--patch', type=int, default=256)
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--iters', type=int, default=30)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--workers', type=int, default=1)
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    p.add_argument('--full', action='store_true', help='keep the recipe network, patch and batch (GPU)')
    p.add_argument('--variants', nargs='+', default=['tripled', 'tripled-nosampler', 'stock'])
    p.add_argument('--workdir', default=None, help='keep data and experiments here (default: a temp dir, removed)')
    args = p.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) - args.workers))
    w, h = map(int, args.size.lower().split('x'))
    if args.full:
        args.batch = None
    own_tmp = args.workdir is None
    tmp = args.workdir = args.workdir or tempfile.mkdtemp(prefix='tripled_tp_')
    try:
        t = time.perf_counter()
        tiled, whole = make_sets(os.path.join(tmp, 'data'), args.pairs, w, h, args.tile)
        print(f'generated {args.pairs} pairs {w}x{h} (tiled {args.tile} + whole) in {time.perf_counter() - t:.1f}s',
              file=sys.stderr)
        with open(args.options) as f:
            base = yaml.safe_load(f)
        if args.full:
            args.batch = base['datasets']['train']['batch_size_per_gpu']
        results = {}
        for v in args.variants:
            opt = shrink(base, args, whole if v == 'stock' else tiled, v)
            results[v] = run(opt, args)
            print(f'{v}: {results[v]}', file=sys.stderr)
    finally:
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f'\ntripled_uhd.yml shrunk: {args.pairs} pairs {w}x{h}, patch {args.patch}, batch {args.batch}, '
          f'workers {args.workers}, {args.iters} iterations, device {args.device}\n')
    print('| variant | it/s | samples/s | data-wait fraction |\n|---|---:|---:|---:|')
    for v, r in results.items():
        print(f'| {v} | {r["it_per_s"]:.2f} | {r["samples_per_s"]:.2f} | {r["data_wait"]:.2f} |')
    cost = sampler_cost()
    print('\nTripleDCurriculumSampler, one global step of 8 draws + loss feedback (main process):')
    print('| samples N | ms per step |\n|---:|---:|')
    for n, ms in cost.items():
        print(f'| {n} | {ms:.2f} |')
    if 'stock' in results and 'tripled' in results:
        print(f'\ntripled / stock it/s: {results["tripled"]["it_per_s"] / results["stock"]["it_per_s"]:.2f}x')
    config = {k: v for k, v in vars(args).items() if k != 'workdir'}
    print(json.dumps({'config': config, 'results': results, 'sampler_ms_per_step': cost}))


if __name__ == '__main__':
    main()
