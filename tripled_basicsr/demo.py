"""The main job on embedded data: generate -> pack -> train a stock BasicSR arch -> test.

    python -m tripled_basicsr.demo [--workdir demo_run] [--iters 300] [--overwrite]

Runs on CPU in a few minutes with data generated from images that ship with installed
packages (``tripled_basicsr.demo_data``), so it needs no download. Every step is the
command a user would run by hand; the YAML files it trains and tests with are written to
``WORKDIR/options/`` so they can be read and re-run:

1. ``python -m tripled_basicsr.demo_data --task noise ...`` -> WORKDIR/data/{train,val}/{gt,lq}
2. ``python -m tripled_basicsr.pack ...``                -> WORKDIR/data/train_packed (full set)
3. ``python -m tripled_basicsr.train -opt WORKDIR/options/train_demo.yml`` (stock SRVGGNetCompact
   1x on TripleDDataset, stock BasicSR training loop)
4. ``python -m tripled_basicsr.test -opt WORKDIR/options/test_demo.yml`` (PSNR/SSIM)

and prints a short summary (PSNR of the input vs. the trained model on the val set).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time

import yaml


def _run(cmd, cwd, log):
    print(f'$ {" ".join(cmd)}', flush=True)
    t = time.time()
    with open(log, 'a', encoding='utf-8') as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        f.write(proc.stdout)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], file=sys.stderr)
        raise SystemExit(f'demo: step failed (exit {proc.returncode}): {" ".join(cmd)}; full log in {log}')
    print(f'  done in {time.time() - t:.1f} s', flush=True)
    return proc.stdout


def train_options(name, train_root, val_root, iters, batch, patch):
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 1, 'num_gpu': 'auto', 'manual_seed': 0,
        'datasets': {
            'train': {'name': 'demo_train', 'type': 'TripleDDataset', 'dataroot': train_root,
                      'io_backend': {'type': 'lmdb'}, 'gt_size': patch, 'use_hflip': True, 'use_rot': True,
                      'num_worker_per_gpu': 1, 'batch_size_per_gpu': batch, 'dataset_enlarge_ratio': 1,
                      'prefetch_mode': None},
            'val': {'name': 'demo_val', 'type': 'TripleDDataset', 'dataroot': val_root,
                    'io_backend': {'type': 'lmdb'}},
        },
        # the small stock arch of DESIGN.md section 8's evidence (a residual VGG-style net, 1x)
        'network_g': {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 32, 'num_conv': 8,
                      'upscale': 1, 'act_type': 'prelu'},
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [iters], 'restart_weights': [1],
                                'eta_min': 1e-5},
                  'total_iter': iters, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': max(iters // 2, 1), 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}},
        'logger': {'print_freq': max(iters // 10, 1), 'save_checkpoint_freq': max(iters // 2, 1),
                   'use_tb_logger': False},
    }


def test_options(name, val_root, weights, network):
    return {
        'name': name, 'model_type': 'SRModel', 'scale': 1, 'num_gpu': 'auto', 'manual_seed': 0,
        'datasets': {'test_1': {'name': 'demo_val', 'type': 'TripleDDataset', 'dataroot': val_root,
                                'io_backend': {'type': 'lmdb'}}},
        'network_g': network,
        'path': {'pretrain_network_g': weights, 'strict_load_g': True, 'param_key_g': 'params'},
        'val': {'save_img': False, 'suffix': None,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False},
                            'ssim': {'type': 'calculate_ssim', 'crop_border': 0, 'test_y_channel': False}}},
    }


def input_psnr(root):
    """Mean PSNR of LQ against GT over a distilled/packed dir (the 'do nothing' baseline)."""
    import numpy as np
    from basicsr.metrics import calculate_psnr

    import tripled_basicsr  # noqa: F401
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    ds = TripleDDataset({'dataroot': root, 'phase': 'val', 'io_backend': {'type': 'lmdb'}})
    vals = [calculate_psnr(ds.read_image(i, 'lq'), ds.read_image(i, 'gt'), crop_border=0) for i in range(len(ds))]
    ds.close()
    return float(np.mean(vals))


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m tripled_basicsr.demo', description=__doc__.split('\n\n')[0])
    p.add_argument('--workdir', default='demo_run', help='everything goes here (default: ./demo_run)')
    p.add_argument('--task', default='noise', help='demo_data task (noise, blur, jpeg, rain, haze, lowlight)')
    p.add_argument('--num', type=int, default=200, help='training pairs to generate')
    p.add_argument('--size', default='96', help='training image size')
    p.add_argument('--iters', type=int, default=300, help='training iterations')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--patch', type=int, default=48)
    p.add_argument('--overwrite', action='store_true', help='delete an existing --workdir first')
    args = p.parse_args(argv)

    work = os.path.abspath(args.workdir)
    if os.path.exists(work):
        if not args.overwrite:
            raise SystemExit(f'demo: {work} already exists; pass --overwrite to start again or choose --workdir.')
        shutil.rmtree(work)
    os.makedirs(os.path.join(work, 'options'))
    log = os.path.join(work, 'demo.log')
    py = sys.executable
    t0 = time.time()
    data = os.path.join(work, 'data')

    print('[1/4] generate paired demo data (offline, deterministic)')
    _run([py, '-m', 'tripled_basicsr.demo_data', '--task', args.task, '--num', str(args.num), '--size', args.size,
          '--seed', '0', '--out', os.path.join(data, 'train')], work, log)
    _run([py, '-m', 'tripled_basicsr.demo_data', '--task', args.task, '--num', '8', '--size', '128', '--seed', '1000',
          '--out', os.path.join(data, 'val')], work, log)

    print('[2/4] pack into the distilled-LMDB format')
    for split in ('train', 'val'):
        _run([py, '-m', 'tripled_basicsr.pack', '--gt', os.path.join(data, split, 'gt'), '--lq',
              os.path.join(data, split, 'lq'), '--out', os.path.join(data, f'{split}_packed'), '--quiet'], work, log)

    print('[3/4] train a stock BasicSR arch (SRVGGNetCompact, 1x) with the stock training loop')
    opt = train_options('demo_srvgg', os.path.join(data, 'train_packed'), os.path.join(data, 'val_packed'),
                        args.iters, args.batch, args.patch)
    train_yml = os.path.join(work, 'options', 'train_demo.yml')
    with open(train_yml, 'w') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    _run([py, '-m', 'tripled_basicsr.train', '-opt', train_yml], work, log)

    print('[4/4] test on the held-out demo set')
    weights = os.path.join(work, 'experiments', 'demo_srvgg', 'models', 'net_g_latest.pth')
    test_yml = os.path.join(work, 'options', 'test_demo.yml')
    with open(test_yml, 'w') as f:
        yaml.safe_dump(test_options('demo_srvgg_test', os.path.join(data, 'val_packed'), weights,
                                    opt['network_g']), f, sort_keys=False)
    out = _run([py, '-m', 'tripled_basicsr.test', '-opt', test_yml], work, log)
    psnr = re.findall(r'# psnr: ([0-9.]+)', out)
    ssim = re.findall(r'# ssim: ([0-9.]+)', out)
    base = input_psnr(os.path.join(data, 'val_packed'))
    print('\nsummary')
    print(f'  task {args.task}, {args.num} training pairs, {args.iters} iterations, {time.time() - t0:.0f} s in all')
    print(f'  val PSNR of the input (LQ vs GT): {base:.2f} dB')
    if psnr:
        print(f'  val PSNR / SSIM of the trained model: {float(psnr[-1]):.2f} dB / {float(ssim[-1]):.4f}'
              f'  (gain {float(psnr[-1]) - base:+.2f} dB)')
    print(f'  options: {work}/options, experiments: {work}/experiments, log: {log}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
