"""``python -m tripled_basicsr.study.suite -opt options/suite/suite.yml``: the study on several
real-data tasks, one after the other, and one table across them.

Each task is an ordinary study (its own options file, study dir and ``report/``), run as
``python -m tripled_basicsr.study -opt TASK.yml`` with every option this command does not know
passed on (``--jobs 4``, ``--shard 0/2``, ``--threads 2``, ``--plan``, ``--restart`` ...).
Before the first task trains, every task is checked: its options file exists and passes the
study's own checks, its pool and test sets are on disk (else the message names the task and the
``prepare`` command), no pool image is smaller than the training patch, and, with
``require_defaults`` (the default), its ``tripled`` arm is the distiller's defaults: no
study-level ``distill:`` overrides, no redefinition of the arm, and ``random_crops.crop_size`` equal
to what ``source.crop_size: auto`` gives on the pool (the study hands that size to the
``tripled`` arm too).

The cross-task table (``suite_dir/report/{table.md, results.json, results.csv}``) is read from
each task's ``report/results.json``: means, standard deviations, paired differences, p-values
and tie-rule verdicts are the study's own (study/report.py, study/stats.py), nothing is
recomputed here. ``python -m tripled_basicsr.study.suite prepare --src DIR`` builds the data
(study/suite_data.py). docs/study.md, "Task suite".
"""
import argparse
import csv
import datetime
import json
import os
import subprocess
import sys

from tripled_basicsr.options import OptionError
from tripled_basicsr.utils.log import note, warn

DOC = 'docs/study.md ("Task suite")'
REF = 'docs/reference/study.md'  # where every key is documented
DEFAULTS = {'name': 'suite', 'suite_dir': None, 'tasks': [], 'arm': 'tripled', 'references': ['random', 'random_crops'],
            'full_arm': 'full', 'require_defaults': True}
TASK_KEYS = ('name', 'opt', 'description')


class SuiteError(OptionError):
    pass


# ----------------------------------------------------------------------------- options
def load_suite(path):
    """The suite options (checked), with every task's options file resolved against the suite
    file's folder. -> dict (name, suite_dir (absolute), tasks: [{name, opt, description}], ...)."""
    from tripled_basicsr.options import check_keys
    from tripled_basicsr.utils.io import load_yaml_safe
    user = load_yaml_safe(path)
    if not isinstance(user, dict):
        raise SuiteError(f'{path}: the suite options must be a mapping (name, suite_dir, tasks, ...).')
    check_keys(user, DEFAULTS, '', REF, SuiteError)
    opt = {**DEFAULTS, **user}
    base = os.path.dirname(os.path.abspath(path))
    tasks = opt['tasks']
    if not isinstance(tasks, list) or not tasks:
        raise SuiteError(f'{path}: tasks: a non-empty list of tasks ({{name, opt}}: a study options file each).')
    out, seen = [], set()
    for i, t in enumerate(tasks):
        t = {'name': t} if isinstance(t, str) else t
        if not isinstance(t, dict) or not isinstance(t.get('name'), str) or not t['name']:
            raise SuiteError(f'{path}: tasks[{i}] must be a name or a mapping with a name (and opt: its study '
                             f'options file); got {t!r}.')
        check_keys(t, TASK_KEYS, f'tasks[{i}].', REF, SuiteError)
        if t['name'] in seen:
            raise SuiteError(f'{path}: two tasks are named {t["name"]!r}.')
        seen.add(t['name'])
        rel = t.get('opt') or f'{t["name"]}.yml'
        out.append({'name': t['name'], 'opt': os.path.normpath(os.path.join(base, os.path.expanduser(rel))),
                    'description': t.get('description') or _known_description(t['name'])})
    opt['tasks'] = out
    for k in ('arm', 'full_arm'):
        if not isinstance(opt[k], str):
            raise SuiteError(f'{path}: {k} must be an arm name; got {opt[k]!r}.')
    refs = opt['references'] if isinstance(opt['references'], list) else [opt['references']]
    if not refs or not all(isinstance(r, str) for r in refs):
        raise SuiteError(f'{path}: references must be a list of arm names; got {opt["references"]!r}.')
    opt['references'] = refs
    if not isinstance(opt['require_defaults'], bool):
        raise SuiteError(f'{path}: require_defaults must be true or false.')
    opt['suite_dir'] = os.path.abspath(os.path.expanduser(opt['suite_dir'] or os.path.join('studies', opt['name'])))
    opt['path'] = os.path.abspath(path)
    return opt


