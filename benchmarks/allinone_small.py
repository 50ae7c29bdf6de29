"""All-in-one evidence on CPU: one model for five degradations trained on a TripleD subset
drawn from their union, against a random subset of the same size and the full union.

    OMP_NUM_THREADS=1 python benchmarks/allinone_small.py [--work DIR] [--sizes 400,200,100,50,25]
                                                          [--ratio 0.04] [--seeds 3] [--iters 600]

Data: five tasks of unequal size from the embedded generator (``python -m
tripled_basicsr.demo_data.allinone``: rain, haze, noise, blur, low light; ``--sizes`` training
pairs each, plus a held-out validation split per task). The study runner
(``tripled_basicsr.study``) does the rest, so every arm trains the same stock BasicSR arch
(SRVGGNetCompact) through BasicSR for the same optimiser steps, batch and patch, and is
evaluated on each task's held-out pairs:

* ``full``: the union of the five training sets (``PairedImageDataset``);
* ``random``: a uniform random subset of the union, ``--ratio`` of its pairs (so small tasks
  get few or no pairs, as a subset drawn by size does);
* ``tripled_prop``: the distiller with ``sources:`` and ``task_quota: proportional``;
* ``tripled_equal``: the same with ``task_quota: equal`` (every task the same share);
* ``tripled_prop_balanced``: the proportional subset trained with the curriculum sampler's
  ``task_balance: true`` (equal task shares per batch; no stage 1).

Prints a table (PSNR per task and the mean over tasks, mean +- std over seeds, the paired
difference of each arm's task mean to ``random`` and its verdict by the study's tie rule) and
one JSON line. The study's
own report (table.md, plots) is under ``DIR/study/report``. Re-running the command resumes:
finished runs are kept.
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

TASKS = ('rain', 'haze', 'noise', 'blur', 'lowlight')
NETS = {'srvgg': {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 24, 'num_conv': 4,
                  'upscale': 1, 'act_type': 'prelu'},
        # an encoder-decoder sees more context (haze, low light and rain are not local)
        'unet': {'type': 'TripleDUNet', 'width': 16, 'levels': 2, 'enc_blocks': [1, 2], 'middle_blocks': 2,
                 'dec_blocks': [1, 1]}}
ARMS = ('full', 'random', 'tripled_prop', 'tripled_equal', 'tripled_prop_balanced')


def union_folder(data, tasks, out):
    """``out/{gt,lq}``: every task's training pairs under task-prefixed names (hard links when
    the file system allows, copies otherwise), the pool the ``full`` and ``random`` arms read."""
    done = os.path.join(out, '.complete')
    if os.path.isfile(done):
        return out
    if os.path.isdir(out):
        shutil.rmtree(out)  # an interrupted earlier build inside our own work dir
    for which in ('gt', 'lq'):
        os.makedirs(os.path.join(out, which))
        for task in tasks:
            src = os.path.join(data, task, 'train', which)
            for name in sorted(os.listdir(src)):
                dst = os.path.join(out, which, f'{task}_{name}')
                try:
                    os.link(os.path.join(src, name), dst)
                except OSError:
                    shutil.copyfile(os.path.join(src, name), dst)
    open(done, 'w').close()
    return out


def study_options(args, data, union):
    sources = [{'task': t, 'dataroot_gt': os.path.join(data, t, 'train', 'gt'),
                'dataroot_lq': os.path.join(data, t, 'train', 'lq')} for t in TASKS]
    distill = {'sources': sources, 'features': {'backbone': 'tripled_stats', 'pretrained': False, 'device': 'cpu',
                                                'num_workers': 0, 'batch_size': 64},
               'report': {'plot': False}}
    return {
        'name': 'allinone_small',
        'study_dir': os.path.join(args.work, 'study'),
        'source': {'dataroot_gt': os.path.join(union, 'gt'), 'dataroot_lq': os.path.join(union, 'lq'), 'scale': 1},
        'ratios': [args.ratio],
        'seeds': list(range(args.seeds)),
        'arms': list(args.arms or ARMS),
        'arm_definitions': {
            'tripled_prop': {'kind': 'distill', 'curriculum': False,
                             'distill': {**distill, 'selection': {'task_quota': 'proportional'}}},
            'tripled_equal': {'kind': 'distill', 'curriculum': False,
                              'distill': {**distill, 'selection': {'task_quota': 'equal'}}},
            'tripled_prop_balanced': {'base': 'tripled_prop', 'curriculum': True,
                                      'sampler': {'task_balance': True, 'task_quota': 'equal', 'stage2_start': 0,
                                                  'complexity_weight': 0.0, 'uncertainty_weight': 0.0,
                                                  'online_uncertainty': False}},
        },
        'training': {'iters': args.iters, 'batch_size': 8, 'gt_size': 48, 'eval_every': args.iters,
                     'num_worker': 0, 'min_batches_per_epoch': 20,
                     'basicsr': {'network_g': dict(NETS[args.net]),
                                 'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3, 'weight_decay': 0,
                                                       'betas': [0.9, 0.99]},
                                           'scheduler': {'type': 'CosineAnnealingRestartLR',
                                                         'periods': [args.iters], 'restart_weights': [1],
                                                         'eta_min': 1e-5},
                                           'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0,
                                                         'reduction': 'mean'}}}},
        'test_sets': [{'name': t, 'dataroot_gt': os.path.join(data, t, 'val', 'gt'),
                       'dataroot_lq': os.path.join(data, t, 'val', 'lq'), 'scale': 1} for t in TASKS],
        'device': 'cpu',
    }


def per_task_table(records, arms):
    """{arm: {'tasks': {task: (mean, std)}, 'mean': (mean, std), 'per_seed': {seed: task mean}, 'units': n}}."""
    out = {}
    for arm in arms:
        recs = [r for r in records if r['arm'] == arm]
        if not recs:
            continue
        # final PSNR per record and task (the study labels a test set '<task>' or '<task> <protocol>')
        psnr = [{k.split()[0]: v['psnr'] for k, v in r['final'].items()} for r in recs]
        by_task = {t: (float(np.mean([p[t] for p in psnr])), float(np.std([p[t] for p in psnr]))) for t in TASKS}
        per_seed = {r['seed']: float(np.mean([p[t] for t in TASKS])) for r, p in zip(recs, psnr)}
        m = list(per_seed.values())
        out[arm] = {'tasks': by_task, 'mean': (float(np.mean(m)), float(np.std(m))), 'per_seed': per_seed,
                    'units': int(np.mean([r['units'] for r in recs])), 'seeds': len(recs)}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--work', default='allinone_small_work', help='work dir (created; re-run to resume)')
    p.add_argument('--sizes', default='400,200,100,50,25', help='training pairs per task, in the order ' +
                   ','.join(TASKS))
    p.add_argument('--val', type=int, default=8, help='held-out pairs per task')
    p.add_argument('--size', type=int, default=64, help='GT size of the generated images (px)')
    p.add_argument('--ratio', type=float, default=0.04, help='subset size as a share of the union')
    p.add_argument('--seeds', type=int, default=3)
    p.add_argument('--iters', type=int, default=600, help='optimiser steps of every arm')
    p.add_argument('--arms', nargs='+', default=None, help=f'a subset of {" ".join(ARMS)}')
    p.add_argument('--net', choices=sorted(NETS), default='srvgg', help='the stock arch every arm trains')
    args = p.parse_args(argv)
    args.work = os.path.abspath(args.work)
    if set(args.arms or ()) - set(ARMS):
        p.error(f'--arms: unknown {sorted(set(args.arms) - set(ARMS))}; choose from {" ".join(ARMS)}')
    sizes = [int(s) for s in args.sizes.split(',')]
    if len(sizes) != len(TASKS):
        p.error(f'--sizes needs {len(TASKS)} numbers ({", ".join(TASKS)}); got {args.sizes!r}')

    import tripled_basicsr
    tripled_basicsr.register()
    from tripled_basicsr.demo_data.allinone import TASKS as GEN_TASKS, write_allinone
    from tripled_basicsr.study import run_study, stats
    from tripled_basicsr.utils.io import read_json
    from tripled_basicsr.utils.ownership import prepare_output_dir
    t0 = time.time()
    work = prepare_output_dir(args.work, tool='allinone_small', reuse=True, layout=('data', 'union', 'study'))
    data = os.path.join(work, 'data')
    if not os.path.isdir(data):
        assert tuple(GEN_TASKS) == TASKS, GEN_TASKS
        write_allinone(data, sizes=sizes, val=args.val, size=args.size, seed=0, progress=False)
    union = union_folder(data, TASKS, os.path.join(work, 'union'))
    opt = study_options(args, data, union)
    print(f'allinone_small: {work}: tasks {dict(zip(TASKS, sizes))}, ratio {args.ratio}, {args.seeds} seeds, '
          f'{args.iters} iterations', flush=True)
    run_study(opt)
    res = read_json(os.path.join(opt['study_dir'], 'report', 'results.json'))
    table = per_task_table(res['records'], opt['arms'])
    print()
    head = f'{"arm":<24}{"pairs":>6}' + ''.join(f'{t:>15}' for t in TASKS) + f'{"task mean":>15}{"vs random":>11}'
    print(head)
    print('-' * (len(head) + 7))
    rnd = table.get('random', {}).get('per_seed', {})
    rnd_std = table.get('random', {}).get('mean', (0, 0))[1]
    inp = read_json(os.path.join(opt['study_dir'], 'input_psnr.json')) or {}
    if all(t in inp for t in TASKS):
        vals = [inp[t]['psnr'] for t in TASKS]
        print(f'{"input (LQ)":<24}{"":>6}' + ''.join(f'{v:>9.2f}{"":6}' for v in vals) + f'{np.mean(vals):>9.2f}')
    rows = []
    for arm, row in table.items():
        diffs = [row['per_seed'][s] - rnd[s] for s in row['per_seed'] if s in rnd] if arm != 'random' else []
        line = f'{arm:<24}{row["units"]:>6}' + ''.join(f'{m:>9.2f}±{s:<5.2f}' for m, s in
                                                       (row['tasks'][t] for t in TASKS))
        line += f'{row["mean"][0]:>9.2f}±{row["mean"][1]:<5.2f}'
        verdict = stats.verdict(float(np.mean(diffs)) if diffs else None, row['mean'][1], rnd_std, len(diffs))
        line += f'{np.mean(diffs):>+10.2f} {verdict}' if diffs else f'{"":>10}'
        print(line)
        rows.append({'arm': arm, 'pairs': row['units'], 'seeds': row['seeds'],
                     'psnr': {t: row['tasks'][t][0] for t in TASKS}, 'psnr_std': {t: row['tasks'][t][1] for t in TASKS},
                     'task_mean': row['mean'][0], 'task_mean_std': row['mean'][1],
                     'paired_diff_vs_random': [round(d, 4) for d in diffs],
                     'verdict_vs_random': verdict if diffs else None})
    print(json.dumps({'benchmark': 'allinone_small', 'net': NETS[args.net], 'sizes': dict(zip(TASKS, sizes)), 'ratio': args.ratio,
                      'iters': args.iters, 'seeds': args.seeds, 'wall_s': round(time.time() - t0, 1),
                      'rows': rows}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
