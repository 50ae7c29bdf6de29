"""The main job on embedded data: full set vs a random subset of the same size vs random
crops of the same pixel budget vs the TripleD subset, several seeds.

    python -m tripled_basicsr.demo [--workdir demo_run] [--overwrite] [--seeds 5] [--iters 300]
                                   [--ratio 0.05] [--arms full,random,random_crops,tripled]

Runs on a CPU in about 10 minutes with data generated from images that ship with installed
packages (``tripled_basicsr.demo_data``), so it needs no download. It is the subset study
(``python -m tripled_basicsr.study``, docs/study.md) on that data, so the comparison has one
implementation; every file it runs is written under ``WORKDIR`` and can be re-run by hand:

1. ``python -m tripled_basicsr.demo_data --task noise ...`` -> WORKDIR/data/{train,val}/{gt,lq}
2. ``python -m tripled_basicsr.study -opt WORKDIR/options/study_demo.yml``: the study recipe
   ``options/study_demo.yml`` with the generated pool, the held-out set and the distillation
   recipe ``options/distill_demo.yml`` (with the study recipe's ``distill:`` overrides, if
   any). Every arm trains stock SRVGGNetCompact (1x) through BasicSR with the same
   iterations, batch, patch and schedule; ``tripled`` distils with the recipe (subset seed =
   training seed; crop units of the random-crops arm's size) and trains on its subset.
3. the table (PSNR mean +- std over seeds per arm, share of the full-data gain kept, TripleD -
   random with ties called ties) and the plots (WORKDIR/study/report/*.png).

A stopped demo continues where it was when run again with the same flags (finished runs are
kept); ``--overwrite`` starts afresh (it only ever deletes an earlier demo work dir).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import yaml

from tripled_basicsr.options import OptionError
from tripled_basicsr.utils.io import load_yaml_safe

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the recipes the demo runs, in a source checkout
RECIPE = os.path.join(_ROOT, 'options', 'distill_demo.yml')
STUDY_RECIPE = os.path.join(_ROOT, 'options', 'study_demo.yml')
ARM_TITLES = {'full': 'full set', 'random': 'random subset', 'random_crops': 'random crops (same pixels)',
              'tripled': 'TripleD', 'tripled_curriculum': 'TripleD + curriculum'}
VAL_SEED = 1000  # the held-out set is generated with another seed than the pool (seed 0)


class DemoError(OptionError):
    pass


# --------------------------------------------------------------------------- options
def _recipe(path, what, flag):
    if not os.path.isfile(path):
        raise DemoError(f'the {what} {path} does not exist (the demo reads options/ of a source checkout); '
                        f'pass {flag} PATH.')
    try:
        opt = load_yaml_safe(path)
    except ValueError as exc:
        raise DemoError(f'{flag}: {exc}') from None
    if not isinstance(opt, dict):
        raise DemoError(f'{flag} {path}: expected a mapping of options.')
    return opt


def distill_options(recipe=RECIPE):
    """The distillation recipe as the study's shared ``distill:`` section.

    The study sets each run's source, output, ``selection.ratio``/``seed``, name and feature
    cache itself; everything else is the recipe as shipped.
    """
    opt = _recipe(recipe, 'distillation recipe', '--recipe')
    for section in ('source', 'output', 'selection'):
        if not isinstance(opt.get(section), dict):
            raise DemoError(f'--recipe {recipe} has no `{section}:` mapping; the demo fills in its '
                            f'{section} paths/values there.')
    opt = json.loads(json.dumps(opt))
    opt.pop('name', None)
    opt['output'].pop('path', None)  # the study writes each run's subset into its study_dir
    for k in ('dataroot_gt', 'dataroot_lq'):
        opt['source'].pop(k, None)
    return opt


def _positive_int(flag):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected an integer >= 1, got {text!r}') from None
        if v < 1:
            raise argparse.ArgumentTypeError(f'expected an integer >= 1, got {text!r}')
        return v
    parse.__name__ = flag
    return parse


def _ratio(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a number in (0, 1], got {text!r}') from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f'expected a number in (0, 1] (share of the pool), got {text!r}')
    return v


def study_options(args, work):
    """The study the demo runs: options/study_demo.yml (or ``--study``) + the generated data,
    the distillation recipe and the flags. Pure (reads only the two recipes)."""
    opt = _recipe(args.study, 'study recipe', '--study')
    for k in ('source', 'test_sets', 'study_dir'):
        if k in opt:
            raise DemoError(f'--study {args.study}: `{k}` is set by the demo (the generated data and --workdir); '
                            f'remove it from the recipe.')
    if not isinstance(opt.get('distill') or {}, dict):
        raise DemoError(f'--study {args.study}: `distill` must be a mapping (overrides of --recipe).')
    data = os.path.join(work, 'data')
    opt['source'] = {'dataroot_gt': os.path.join(data, 'train', 'gt'),
                     'dataroot_lq': os.path.join(data, 'train', 'lq'), 'scale': 1}
    opt['test_sets'] = [{'name': 'demo_val', 'dataroot_gt': os.path.join(data, 'val', 'gt'),
                         'dataroot_lq': os.path.join(data, 'val', 'lq'), 'scale': 1}]
    opt['study_dir'] = os.path.join(work, 'study')
    from tripled_basicsr.study.arms import deep_merge
    opt['distill'] = deep_merge(distill_options(args.recipe), opt.get('distill') or {})
    if args.ratio is not None:
        opt['ratios'] = [args.ratio]
    if args.seeds is not None:
        opt['seeds'] = list(range(args.seeds))
    if args.arms is not None:
        opt['arms'] = args.arms
    tr = opt.setdefault('training', {})
    old_iters = tr.get('iters')
    for flag, key in (('iters', 'iters'), ('batch', 'batch_size'), ('patch', 'gt_size')):
        if getattr(args, flag) is not None:
            tr[key] = getattr(args, flag)
    if args.iters is not None:
        if (tr.get('eval_every') or 0) > args.iters:
            tr['eval_every'] = args.iters
        sched = ((tr.get('basicsr') or {}).get('train') or {}).get('scheduler') or {}
        if sched.get('periods') == [old_iters]:  # one cosine period over the whole run
            sched['periods'] = [args.iters]
    if args.patch is not None:  # crops sized for the recipe's patch: gt_size + 25 %, as the recipe's own
        if (opt.get('random_crops') or {}).get('crop_size'):
            opt['random_crops']['crop_size'] = args.patch + args.patch // 4
        if (opt['distill'].get('source') or {}).get('crop_size'):  # the distill arm then takes the same
            del opt['distill']['source']['crop_size']
    from tripled_basicsr.study import Study, check_study, merge_options
    merged = merge_options(opt)  # every key checked (a typo in the recipe names itself) before any work
    check_study(Study(merged))  # and every arm name, the distill recipe's options and the network
    arms, ratio = merged['arms'], merged['ratios'][0]
    if 'full' not in arms:
        raise DemoError('--arms must include full: the table reports every arm as a share of the full-data gain.')
    n_sub = math.ceil(ratio * args.num - 1e-9)  # the distiller's budget rule
    if len(arms) > 1 and n_sub < 2:
        raise DemoError(f'--ratio {ratio:g} of --num {args.num} pairs is {n_sub} pair(s): a subset needs at least '
                        f'2; raise --ratio or --num.')
    return opt


# --------------------------------------------------------------------------- steps
def _run(cmd, cwd, log):
    print(f'$ {" ".join(cmd)}', flush=True)
    with open(log, 'a', encoding='utf-8') as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        f.write(proc.stdout)
    if proc.returncode != 0:
        print(proc.stdout[-4000:], file=sys.stderr)
        raise DemoError(f'step failed (exit {proc.returncode}): {" ".join(cmd)}; full log in {log}')
    return proc.stdout


def _generate(args, work, log):
    py = sys.executable
    data = os.path.join(work, 'data')
    for split, num, size, seed in (('train', args.num, args.size, 0), ('val', args.val_num, args.size, VAL_SEED)):
        out = os.path.join(data, split)
        if os.path.isfile(os.path.join(out, 'demo_data.json')):
            print(f'  {out}: already generated (resumed demo)')
            continue
        _run([py, '-m', 'tripled_basicsr.demo_data', '--task', args.task, '--num', str(num), '--size', str(size),
              '--seed', str(seed), '--out', out], work, log)


def _task(text):
    from tripled_basicsr.demo_data import tasks
    known = [t for t in tasks() if t != 'sr']  # the demo's arch and sets are 1x
    if text not in known:
        raise argparse.ArgumentTypeError(f'expected one of {", ".join(known)} (same-size restoration), got {text!r}')
    return text


def _request(args):
    return {k: getattr(args, k) for k in ('task', 'num', 'val_num', 'size', 'ratio', 'seeds', 'iters', 'batch',
                                          'patch', 'arms', 'threads')} | {'recipe': os.path.abspath(args.recipe),
                                                               'study': os.path.abspath(args.study)}


# every top-level name the demo writes in --workdir: anything else there is a user's, and
# --overwrite refuses to delete it (utils/ownership)
LAYOUT = ('demo.log', 'demo_request.json', 'data', 'study', 'options', 'table.txt')


def _open_workdir(args):
    """The work dir under the shared output policy (docs/safety.md): created, replaced with
    --overwrite only when an earlier demo wrote it, or resumed when the same command wrote it."""
    from tripled_basicsr.utils.ownership import prepare_output_dir, read_marker
    path = os.path.abspath(args.workdir)
    req = os.path.join(path, 'demo_request.json')
    marker = read_marker(path) if os.path.isdir(path) else None
    if marker is not None and marker.get('tool') == 'demo' and not args.overwrite and os.path.isfile(req):
        with open(req, encoding='utf-8') as f:
            same = json.load(f) == _request(args)
        if same:
            from tripled_basicsr.utils.ownership import check_reusable
            try:
                check_reusable(path, '--workdir')  # a resumed demo writes in it: no links where it writes
            except OSError as exc:
                raise DemoError(str(exc)) from None
            return path, True
        raise DemoError(f'--workdir {path} holds a demo run with other flags; pass --overwrite to replace it, or '
                        f'another --workdir.')
    try:
        work = prepare_output_dir(path, args.overwrite, '--overwrite', tool='demo', layout=LAYOUT)
    except (OSError, ValueError) as exc:
        raise DemoError(str(exc)) from None
    with open(req, 'w', encoding='utf-8') as f:
        json.dump(_request(args), f, indent=1)
    return work, False


def append_to(log_path):
    """A notes sink (utils/log.sink): every study note also goes to the demo log, as a line; the
    terminal shows them on stderr unless --quiet (the demo prints its own summary table)."""
    def write(msg):
        with open(log_path, 'a', encoding='utf-8') as f:
            f.write(f'{msg}\n')
    return write


# --------------------------------------------------------------------------- summary
def summary_table(summary):
    """The demo's table from the study's summary (report/results.json ``summary``): one line
    per arm (PSNR mean +- std over seeds, units (pairs, or crops: 'cr'), gain kept) and TripleD - random."""
    label = summary['sets'][0]
    inp = summary['inputs'][label]['psnr']
    lines = [f'{"arm":<28} {"units":>7} {"PSNR (dB)":>15} {"gain kept":>10}',
             f'{"input (LQ vs GT)":<28} {"":>7} {inp:>15.2f} {"":>10}']
    for r in summary['rows']:
        e = r['sets'][label]
        psnr = f'{e["psnr_mean"]:.2f} ± {e["psnr_std"]:.2f}' if e['n'] > 1 else f'{e["psnr_mean"]:.2f}'
        kept = f'{e["retention"] * 100:.0f} %' if e['retention'] is not None else '-'
        units = f'{r["units"]:.0f} cr' if r.get('crops') or r['arm'] == 'random_crops' else f'{r["units"]:.0f}'
        name = ARM_TITLES.get(r['arm'], r['arm'])
        lines.append(f'{name:<28} {units:>7} {psnr:>15} {kept:>10}')
    lines.append('')
    comps = sorted(summary['comparisons'], key=lambda c: (c['arm'] != 'tripled', c['vs'] != 'random'))
    for c in comps:
        if c['set'] != label or c['mean_diff'] is None:
            continue
        p = f', p = {c["p"]:.2f}' if c.get('p') is not None else ''
        word = {'tie': 'TIE (inside the seed spread)', 'better': 'BETTER', 'worse': 'WORSE'}[c['verdict']]
        lines.append(f'{c["arm"]} - {c["vs"]}: {c["mean_diff"]:+.2f} dB over {c["n"]} seed(s){p}; seed spread '
                     f'{c["spread"]:.2f} dB -> {word}')
    return '\n'.join(lines)


# --------------------------------------------------------------------------- main
def build_parser():
    p = argparse.ArgumentParser(prog='python -m tripled_basicsr.demo', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--workdir', default='demo_run', help='everything goes here (default: ./demo_run)')
    p.add_argument('--overwrite', action='store_true',
                   help='delete an existing --workdir first (only one an earlier demo run created)')
    p.add_argument('--task', type=_task, default='noise',
                   help='demo_data task (noise, blur, jpeg, rain, haze, lowlight)')
    p.add_argument('--num', type=_positive_int('--num'), default=400, help='training pairs to generate (400)')
    p.add_argument('--val-num', type=_positive_int('--val-num'), default=24, help='held-out pairs (24)')
    p.add_argument('--size', type=_positive_int('--size'), default=128, help='image side in px (128)')
    p.add_argument('--ratio', type=_ratio, default=None, help='subset share of the pool (recipe: 0.05 -> 20 pairs)')
    p.add_argument('--seeds', type=_positive_int('--seeds'), default=None,
                   help='number of seeds per arm, 0..N-1 (recipe: 5)')
    p.add_argument('--iters', type=_positive_int('--iters'), default=None,
                   help='optimiser steps per run, every arm (recipe: 300)')
    p.add_argument('--batch', type=_positive_int('--batch'), default=None, help='batch size (recipe: 8)')
    p.add_argument('--patch', type=_positive_int('--patch'), default=None, help='GT patch side (recipe: 48)')
    p.add_argument('--arms', type=lambda s: [a.strip() for a in s.split(',') if a.strip()], default=None,
                   help='comma-separated study arms (recipe: full,random,random_crops,tripled; must include full)')
    p.add_argument('--recipe', default=RECIPE, help='distillation recipe (default: options/distill_demo.yml)')
    p.add_argument('--study', default=STUDY_RECIPE, help='study recipe (default: options/study_demo.yml)')
    p.add_argument('--threads', type=_positive_int('--threads'), default=1,
                   help='CPU threads per process (1: reproducible numbers, and fast on a shared CPU)')
    p.add_argument('--quiet', action='store_true', help='print only the final table')
    p.add_argument('--debug', action='store_true', help='full tracebacks')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except KeyboardInterrupt:
        print('demo: interrupted; run the same command to continue (finished runs are kept).', file=sys.stderr)
        return 130
    except (DemoError, ValueError, OSError) as exc:
        if args.debug:
            raise
        raise SystemExit(f'demo: error: {exc}') from None


def _main(args):
    import tripled_basicsr
    tripled_basicsr.register()  # the plugin, before the study checks arm names
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))
    opt = study_options(args, os.path.abspath(args.workdir))  # bad flags / recipes fail before any file is written
    t0 = time.time()
    work, resumed = _open_workdir(args)
    log = os.path.join(work, 'demo.log')
    # one thread count for every step: the numbers do not depend on the machine's core count, and
    # on a busy CPU two OpenMP threads per process run many times slower than one (measured: docs/demo.md)
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ[var] = str(args.threads)
    import torch
    torch.set_num_threads(args.threads)
    n_runs = len(opt['seeds']) * len(opt['arms'])
    say(f'demo: {work}' + (' (resuming: finished runs are kept)' if resumed else ''))
    say(f'step 1/3: generate {args.num} + {args.val_num} paired {args.task} images ({args.size} px, offline, '
        f'deterministic)')
    if args.quiet:
        with open(os.devnull, 'w') as null:
            stdout, sys.stdout = sys.stdout, null
            try:
                _generate(args, work, log)
            finally:
                sys.stdout = stdout
    else:
        _generate(args, work, log)
    os.makedirs(os.path.join(work, 'options'), exist_ok=True)
    yml = os.path.join(work, 'options', 'study_demo.yml')
    with open(yml, 'w', encoding='utf-8') as f:
        yaml.safe_dump(opt, f, sort_keys=False)
    say(f'step 2/3: study: {", ".join(opt["arms"])} x {len(opt["seeds"])} seeds = {n_runs} runs of '
        f'{opt["training"]["iters"]} iterations each (re-run by hand: python -m tripled_basicsr.study -opt {yml})')
    say('      each line: [run/total] arm_ratio_seed, elapsed and time left; then its PSNR on the held-out set')
    from tripled_basicsr.study import run_study
    from tripled_basicsr.utils.log import set_quiet, sink
    set_quiet(args.quiet)
    with sink(append_to(log)):
        md = run_study(opt)
    if not md:
        raise DemoError(f'the study finished no run; see {log}.')
    report = os.path.join(work, 'study', 'report')
    with open(os.path.join(report, 'results.json'), encoding='utf-8') as f:
        summary = json.load(f)['summary']
    table = summary_table(summary)
    with open(os.path.join(work, 'table.txt'), 'w', encoding='utf-8') as f:
        f.write(table + '\n')
    say('step 3/3: result')
    n_sub = next((r['units'] for r in summary['rows'] if r['arm'] == 'random'), None)
    print(f'\ntask {args.task}: {args.num} training pairs' + (f', subsets of {n_sub:.0f}' if n_sub else '')
          + f'; {opt["training"]["iters"]} iterations x batch {opt["training"]["batch_size"]} for every arm; '
          f'held-out set of {args.val_num} pairs; {len(opt["seeds"])} seeds; {time.time() - t0:.0f} s'
          + (' (this command)' if resumed else ''))
    print(table)
    print(f'\nplots: {report}/final_psnr.png (final PSNR per arm, every seed), psnr_vs_iter.png; '
          f'full report: {report}/table.md; log: {log}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
