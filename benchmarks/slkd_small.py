"""SLKD evidence on CPU: does dual-teacher distillation beat the same student trained alone?

    OMP_NUM_THREADS=1 python benchmarks/slkd_small.py [--seeds 0 1 2] [--teacher-iters 1500]
                                                      [--student-iters 300] [--out DIR]

Task: colour denoising (Gaussian sigma 25) on images from the embedded demo generator
(`tripled_basicsr.demo_data`: photographs shipped with scikit-image plus procedural images),
``--train`` images for training and ``--test`` other images held out for evaluation. Or pass
``--data DIR`` with ``DIR/{train,test}/{gt,lq}`` PNG folders (e.g. a public standard set).

Arms (all students share the arch, the iterations, the crops of a given seed and the optimiser):

* ``teacher_a``: TripleDUNet teacher, noisy -> clean (trained once, seed 0)
* ``teacher_b``: the same arch without the global residual, clean -> clean (reported on the
  clean test images: it reconstructs, it does not denoise)
* ``student_alone``: pixel loss only (no KD)
* ``output_kd``: pixel + output KD to teacher A (0.5)
* ``slkd``: pixel + output KD (0.5) + L_NC (BRISQUE 0.1 + feature 0.1, encoder, teacher A)
  + L_ET (PIQE 0.1 + feature 0.1, decoder, teacher B)
* ``slkd_no_nc``, ``slkd_no_et``: SLKD without one of the two feature terms
* ``slkd_one_teacher``: SLKD with teacher A on both the encoder and the decoder taps
* ``slkd_iqa_only`` (only with ``--arms``): SLKD without the plain feature terms
* ``slkd_no_nc_dec_on_a`` (only with ``--arms``): ``slkd_no_nc`` with the decoder taps on teacher A

Prints a table (PSNR/SSIM on the held-out images, mean +- std over seeds, difference to
``student_alone`` and whether it is outside the seed spread) and one JSON line.
Every student arm trains through ``SLKDModel`` (``student_alone`` is SLKDModel with only the
pixel term, which needs no teacher), so the numbers measure the model the users run.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

STUDENT = dict(type='TripleDUNet', width=4, levels=2, enc_blocks=1, middle_blocks=1, dec_blocks=1)
TEACHER = dict(type='TripleDUNet', width=12, levels=2, enc_blocks=[1, 2], middle_blocks=2, dec_blocks=[1, 1])
ENC_TAPS = {'student': ['enc1'], 'teacher_a': ['enc1']}
DEC_TAPS = {'student': ['dec1'], 'teacher_b': ['dec1']}
L1 = lambda w: {'type': 'L1Loss', 'loss_weight': w}  # noqa: E731
ARMS = {
    'student_alone': dict(pixel_opt=L1(1.0)),
    'output_kd': dict(pixel_opt=L1(1.0), output_kd_opt=L1(0.5)),
    'slkd': dict(pixel_opt=L1(1.0), output_kd_opt=L1(0.5), nc_opt={'type': 'BRISQUEFeatureLoss', 'loss_weight': 0.1},
                 enc_feat_opt=L1(0.1), et_opt={'type': 'PIQEFeatureLoss', 'loss_weight': 0.1}, dec_feat_opt=L1(0.1)),
}
ARMS['slkd_no_nc'] = {k: v for k, v in ARMS['slkd'].items() if k not in ('nc_opt', 'enc_feat_opt')}
ARMS['slkd_no_et'] = {k: v for k, v in ARMS['slkd'].items() if k not in ('et_opt', 'dec_feat_opt')}
ARMS['slkd_one_teacher'] = dict(ARMS['slkd'])
# not run by default: the IQA-statistics terms without the plain feature terms
ARMS['slkd_iqa_only'] = {k: v for k, v in ARMS['slkd'].items() if k not in ('enc_feat_opt', 'dec_feat_opt')}
# not run by default: L_NC off (fast), decoder taps on teacher A instead of teacher B -- isolates whether
# the decoder-side cost comes from teacher B's (no-residual) features or from decoder matching as such
ARMS['slkd_no_nc_dec_on_a'] = dict(ARMS['slkd_no_nc'])
DEFAULT_ARMS = [a for a in ARMS if a not in ('slkd_iqa_only', 'slkd_no_nc_dec_on_a')]


def load_data(args):
    """uint8 BGR lists: train_gt, train_lq, test_gt, test_lq."""
    import cv2
    if args.data:
        out = []
        for split in ('train', 'test'):
            for kind in ('gt', 'lq'):
                d = os.path.join(args.data, split, kind)
                out.append([cv2.imread(os.path.join(d, f)) for f in sorted(os.listdir(d))])
        return out
    from tripled_basicsr.demo_data import generate_pairs
    pairs = list(generate_pairs('noise', num=args.train + args.test, size=args.size, seed=0, sigma=25))
    gt = [p[1] for p in pairs]
    lq = [p[2] for p in pairs]
    return gt[:args.train], lq[:args.train], gt[args.train:], lq[args.train:]


def to_tensor(imgs):
    """uint8 BGR list -> float RGB (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.stack(imgs)[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255


class Crops:
    """Seeded random paired crops with flips (the same sequence for every arm of a seed)."""

    def __init__(self, gt, lq, patch, batch, seed):
        self.gt, self.lq = to_tensor(gt), to_tensor(lq)
        self.patch, self.batch = patch, batch
        self.rng = np.random.default_rng(seed)

    def next(self):
        n, _, h, w = self.gt.shape
        idx = self.rng.integers(0, n, self.batch)
        ys = self.rng.integers(0, h - self.patch + 1, self.batch)
        xs = self.rng.integers(0, w - self.patch + 1, self.batch)
        flips = self.rng.integers(0, 2, self.batch)
        g, q = [], []
        for i, y, x, f in zip(idx, ys, xs, flips):
            a = self.gt[i, :, y:y + self.patch, x:x + self.patch]
            b = self.lq[i, :, y:y + self.patch, x:x + self.patch]
            if f:
                a, b = a.flip(-1), b.flip(-1)
            g.append(a)
            q.append(b)
        return torch.stack(g), torch.stack(q)


def base_opt(work, name, iters, net_g, model_type='SLKDModel'):
    models = os.path.join(work, name, 'models')
    os.makedirs(models, exist_ok=True)
    return {'name': name, 'model_type': model_type, 'is_train': True, 'dist': False, 'num_gpu': 0, 'scale': 1,
            'rank': 0, 'world_size': 1, 'network_g': dict(net_g),
            'path': {'models': models, 'training_states': models, 'resume_state': None},
            'datasets': {'train': {'gt_size': 32}},
            'train': {'optim_g': {'type': 'Adam', 'lr': 2e-3, 'betas': [0.9, 0.99]},
                      'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [iters], 'restart_weights': [1],
                                    'eta_min': 1e-5}, 'total_iter': iters, 'warmup_iter': -1}}


def train(model, crops, iters, clean_to_clean=False):
    for it in range(1, iters + 1):
        gt, lq = crops.next()
        model.feed_data({'lq': gt if clean_to_clean else lq, 'gt': gt})
        model.update_learning_rate(it, warmup_iter=-1)
        model.optimize_parameters(it)
    return model


def evaluate(net, gt_imgs, lq_imgs):
    import logging
    logging.getLogger('basicsr').setLevel(logging.ERROR)  # per-model start-up lines would bury the table
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.utils import tensor2img
    net.eval()
    psnr, ssim = [], []
    with torch.no_grad():
        for g, q in zip(gt_imgs, lq_imgs):
            out = tensor2img(net(to_tensor([q])).clamp(0, 1), rgb2bgr=True)
            psnr.append(calculate_psnr(out, g, crop_border=0))
            ssim.append(calculate_ssim(out, g, crop_border=0))
    net.train()
    return float(np.mean(psnr)), float(np.mean(ssim))


def verdicts(results, base='student_alone'):
    """Per arm: mean/std over seeds, and against ``base`` the unpaired difference of means and the
    paired per-seed differences (same seed = same student init and crop sequence). A difference is
    a tie unless it exceeds the seed spread (unpaired: the larger std; paired: the std of the
    per-seed differences) and, paired, every seed agrees in sign."""
    out = {}
    b = results.get(base)
    for arm, r in results.items():
        p = np.asarray(r['psnr'], float)
        s = np.asarray(r['ssim'], float)
        row = {'psnr_mean': float(p.mean()), 'psnr_std': float(p.std()), 'ssim_mean': float(s.mean()),
               'ssim_std': float(s.std()), 'psnr': p.tolist(), 'ssim': s.tolist()}
        if b is not None and arm != base and len(p) == len(b['psnr']) > 1:
            bp = np.asarray(b['psnr'], float)
            d = float(p.mean() - bp.mean())
            row['diff_vs_alone'] = d
            row['verdict'] = 'tie' if abs(d) <= max(p.std(), bp.std()) else ('better' if d > 0 else 'worse')
            pd = p - bp
            row['paired_diffs'] = pd.tolist()
            agree = (pd > 0).all() or (pd < 0).all()
            row['paired_verdict'] = ('tie' if abs(pd.mean()) <= pd.std() or not agree
                                     else ('better' if pd.mean() > 0 else 'worse'))
        out[arm] = row
    return out


def report(results, meta):
    """Print the table and the JSON line."""
    rows = verdicts(results)
    print(f'\nSLKD small benchmark: {meta.get("data", "demo generator")}: {meta["train"]} train / {meta["test"]} '
          f'held-out images (generator: {meta["size"]}px), patch {meta["patch"]}, batch {meta["batch"]}; teachers {meta["teacher_iters"]} it, '
          f'students {meta["student_iters"]} it, seeds {meta["seeds"]}')
    cut = meta['cut']
    print(f'student {meta["student_params"]} params vs teacher {meta["teacher_params"]}: params reduction '
          f'{cut["params"]:.1f} %, FLOPs reduction {cut["flops"]:.1f} % (at {meta["size"]}x{meta["size"]})')
    print(f'{"arm":<18}{"PSNR (dB)":>18}{"SSIM":>18}{"vs alone":>10}  {"verdict":<8}{"paired per-seed diffs":>26}  '
          f'paired verdict')
    for arm, r in rows.items():
        note = '  (clean -> clean: reconstruction, not denoising)' if arm == 'teacher_b' else ''
        line = f'{arm:<18}{r["psnr_mean"]:>11.3f} +- {r["psnr_std"]:.3f}{r["ssim_mean"]:>11.4f} +- {r["ssim_std"]:.4f}'
        if 'verdict' in r:
            diffs = ' '.join(f'{x:+.3f}' for x in r['paired_diffs'])
            line += f'{r["diff_vs_alone"]:>+10.3f}  {r["verdict"]:<8}{diffs:>26}  {r["paired_verdict"]}'
        print(line + note)
    print(json.dumps({'benchmark': 'slkd_small', **meta, 'results': rows}))


def parse_log(path):
    """Results from the per-run lines of an earlier run's output (``--summary-of``)."""
    import re
    results = {}
    with open(path) as f:
        for line in f:
            m = re.match(r'\[\s*\d+s\] (\w+)(?: seed \d+)?: ([0-9.]+) dB(?: ([0-9.]+))?', line)
            if m:
                r = results.setdefault(m.group(1), {'psnr': [], 'ssim': []})
                r['psnr'].append(float(m.group(2)))
                r['ssim'].append(float(m.group(3)) if m.group(3) else float('nan'))
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--teacher-iters', type=int, default=1500)
    p.add_argument('--student-iters', type=int, default=300)
    p.add_argument('--train', type=int, default=24, help='training images (demo generator)')
    p.add_argument('--test', type=int, default=8, help='held-out test images (demo generator)')
    p.add_argument('--size', type=int, default=64, help='image side (demo generator)')
    p.add_argument('--patch', type=int, default=32)
    p.add_argument('--batch', type=int, default=4)
    p.add_argument('--arms', nargs='+', default=DEFAULT_ARMS, choices=list(ARMS),
                   help='student arms (default: all but slkd_iqa_only and slkd_no_nc_dec_on_a)')
    p.add_argument('--data', help='DIR with train/{gt,lq} and test/{gt,lq} PNG folders instead of the generator '
                                  '(training images of one size; FLOPs are still reported at --size)')
    p.add_argument('--out', help='keep teacher weights here (default: a temporary directory)')
    p.add_argument('--reuse-teachers', action='store_true',
                   help='load teacher_{a,b}.pth from --out when present instead of training them again')
    p.add_argument('--summary-of', metavar='LOG', help='only re-print the table of an earlier run from its output')
    args = p.parse_args(argv)
    if args.summary_of:
        res = parse_log(args.summary_of)
        report(res, {'seeds': args.seeds, 'teacher_iters': args.teacher_iters, 'student_iters': args.student_iters,
                     'train': args.train, 'test': args.test, 'size': args.size, 'patch': args.patch,
                     'batch': args.batch, 'student_params': None, 'teacher_params': None,
                     'cut': {'params': float('nan'), 'flops': float('nan')}, 'seconds': None})
        return 0
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))

    import tripled_basicsr
    getattr(tripled_basicsr, 'register', lambda: None)()
    import logging
    logging.getLogger('basicsr').setLevel(logging.ERROR)  # per-model start-up lines would bury the table
    from basicsr.metrics import calculate_psnr, calculate_ssim
    from basicsr.models import build_model
    from tripled_basicsr.cost import network_cost, reduction
    from basicsr.archs import build_network

    t0 = time.time()
    tr_gt, tr_lq, te_gt, te_lq = load_data(args)
    work = args.out or tempfile.mkdtemp(prefix='slkd_small_')
    results = {}
    teacher_b_net = dict(TEACHER, residual=False)
    paths = {}
    for name, net_opt, c2c in (('teacher_a', TEACHER, False), ('teacher_b', teacher_b_net, True)):
        paths[name] = os.path.join(work, f'{name}.pth')
        if args.reuse_teachers and os.path.isfile(paths[name]):  # same settings assumed: the user's call
            net = build_network(dict(net_opt))
            net.load_state_dict(torch.load(paths[name], weights_only=True)['params'])
        else:
            torch.manual_seed(0)
            opt = base_opt(work, name, args.teacher_iters, net_opt, 'SRModel')
            opt['train']['pixel_opt'] = L1(1.0)
            net = train(build_model(opt), Crops(tr_gt, tr_lq, args.patch, args.batch, 0), args.teacher_iters,
                        c2c).net_g
            torch.save({'params': net.state_dict()}, paths[name])
        ps, ss = evaluate(net, te_gt, te_gt if c2c else te_lq)
        results[name] = {'psnr': [ps], 'ssim': [ss]}
        print(f'[{time.time() - t0:6.0f}s] {name}: {ps:.3f} dB {ss:.4f}', flush=True)
    results['input'] = {'psnr': [float(np.mean([calculate_psnr(q, g, 0) for g, q in zip(te_gt, te_lq)]))],
                        'ssim': [float(np.mean([calculate_ssim(q, g, 0) for g, q in zip(te_gt, te_lq)]))]}
    print(f'[{time.time() - t0:6.0f}s] input: {results["input"]["psnr"][0]:.3f} dB {results["input"]["ssim"][0]:.4f}')

    for arm in args.arms:
        results[arm] = {'psnr': [], 'ssim': []}
        for seed in args.seeds:
            torch.manual_seed(seed)
            opt = base_opt(work, f'{arm}_{seed}', args.student_iters, STUDENT)
            opt['network_teacher_a'] = dict(TEACHER)
            opt['network_teacher_b'] = teacher_b_net
            opt['path'].update(pretrain_network_teacher_a=paths['teacher_a'],
                               pretrain_network_teacher_b=paths['teacher_b'])
            on_a = arm in ('slkd_one_teacher', 'slkd_no_nc_dec_on_a')
            dec = {'student': ['dec1'], 'teacher_a': ['dec1']} if on_a else DEC_TAPS
            opt['slkd'] = {'encoder_taps': ENC_TAPS, 'decoder_taps': dec}
            opt['train'].update(ARMS[arm])
            m = train(build_model(opt), Crops(tr_gt, tr_lq, args.patch, args.batch, seed), args.student_iters)
            ps, ss = evaluate(m.net_g, te_gt, te_lq)
            results[arm]['psnr'].append(ps)
            results[arm]['ssim'].append(ss)
            print(f'[{time.time() - t0:6.0f}s] {arm} seed {seed}: {ps:.3f} dB {ss:.4f}', flush=True)

    s_cost = network_cost(build_network(dict(STUDENT)), (args.size, args.size))
    t_cost = network_cost(build_network(dict(TEACHER)), (args.size, args.size))
    cut = {'params': reduction(s_cost['params'], t_cost['params']),
           'flops': reduction(s_cost['flops'], t_cost['flops'])}

    meta = {'seeds': args.seeds, 'teacher_iters': args.teacher_iters, 'student_iters': args.student_iters,
            'train': len(tr_gt), 'test': len(te_gt), 'size': args.size, 'patch': args.patch, 'batch': args.batch,
            'data': args.data or 'demo generator (noise, sigma 25)', 'student_params': s_cost['params'], 'teacher_params': t_cost['params'], 'cut': cut,
            'seconds': round(time.time() - t0, 1)}
    report(results, meta)
    return 0


if __name__ == '__main__':
    sys.exit(main())