def _known_description(name):
    from tripled_basicsr.study.suite_data import TASKS
    return TASKS[name][0] if name in TASKS else ''


def select_tasks(suite, names):
    if not names:
        return suite['tasks']
    known = {t['name']: t for t in suite['tasks']}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SuiteError(f'--tasks: {", ".join(unknown)} not in {suite["path"]}; its tasks: {", ".join(known)}.')
    return [known[n] for n in names]


def task_options(task):
    """-> (the task's user options, merged study options), with the study's own checks."""
    from tripled_basicsr.study import merge_options
    from tripled_basicsr.utils.io import load_yaml_safe
    if not os.path.isfile(task['opt']):
        raise SuiteError(f'task {task["name"]}: its options file {task["opt"]} does not exist.')
    user = load_yaml_safe(task['opt'])
    return user, merge_options(user)


# ----------------------------------------------------------------------------- checks
def _prepare_hint(name):
    from tripled_basicsr.study.suite_data import TASKS, prepare_command
    if name in TASKS:
        return (f'Prepare it with `{prepare_command([name])}` (run from the folder holding datasets/, or pass '
                f'--out; {DOC})')
    return f'Prepare its data (see the comments of its options file and {DOC})'


def _has_images(path):
    from tripled_basicsr.study.suite_data import _image_files
    if path.endswith('.lmdb'):
        return os.path.isfile(os.path.join(path, 'data.mdb'))
    return os.path.isdir(path) and bool(_image_files(path))


def missing_data(opt):
    """Lines naming the pool folders and test sets of the merged study options that are not on
    disk (listing only: nothing is decoded)."""
    from tripled_basicsr import benchmark as bm
    out = []
    for k in ('dataroot_gt', 'dataroot_lq'):
        p = opt['source'][k]
        if not _has_images(p):
            out.append(f'source.{k} {p} ' + ('does not exist' if not os.path.exists(p) else 'holds no images'))
    for i, entry in enumerate(opt['test_sets']):
        spec = bm.set_spec(entry, {'datasets_root': opt['datasets_root']}, f'test_sets[{i}].')
        if spec.get('dataroot_gt'):
            ok = all(os.path.isdir(spec.get(k) or '') for k in ('dataroot_gt', 'dataroot_lq')) and \
                bool(bm.pair_files(spec['dataroot_lq'], spec['dataroot_gt']))
            where = f'{spec["dataroot_gt"]} + {spec["dataroot_lq"]}'
        elif not os.path.isdir(spec['root']):
            ok, where = False, spec['root']
        elif spec['task'] == 'sr':
            ok, where = bool(bm.find_sr_layout(spec['root'], int(spec['scale']))[2]), spec['root']
        elif spec['task'] == 'denoise':
            ok, where = bool(bm.find_gt_only(spec['root'])), spec['root']
        else:
            ok, where = bool(bm.find_paired_layout(spec['root'])), spec['root']
        if not ok:
            out.append(f'test set {spec["name"]}: no images under {where}')
    return out


def defaults_problems(suite, user, opt):
    """Why the task's ``tripled`` arm would not measure the distiller's defaults (or a compared
    arm is missing), as lines; needs the pool on disk (its image sizes)."""
    from tripled_basicsr.distill.crops import auto_crop_size
    from tripled_basicsr.study import Study
    from tripled_basicsr.study.subsets import gt_shapes, open_source
    out = []
    arms = opt['arms']
    for a in [suite['arm'], *suite['references'], suite['full_arm']]:
        if a not in arms:
            out.append(f'arms: {a} is not among the arms {arms} (the suite table compares {suite["arm"]} with '
                       f'{", ".join(suite["references"])}, {suite["full_arm"]} as the reference)')
    if not suite['require_defaults']:
        return out
    if suite['arm'] in (user.get('arm_definitions') or {}):
        out.append(f'arm_definitions.{suite["arm"]}: the suite measures the distiller\'s defaults; do not redefine '
                   f'the {suite["arm"]} arm (add another arm instead)')
    if user.get('distill'):
        out.append(f'distill: {json.dumps(user["distill"])} would change the {suite["arm"]} arm; the suite measures '
                   f'the distiller\'s defaults (remove it, or set require_defaults: false in the suite options)')
    src = opt['source']
    shapes = gt_shapes(open_source(src))
    auto = auto_crop_size(shapes, int(src.get('scale', 1)))
    have = Study(opt).crop_size()
    if auto is None:
        out.append(f'the pool\'s images are too small for crop units (median short side under 96 px): the distiller\'s '
                   f'default is whole images, which the study\'s {suite["arm"]} arm does not reproduce')
    elif have != auto:
        out.append(f'random_crops.crop_size is {have}, but the distiller\'s source.crop_size: auto gives {auto} on '
                   f'this pool ({len(shapes)} images): set random_crops.crop_size: {auto} (the study hands that size '
                   f'to the {suite["arm"]} arm, so both use the units a stand-alone distill would)')
    return out


