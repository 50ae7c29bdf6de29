"""The main job on embedded data: generate -> distill -> curriculum training -> test,
against the same stock arch trained on the full set.

    python -m tripled_basicsr.demo [--workdir demo_run] [--iters 300] [--ratio 0.05] [--overwrite]
                                   [--recipe options/distill_demo.yml]

Runs on CPU in a few minutes with data generated from images that ship with installed
packages (``tripled_basicsr.demo_data``), so it needs no download. Every step is the
command a user would run by hand; the YAML files it trains and tests with are written to
``WORKDIR/options/`` so they can be read and re-run:

1. ``python -m tripled_basicsr.demo_data --task noise ...`` -> WORKDIR/data/{train,val}/{gt,lq}
2. ``python -m tripled_basicsr.pack ...``   -> WORKDIR/data/{train,val}_packed (full sets)
3. ``python -m tripled_basicsr.distill -opt WORKDIR/options/distill_demo.yml``
   -> WORKDIR/data/train_tripled (``--ratio`` of the pool, with report.png); the recipe is
   ``options/distill_demo.yml`` as shipped, with only the paths and ``--ratio`` set by the demo
4. ``python -m tripled_basicsr.train -opt WORKDIR/options/train_tripled.yml``: stock
   SRVGGNetCompact (1x) on the distilled set, TripleDCurriculumSampler + TripleDModel,
   stock BasicSR training loop; then the same arch, iterations and batch on the full set
   (``train_full.yml``, stock SRModel) unless ``--no-full``
5. ``python -m tripled_basicsr.test -opt WORKDIR/options/test_*.yml`` (PSNR/SSIM)

and prints a summary: PSNR of the input and of each model on the held-out set, and the
share of the full-data gain (PSNR - input PSNR) that the distilled set keeps. With a
random-init ViT (the demo runs offline) and a few hundred CPU iterations this is a smoke
test of the workflow, not a measurement of the method (benchmarks/RESULTS.md has those).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import yaml

from tripled_basicsr.utils.io import load_yaml_safe

# the recipe the demo runs (and docs/distill.md documents), in a source checkout
RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'options', 'distill_demo.yml')


def _run(cmd, cwd, log):
    print(f'$ {" ".join(cmd)}', flush=True)
    t = time.time()
    with open(log, 'a', encoding='utf-8') as f:
        # every step writes under the work dir: BasicSR's experiments/ and results/ follow the cwd only
        # while TRIPLED_BASICSR_ROOT is unset (the summary reads the weights from WORKDIR/experiments)
        env = {k: v for k, v in os.environ.items() if k != 'TRIPLED_BASICSR_ROOT'}
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        f.write(proc.stdout)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], file=sys.stderr)
        raise SystemExit(f'demo: step failed (exit {proc.returncode}): {" ".join(cmd)}; full log in {log}')
    print(f'  done in {time.time() - t:.1f} s', flush=True)
    return proc.stdout


def distill_options(src, out, ratio, recipe=RECIPE):
    """The recipe ``recipe`` (default options/distill_demo.yml) with the demo's paths and ratio.

    Only what the demo must decide is overridden: where the data is, where the subset goes
    (never over an existing one: ``overwrite: false``) and ``selection.ratio`` (``--ratio``).
    """
    if not os.path.isfile(recipe):
        raise SystemExit(f'demo: the distillation recipe {recipe} does not exist (the demo reads '
                         f'options/distill_demo.yml of a source checkout); pass --recipe PATH.')
    try:
        opt = load_yaml_safe(recipe)
    except ValueError as exc:
        raise SystemExit(f'demo: --recipe: {exc}') from None
    for section in ('source', 'output', 'selection'):
        if not isinstance(opt.get(section), dict):
            raise SystemExit(f'demo: --recipe {recipe} has no `{section}:` mapping; the demo fills in its '
                             f'{section} paths/values there.')
    opt['source'].update(dataroot_gt=os.path.join(src, 'gt'), dataroot_lq=os.path.join(src, 'lq'))
    opt['output'].update(path=out, overwrite=False)
    opt['selection']['ratio'] = ratio
    return opt


def train_options(name, train_root, val_root, iters, batch, patch, curriculum=False):
    return {
        'name': name, 'model_type': 'TripleDModel' if curriculum else 'SRModel', 'scale': 1, 'num_gpu': 'auto',
        'manual_seed': 0,
        'datasets': {
            'train': {'name': 'demo_train', 'type': 'TripleDDataset', 'dataroot': train_root,
                      'io_backend': {'type': 'lmdb'}, 'gt_size': patch, 'use_hflip': True, 'use_rot': True,
                      'num_worker_per_gpu': 1, 'batch_size_per_gpu': batch, 'dataset_enlarge_ratio': 1,
                      'prefetch_mode': None,
                      **({'sampler': {'type': 'TripleDCurriculumSampler', 'stage2_start': 0.3}} if curriculum else {})},
            'val': {'name': 'demo_val', 'type': 'TripleDDataset', 'dataroot': val_root,
                    'io_backend': {'type': 'lmdb'}},
        },
        # a small stock arch (residual VGG-style, 1x) that trains in minutes on a CPU
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


def _write_yaml(work, name, opt):
    path = os.path.join(work, 'options', name)
    with open(path, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    return path


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
    p.add_argument('--num', type=int, default=400, help='training pairs to generate')
    p.add_argument('--size', default='128', help='training image size')
    p.add_argument('--ratio', type=float, default=0.05, help='distilled share of the pool (400 -> 20 pairs)')
    p.add_argument('--no-full', action='store_true', help='skip the full-set baseline training')
    p.add_argument('--iters', type=int, default=300, help='training iterations')
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--patch', type=int, default=48)
    p.add_argument('--overwrite', action='store_true',
                   help='delete an existing --workdir first (only one an earlier demo run created)')
    p.add_argument('--recipe', default=RECIPE, help='distillation recipe; the demo sets only its paths and ratio '
                   '(default: options/distill_demo.yml)')
    args = p.parse_args(argv)
    distill_options('', '', args.ratio, args.recipe)  # a missing or broken recipe fails before any work

    from tripled_basicsr.utils.io import prepare_output_dir
    try:  # the shared output policy: --overwrite only ever deletes an earlier demo work dir (docs/safety.md)
        work = prepare_output_dir(args.workdir, args.overwrite, '--overwrite', tool='demo')
    except (OSError, ValueError) as exc:
        raise SystemExit(f'demo: {exc}') from None
    os.makedirs(os.path.join(work, 'options'))
    log = os.path.join(work, 'demo.log')
    py = sys.executable
    t0 = time.time()
    data = os.path.join(work, 'data')

    print('[1/5] generate paired demo data (offline, deterministic)')
    _run([py, '-m', 'tripled_basicsr.demo_data', '--task', args.task, '--num', str(args.num), '--size', args.size,
          '--seed', '0', '--out', os.path.join(data, 'train')], work, log)
    _run([py, '-m', 'tripled_basicsr.demo_data', '--task', args.task, '--num', '8', '--size', '128', '--seed', '1000',
          '--out', os.path.join(data, 'val')], work, log)

    print('[2/5] pack the full sets into the distilled-LMDB format (the full-data baseline)')
    for split in ('train', 'val'):
        _run([py, '-m', 'tripled_basicsr.pack', '--gt', os.path.join(data, split, 'gt'), '--lq',
              os.path.join(data, split, 'lq'), '--out', os.path.join(data, f'{split}_packed'), '--quiet'], work, log)

    print(f'[3/5] distill the training pool to {args.ratio:.0%} (TripleD)')
    distilled = os.path.join(data, 'train_tripled')
    distill_yml = _write_yaml(work, 'distill_demo.yml', distill_options(os.path.join(data, 'train'), distilled,
                                                                       args.ratio, args.recipe))
    _run([py, '-m', 'tripled_basicsr.distill', '-opt', distill_yml, '--quiet'], work, log)

    runs = [('tripled', distilled, True)] + ([] if args.no_full else [('full', os.path.join(data, 'train_packed'),
                                                                         False)])
    val_root = os.path.join(data, 'val_packed')
    results = {}
    for label, root, curriculum in runs:
        print(f'[4/5] train stock SRVGGNetCompact (1x) on the {label} set'
              + (' with the two-stage curriculum' if curriculum else '') + ' (stock BasicSR loop)')
        opt = train_options(f'demo_{label}', root, val_root, args.iters, args.batch, args.patch, curriculum)
        _run([py, '-m', 'tripled_basicsr.train', '-opt', _write_yaml(work, f'train_{label}.yml', opt)], work, log)
        weights = os.path.join(work, 'experiments', f'demo_{label}', 'models', 'net_g_latest.pth')
        print(f'[5/5] test the {label} model on the held-out demo set')
        out = _run([py, '-m', 'tripled_basicsr.test', '-opt', _write_yaml(
            work, f'test_{label}.yml', test_options(f'demo_{label}_test', val_root, weights, opt['network_g']))],
                   work, log)
        psnr, ssim = re.findall(r'# psnr: ([0-9.]+)', out), re.findall(r'# ssim: ([0-9.]+)', out)
        results[label] = (float(psnr[-1]), float(ssim[-1]))
    base = input_psnr(val_root)
    with open(os.path.join(distilled, 'tripled_meta.json'), encoding='utf-8') as f:
        n_sub = len(json.load(f)['samples'])

    print('\nsummary')
    print(f'  task {args.task}: {args.num} training pairs -> {n_sub} distilled ({args.ratio:.0%}); '
          f'{args.iters} iterations each; {time.time() - t0:.0f} s in all')
    print(f'  {"held-out set (8 pairs)":<34} {"PSNR (dB)":>9} {"SSIM":>7} {"gain":>7}')
    print(f'  {"input (LQ vs GT)":<34} {base:>9.2f} {"":>7} {"":>7}')
    for label, (p, q) in results.items():
        name = f'TripleD {n_sub} pairs + curriculum' if label == 'tripled' else f'full set, {args.num} pairs'
        print(f'  {name:<34} {p:>9.2f} {q:>7.4f} {p - base:>+7.2f}')
    if 'full' in results and results['full'][0] > base:
        share = (results['tripled'][0] - base) / (results['full'][0] - base)
        print(f'  the distilled set keeps {share:.0%} of the full-data gain')
    print(f'  distillation report: {distilled}/report.png and report.txt')
    print(f'  options: {work}/options, experiments: {work}/experiments, log: {log}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