def patch_problems(opt):
    """A pool image smaller than the training patch (BasicSR's paired crop refuses it, hours in)."""
    from tripled_basicsr.study.subsets import gt_shapes, open_source
    src = open_source(opt['source'])
    shapes = gt_shapes(src)
    gt = opt['training']['gt_size']
    small = [(k, hw) for k, hw in zip(src.keys, shapes) if min(hw) < gt]
    if not small:
        return []
    (k, (h, w)), more = small[0], f' and {len(small) - 1} more' if len(small) > 1 else ''
    return [f'training.gt_size {gt} is larger than pool image {k} ({w}x{h}){more}: the full and random arms would '
            f'fail in training (BasicSR refuses a patch larger than an image); lower gt_size or remove the image']


def check_tasks(suite, tasks):
    """Every check before the first task trains; raises one SuiteError listing every problem,
    each naming its task. -> {task name: (user options, merged options)}."""
    from tripled_basicsr.study import Study, check_study
    problems, opts = [], {}
    for t in tasks:
        where = f'task {t["name"]} ({t["opt"]})'
        try:
            user, opt = task_options(t)
        except (ValueError, OSError) as exc:
            problems.append(f'{where}: {exc}')
            continue
        opts[t['name']] = (user, opt)
        missing = missing_data(opt)
        if missing:
            problems.append(f'{where}: data missing: {"; ".join(missing)}. {_prepare_hint(t["name"])}.')
            continue
        try:
            check_study(Study(opt))
        except (ValueError, OSError) as exc:
            problems.append(f'{where}: {exc}')
            continue
        problems += [f'{where}: {p}' for p in patch_problems(opt) + defaults_problems(suite, user, opt)]
    if problems:
        raise SuiteError(f'{len(problems)} problem(s) before any task ran:\n  ' + '\n  '.join(problems))
    return opts


# ----------------------------------------------------------------------------- summary
def _pct(r):
    return f'{r * 100:g} %'


def _cell(e):
    if not e or e.get('psnr_mean') is None:
        return '-'
    m, s, n = e['psnr_mean'], e.get('psnr_std'), e.get('n', 0)
    return f'{m:.2f} ± {s:.2f} (n={n})' if n and n > 1 else f'{m:.2f} (n={n})'


def _vs(c):
    if not c or c.get('mean_diff') is None:
        return '-'
    p = f', p {c["p"]:.2f}' if c.get('p') is not None else ''
    return f'{c["mean_diff"]:+.3f} **{c["verdict"]}** (spread {c["spread"]:.3f}{p}, n={c["n"]})'


def task_rows(name, results, arm, refs, full_arm):
    """Rows (task, ratio, test set) from one study's results.json: the study's own means, stds,
    paired differences, p-values and verdicts (nothing recomputed)."""
    s = results['summary']
    rows = s['rows']
    full = next((r for r in rows if r['arm'] == full_arm and r['ratio'] is None), None)
    by = {(r['arm'], r['ratio']): r for r in rows if r['ratio'] is not None}
    comps = {(c['ratio'], c['arm'], c['vs'], c['set']): c for c in s['comparisons']}
    out = []
    for ratio in sorted({r['ratio'] for r in rows if r['ratio'] is not None}):
        for lb in s['sets']:
            arms = {}
            for a in [*refs, arm]:
                r = by.get((a, ratio))
                if r is not None:
                    e = r['sets'].get(lb) or {}
                    arms[a] = {k: e.get(k) for k in ('psnr_mean', 'psnr_std', 'n', 'psnr', 'retention')}
                    arms[a].update(units=r.get('units'), images=r.get('images'), seeds=r.get('seeds'),
                                   subsets=r.get('subsets', ''))
            vs = {}
            for ref in refs:
                c = comps.get((ratio, arm, ref, lb))
                vs[ref] = None if c is None else {k: c.get(k) for k in ('mean_diff', 'std_diff', 'p', 'method', 'n',
                                                                         'seeds', 'spread', 'verdict')}
            fe = (full or {}).get('sets', {}).get(lb) if full else None
            out.append({'task': name, 'ratio': ratio, 'set': lb, 'input_psnr': (s['inputs'].get(lb) or {}).get('psnr'),
                        'full': None if not fe else {k: fe.get(k) for k in ('psnr_mean', 'psnr_std', 'n')},
                        'arms': arms, 'vs': vs})
    return out


def counts(rows, refs):
    out = {}
    for ref in refs:
        c = {'better': 0, 'tie': 0, 'worse': 0, 'missing': 0}
        for r in rows:
            cmp = r['vs'].get(ref) or {}
            v = cmp.get('verdict') if cmp.get('n') and cmp.get('mean_diff') is not None else None  # no paired seed
            c[v if v in c else 'missing'] += 1
        out[ref] = c
    return out


def summarize_suite(suite, tasks_info):
    """tasks_info: [{name, description, study_dir, results (dict | None), ...}] -> the suite summary."""
    arm, refs = suite['arm'], suite['references']
    rows = []
    for t in tasks_info:
        if t.get('results'):
            rows += task_rows(t['name'], t['results'], arm, refs, suite['full_arm'])
    per_task = {t['name']: counts([r for r in rows if r['task'] == t['name']], refs) for t in tasks_info
                if t.get('results')}
    return {'name': suite['name'], 'arm': arm, 'references': refs, 'full_arm': suite['full_arm'],
            'tasks': [{k: v for k, v in t.items() if k != 'results'} for t in tasks_info], 'rows': rows,
            'counts': counts(rows, refs), 'per_task': per_task}


def markdown(summary):
    arm, refs, full = summary['arm'], summary['references'], summary['full_arm']
    lines = [f'# Task suite: {summary["name"]}', '',
             f'`{arm}` (the distiller\'s defaults) against {", ".join(f"`{r}`" for r in refs)} (random crops: the same '
             f'pixel budget and crop size), `{full}` (the whole pool) as the reference. PSNR in dB, mean ± std over '
             f'seeds (n); differences are paired over the seeds both arms have ({arm} - reference), with the '
             f'study\'s p-value and its tie rule: a difference within the larger seed std of the two arms (spread), '
             f'or measured on fewer than 2 seeds, is a tie. Every number comes from the task\'s own '
             f'`report/results.json` (its `table.md` has the rest: retention, time to quality).', '', '## Tasks', '']
    for t in summary['tasks']:
        state = t.get('status', '')
        crop = f', crop units {t["crop_size"]} px' if t.get('crop_size') else ''
        lines.append(f'* **{t["name"]}**: {t.get("description") or ""} ({t.get("pool", "")}{crop}; '
                     f'study dir `{t.get("study_dir")}`){"" if state == "ok" else f" - {state}"}')
        for lb, p in (t.get('protocols') or {}).items():
            lines.append(f'  * {lb}: {p}')
    lines += ['', '## Results', '']
    head = ['task', 'ratio', 'test set', 'input', full, *refs, arm, *[f'{arm} - {r}' for r in refs]]
    lines.append('| ' + ' | '.join(head) + ' |')
    lines.append('|' + '---|' * len(head))
    for r in summary['rows']:
        units = {a: r['arms'].get(a, {}).get('units') for a in [*refs, arm]}
        cells = [r['task'], _pct(r['ratio']), r['set'],
                 f'{r["input_psnr"]:.2f}' if r['input_psnr'] is not None else '-', _cell(r['full'])]
        for a in [*refs, arm]:
            u = f' [{units[a]:.0f}]' if units[a] is not None else ''
            one = ' (one subset)' if (r['arms'].get(a) or {}).get('subsets') == 'one subset' else ''
            cells.append(_cell(r['arms'].get(a)) + u + one)
        cells += [_vs(r['vs'].get(ref)) for ref in refs]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', '[n] after a PSNR: the units each run trained on (images, or crops for crop arms). "(one '
              'subset)": a deterministic selection gave every seed the same units, so its spread is training seeds '
              'only; the other arms draw a new subset per seed (subset seed = training seed, which the paired '
              'differences pair on).', '',
              '## Verdicts', '', f'| task | ' + ' | '.join(f'{arm} vs {r}: better / tie / worse' for r in refs) + ' |',
              '|---|' + '---|' * len(refs)]
    for name, c in list(summary['per_task'].items()) + [('**all tasks**', summary['counts'])]:
        lines.append(f'| {name} | ' + ' | '.join(
            f'{c[r]["better"]} / {c[r]["tie"]} / {c[r]["worse"]}' + (f' ({c[r]["missing"]} not compared)'
                                                                      if c[r]['missing'] else '') for r in refs) + ' |')
    todo = [t['name'] for t in summary['tasks'] if t.get('status') != 'ok']
    if todo:
        lines += ['', f'No results yet: {", ".join(todo)}.']
    return '\n'.join(lines) + '\n'


def write_csv(path, summary):
    arm, refs = summary['arm'], summary['references']
    cols = ['task', 'ratio', 'set', 'input_psnr', 'full_psnr', 'full_n']
    for a in [*refs, arm]:
        cols += [f'{a}_psnr', f'{a}_std', f'{a}_n', f'{a}_units']
    for r in refs:
        cols += [f'diff_vs_{r}', f'std_diff_vs_{r}', f'p_vs_{r}', f'spread_vs_{r}', f'n_vs_{r}', f'verdict_vs_{r}']
    with open(path, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in summary['rows']:
            full = r['full'] or {}
            vals = [r['task'], r['ratio'], r['set'], r['input_psnr'], full.get('psnr_mean'), full.get('n')]
            for a in [*refs, arm]:
                e = r['arms'].get(a) or {}
                vals += [e.get('psnr_mean'), e.get('psnr_std'), e.get('n'), e.get('units')]
            for ref in refs:
                c = r['vs'].get(ref) or {}
                vals += [c.get('mean_diff'), c.get('std_diff'), c.get('p'), c.get('spread'), c.get('n'),
                         c.get('verdict')]
            w.writerow(['' if v is None else (f'{v:.4f}' if isinstance(v, float) else v) for v in vals])


def gather(suite, tasks, opts=None):
    """[{name, description, opt, study_dir, pool, crop_size, protocols, status, results}] for ``tasks``."""
    from tripled_basicsr.study import Study
    from tripled_basicsr.utils.io import read_json
    out = []
    for t in tasks:
        info = {'name': t['name'], 'description': t['description'], 'opt': t['opt']}
        try:
            user, opt = (opts or {}).get(t['name']) or task_options(t)
        except (ValueError, OSError) as exc:
            out.append({**info, 'status': f'options not readable: {exc}'})
            continue
        info.update(study_dir=opt['study_dir'], pool=opt['source']['dataroot_gt'],
                    crop_size=Study(opt).crop_size())
        path = os.path.join(opt['study_dir'], 'report', 'results.json')
        res = read_json(path)
        if not res or 'summary' not in res:
            out.append({**info, 'status': 'no results yet' if not os.path.exists(path) else f'unreadable {path}'})
            continue
        out.append({**info, 'status': 'ok', 'results_json': path, 'protocols': res.get('header', {}).get('protocols'),
                    'results': res})
    return out


def write_summary(suite, tasks, opts=None):
    """Write ``suite_dir/report/{table.md, results.json, results.csv}``; -> the markdown."""
    from tripled_basicsr.utils.ownership import AtomicOutputDir, claim_dir
    summary = summarize_suite(suite, gather(suite, tasks, opts))
    summary['created'] = datetime.datetime.now().isoformat(timespec='minutes')
    summary['suite_options'] = suite['path']
    md = markdown(summary)
    claim_dir(suite['suite_dir'], 'suite', 'suite_dir', layout=['report'])
    with AtomicOutputDir(os.path.join(suite['suite_dir'], 'report'), overwrite=True,
                         option_name='(the suite report is always regenerated)', tool='suite') as tmp:
        with open(os.path.join(tmp, 'table.md'), 'w', encoding='utf-8') as f:
            f.write(md)
        with open(os.path.join(tmp, 'results.json'), 'w', encoding='utf-8') as f:
            json.dump(summary, f, indent=1, default=str)
        write_csv(os.path.join(tmp, 'results.csv'), summary)
    return md


# ----------------------------------------------------------------------------- running
def study_command(task, extra, python=sys.executable):
    return [python, '-m', 'tripled_basicsr.study', '-opt', task['opt'], *extra]


def run_suite(suite, tasks, extra=(), report_only=False, call=subprocess.call):
    """Run (or resume) every task's study in turn, then write the suite table and print it (the
    command's result, on stdout; progress: utils/log.note). -> exit code."""
    extra = list(extra)
    plan_only = '--plan' in extra
    opts = None
    if not report_only:
        opts = check_tasks(suite, tasks)  # every task checked before the first one trains
    failed, rc_all = [], 0
    try:
        for k, t in enumerate(tasks, 1):
            if report_only:
                try:
                    _, opt = task_options(t)
                except (ValueError, OSError) as exc:
                    warn(f'[{k}/{len(tasks)}] {t["name"]}: {exc}')
                    continue
                if not os.path.isdir(opt['study_dir']):
                    note(f'[{k}/{len(tasks)}] {t["name"]}: no study dir yet ({opt["study_dir"]})')
                    continue
                cmd = study_command(t, ['--report-only', *extra])
            else:
                cmd = study_command(t, extra)
            note(f'[{k}/{len(tasks)}] task {t["name"]}: {t["description"]}\n  $ {" ".join(cmd[1:])}')
            rc = call(cmd)
            if rc in (130, -2):  # the study was interrupted (Ctrl-C): stop here, it resumes on the next run
                note(f'suite: interrupted in task {t["name"]}; run the same command to continue.')
                rc_all = 130
                break
            if rc != 0:
                failed.append(t['name'])
                warn(f'suite: task {t["name"]} failed (exit {rc}); going on with the next task.')
    except KeyboardInterrupt:
        rc_all = 130
    if not plan_only:
        md = write_summary(suite, suite['tasks'], opts)  # the table covers every task of the suite
        print(md, flush=True)
        note(f'suite report: {os.path.join(suite["suite_dir"], "report")}/table.md, results.json, results.csv')
    if failed:
        warn(f'suite: failed tasks: {", ".join(failed)} (their study logs name the error; run the suite again to '
             f'retry them).')
        return rc_all or 1
    return rc_all


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == 'prepare':
        from tripled_basicsr.study.suite_data import main as prepare_main
        return prepare_main(argv[1:])
    p = argparse.ArgumentParser(
        prog='python -m tripled_basicsr.study.suite',
        description=f'Run the study on every task of a suite, then one table across them ({DOC}). Options not listed '
                    f'here are passed to every task\'s study command (e.g. --jobs 4, --shard 0/2, --plan). '
                    f'`... suite prepare --src DIR` builds the data.')
    p.add_argument('-opt', required=True, help='suite YAML (options/suite/suite.yml)')
    p.add_argument('--tasks', default=None, help='comma-separated task names (default: every task of the suite)')
    p.add_argument('--report-only', action='store_true', help='rebuild every task\'s report (study --report-only) '
                                                              'and the suite table; nothing trains')
    p.add_argument('--summary-only', action='store_true', help='only rewrite the suite table from the tasks\' '
                                                               'existing report/results.json')
    p.add_argument('--check', action='store_true', help='only run the checks every task must pass before training')
    p.add_argument('--debug', action='store_true', help='full tracebacks')
    args, extra = p.parse_known_args(argv)
    if args.debug:
        extra.append('--debug')

    def body():
        import tripled_basicsr
        tripled_basicsr.register()
        suite = load_suite(args.opt)
        names = [n.strip() for n in args.tasks.split(',') if n.strip()] if args.tasks else None
        tasks = select_tasks(suite, names)
        if args.check:
            check_tasks(suite, tasks)
            print(f'suite {suite["name"]}: {len(tasks)} task(s) ready: {", ".join(t["name"] for t in tasks)}')
            return 0
        if args.summary_only:
            print(write_summary(suite, suite['tasks']))
            return 0
        return run_suite(suite, tasks, extra, args.report_only)

    from tripled_basicsr.utils.cli import run_command
    return run_command('suite', body, args.debug, (ValueError, OSError))


if __name__ == '__main__':
    sys.exit(main())
