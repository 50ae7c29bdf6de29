"""SLKD study (``mode: slkd`` in a study's options): does dual-teacher distillation pay?

Teacher A (degraded -> clean) and teacher B (clean -> clean: the pool's GT as input and target)
are trained once (or taken from ``teachers.X.pretrained``), then the same student is trained
by every arm, each arm a set of ``SLKDModel`` loss terms: alone (pixel loss only), output KD,
SLKD as shipped, and one arm per term removed; seeds are training seeds (student init and
patch order), so arms are compared paired on seed with the study's tie rule. The study reuses
the subset study's machinery: runs in ``study_dir/runs``, BasicSR training in a subprocess with
``--auto_resume``, ``--jobs``/``--shard`` workers, checkpoint evaluation with the benchmark
protocol. Layout and keys: docs/reference/study.md ("SLKD study").

Teacher B is scored on the test sets' clean images (it reconstructs; it does not restore).
"""
import copy
import datetime
import json
import os
import sys

from tripled_basicsr.study.arms import deep_merge
from tripled_basicsr.study.runner import REF, Run, Study, StudyError, _check_keys, _hash, _no_lock
from tripled_basicsr.study.stats import mean_std, paired_test, verdict
from tripled_basicsr.utils.io import write_json_atomic

TEACHERS = ('teacher_a', 'teacher_b')
L1 = {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}
# the loss terms of the shipped SLKD recipes (options/slkd_*.yml; a test checks they agree)
SHIPPED_TERMS = {
    'pixel_opt': dict(L1),
    'output_kd_opt': dict(L1, loss_weight=0.5),
    'nc_opt': {'type': 'BRISQUEFeatureLoss', 'loss_weight': 0.1, 'scales': 2, 'channels': 8},
    'enc_feat_opt': dict(L1, loss_weight=0.1),
    'et_opt': {'type': 'PIQEFeatureLoss', 'loss_weight': 0.1, 'channels': 8},
    'dec_feat_opt': dict(L1, loss_weight=0.1),
}

SLKD_DEFAULTS = {
    'mode': 'slkd',
    'name': 'slkd_study',
    'study_dir': None,
    'description': None,
    'source': {'dataroot_gt': None, 'dataroot_lq': None, 'filename_tmpl': '{}', 'meta_info_file': None,
               'io_backend': {'type': 'disk'}, 'scale': 1},
    'seeds': [0, 1, 2],
    'teachers': {'teacher_a': {'network': None, 'pretrained': None, 'iters': None, 'seed': 0, 'basicsr': {}},
                 'teacher_b': {'network': None, 'pretrained': None, 'iters': None, 'seed': 0, 'basicsr': {}}},
    'student': None,
    'slkd': {},
    'terms': None,
    'arms': None,
    'arm_definitions': {},
    'references': ['alone', 'output_kd'],
    'training': {
        'iters': 1000,
        'batch_size': 8,
        'gt_size': 96,
        'eval_every': None,
        'num_worker': 0,
        'use_hflip': True,
        'use_rot': True,
        'min_batches_per_epoch': 50,
        'model_type': 'SLKDModel',
        'curriculum_model_type': 'SLKDModel',
        'curriculum_sampler': {},
        'basicsr': {},
    },
    'test_sets': [],
    'datasets_root': 'datasets',
    'curve_sets': None,
    'device': 'auto',
    'tile': {},
    'cost_size': [256, 256],
}
_ARM_KEYS = {'base', 'terms', 'slkd', 'description', 'seeds'}


def term_arm_name(key):
    """'output_kd_opt' -> 'slkd_no_okd' (the log name without ``l_``)."""
    from tripled_basicsr.models.slkd_model import LOSS_TERMS
    return 'slkd_no_' + LOSS_TERMS[key][0][2:]


def presets(terms):
    """The built-in arms over the study's SLKD ``terms``: alone, output_kd, slkd and one arm per
    switched-on term removed (pixel loss excepted)."""
    from tripled_basicsr.models.slkd_model import LOSS_TERMS
    off = {k: None for k in LOSS_TERMS}
    out = {'alone': {'terms': dict(off, pixel_opt=terms.get('pixel_opt') or dict(L1)),
                     'description': 'the student trained alone (pixel loss only)'},
           'output_kd': {'terms': dict(off, pixel_opt=terms.get('pixel_opt') or dict(L1),
                                       output_kd_opt=terms.get('output_kd_opt') or dict(L1, loss_weight=0.5)),
                         'description': 'pixel loss + L1 to teacher A\'s output'},
           'slkd': {'terms': dict(off, **terms), 'description': 'every SLKD term of the study (`terms`)'}}
    for k in LOSS_TERMS:
        if k != 'pixel_opt' and terms.get(k):
            out[term_arm_name(k)] = {'base': 'slkd', 'terms': {k: None}, 'description': f'slkd without {k}'}
    return out


def resolve_slkd_arm(name, definitions, terms, _seen=()):
    """Arm name -> {'terms': {loss key: option or None}, 'slkd': {...}, 'seeds', 'description'}."""
    if name in _seen:
        raise StudyError(f'arm {name!r}: base chain loops ({" -> ".join(_seen + (name,))}).')
    builtin = presets(terms)
    if name in (definitions or {}):
        arm = definitions[name]
        if not isinstance(arm, dict):
            raise StudyError(f'arm_definitions.{name} must be a mapping ({", ".join(sorted(_ARM_KEYS))}).')
    elif name in builtin:
        arm = builtin[name]
    else:
        raise StudyError(f'unknown arm {name!r}. Built in: {", ".join(builtin)}; or define it under arm_definitions '
                         f'(e.g. {{base: slkd, terms: {{nc_opt: ~}}}}; {REF}, "SLKD study").')
    unknown = sorted(set(arm) - _ARM_KEYS)
    if unknown:
        raise StudyError(f'arm_definitions.{name}: unknown key(s) {unknown}; allowed: {sorted(_ARM_KEYS)} ({REF}).')
    for k in ('terms', 'slkd'):
        if arm.get(k) is not None and not isinstance(arm[k], dict):
            raise StudyError(f'arm_definitions.{name}.{k} must be a mapping; got {arm[k]!r}.')
    parent = {'terms': {}, 'slkd': {}, 'seeds': None, 'description': None}
    if arm.get('base'):
        parent = resolve_slkd_arm(arm['base'], definitions if arm['base'] != name else {}, terms, _seen + (name,))
    out = {'terms': dict(parent['terms'], **copy.deepcopy(arm.get('terms') or {})),
           'slkd': deep_merge(parent['slkd'], arm.get('slkd') or {}),
           'seeds': arm.get('seeds', parent['seeds']), 'description': arm.get('description', parent['description'])}
    from tripled_basicsr.models.slkd_model import LOSS_TERMS
    bad = sorted(set(out['terms']) - set(LOSS_TERMS))
    if bad:
        raise StudyError(f'arm {name!r}: unknown loss term(s) {bad}; SLKDModel has {list(LOSS_TERMS)}.')
    return out


def merge_slkd_options(user):
    """The user's SLKD study options over SLKD_DEFAULTS, checked (networks and taps: SLKDStudy.check)."""
    from tripled_basicsr.study.runner import merge_options
    _check_keys(user, SLKD_DEFAULTS)  # also teachers.* and teachers.X.* (not the basicsr: overrides)
    opt = deep_merge(SLKD_DEFAULTS, user)
    # the shared keys go through the subset study's checks (source, seeds, training, test sets, name, dirs)
    shared = {k: opt[k] for k in ('name', 'study_dir', 'source', 'seeds', 'test_sets', 'datasets_root', 'curve_sets',
                                  'device', 'tile')}
    tr = {k: v for k, v in opt['training'].items() if k != 'basicsr'}
    base = merge_options(dict(shared, training=dict(tr, basicsr={'network_g': opt['student'] or {'type': '?'}})))
    for k in shared:
        opt[k] = base[k]
    opt['training']['eval_every'] = base['training']['eval_every']
    if not isinstance(opt['student'], dict) or not opt['student'].get('type'):
        raise StudyError('student is required: the student network (a BasicSR network_g mapping with its type).')
    opt['terms'] = copy.deepcopy(opt['terms'] if opt['terms'] is not None else SHIPPED_TERMS)
    if not isinstance(opt['terms'], dict):
        raise StudyError(f'terms must be a mapping of SLKDModel loss terms (train.*_opt); got {opt["terms"]!r}.')
    for t in TEACHERS:
        spec = opt['teachers'][t]
        if spec['pretrained']:
            spec['pretrained'] = os.path.abspath(os.path.expanduser(spec['pretrained']))
        spec['iters'] = spec['iters'] or opt['training']['iters']
        if not isinstance(spec['iters'], int) or spec['iters'] < 1:
            raise StudyError(f'teachers.{t}.iters must be a positive integer; got {spec["iters"]!r}.')
    if opt['arms'] is None:
        opt['arms'] = list(presets(opt['terms']))
    if not isinstance(opt['arms'], list) or not opt['arms']:
        raise StudyError(f'arms must be a non-empty list of arm names; got {opt["arms"]!r}.')
    for r in opt['references']:
        if r not in opt['arms']:
            raise StudyError(f'references: {r!r} is not one of the arms {opt["arms"]}.')
    return opt


class SLKDStudy(Study):
    """The runs of an SLKD study: the teachers the arms need, then every arm for every seed."""

    def __init__(self, opt, python=sys.executable):
        self.opt = opt
        self.dir = opt['study_dir']
        self.python = python
        self.scale = int(opt['source'].get('scale', 1))
        self.lock = _no_lock
        self.arms = {a: resolve_slkd_arm(a, opt['arm_definitions'], opt['terms']) for a in opt['arms']}
        needed = set()
        for name, arm in self.arms.items():
            parsed = self._parse(name, arm)
            arm['teachers'], arm['sides'] = sorted(parsed['teachers']), parsed['sides']
            needed |= set(arm['teachers'])
        self.runs = []
        for t in TEACHERS:
            if t in needed:
                run = Run(t, {'kind': 'full', 'role': 'teacher', 'curriculum': False, 'basicsr': {}},
                          None, opt['teachers'][t]['seed'])
                run.id = t
                self.runs.append(run)
        for s in opt['seeds']:
            for name, arm in self.arms.items():
                if s in (arm['seeds'] or opt['seeds']):
                    self.runs.append(Run(name, dict(arm, kind='full', role='student', curriculum=False, basicsr={}),
                                         None, s))

    def _parse(self, name, arm):
        """SLKDModel's own checks of the arm's terms and slkd options -> its teachers and tap sides."""
        from tripled_basicsr.models.slkd_model import active_loss_opts, parse_slkd_options
        try:
            active = active_loss_opts(arm['terms'])
            return parse_slkd_options({'slkd': deep_merge(self.opt['slkd'], arm['slkd'])}, active)
        except ValueError as exc:
            raise StudyError(f'arm {name}: {exc} (the arm\'s terms and slkd options; {REF}, "SLKD study")') from None

    # ------------------------------------------------------------------ runs
    def teacher_run(self, t):
        return next(r for r in self.runs if r.id == t)

    def final_iter(self, run):
        if run.arm['role'] == 'teacher':
            return self.opt['teachers'][run.id]['iters']
        return self.opt['training']['iters']

    def eval_pairs(self, run, pairs):
        """Teacher B reconstructs: it is scored on the clean images as input."""
        if run.id != 'teacher_b':
            return pairs
        return [(k, gt, gt.astype('float32') / 255.0) for k, gt, _ in pairs]

    def teacher_file(self, t):
        spec = self.opt['teachers'][t]
        return spec['pretrained'] or os.path.join(self.exp_dir(self.teacher_run(t)), 'models', 'net_g_latest.pth')

    def prepare(self, run):
        from tripled_basicsr.study.subsets import open_source
        n = len(open_source(self.opt['source']))
        rec = {'prep_s': 0.0, 'units': n, 'images': n, 'root': None}
        if run.arm['role'] == 'student':
            for t in run.arm['teachers']:
                self.ensure_teacher(t)
        return rec

    def ensure_teacher(self, t):
        """Teacher ``t`` trained (and scored); a worker waits for the one training it."""
        run = self.teacher_run(t)
        with self.lock(self.path('runs', run.id, '.lock')):
            if not os.path.isfile(self.path('runs', run.id, 'done.json')):
                self.open_run(run)
                self.train(run, self.prepare(run))

    def train(self, run, prep):
        spec = self.opt['teachers'].get(run.id) if run.arm['role'] == 'teacher' else None
        if not (spec and spec['pretrained']):
            return super().train(run, prep)
        import yaml
        if not os.path.isfile(spec['pretrained']):
            raise StudyError(f'teachers.{run.id}.pretrained: {spec["pretrained"]} does not exist.')
        rdir = self.path('runs', run.id)
        with open(os.path.join(rdir, 'train.yml'), 'w', encoding='utf-8') as f:  # what the evaluator builds
            yaml.safe_dump({'network_g': spec['network']}, f, sort_keys=False)
        write_json_atomic(os.path.join(rdir, 'done.json'), {'hash': self.run_hash(run), 'pretrained': True, 'times': {}})

    def checkpoints(self, run):
        spec = self.opt['teachers'].get(run.id) if run.arm['role'] == 'teacher' else None
        if spec and spec['pretrained']:
            return {self.final_iter(run): spec['pretrained']}
        return super().checkpoints(run)

    def train_options(self, run, prep):
        opt = super().train_options(run, prep)  # dataset, optimiser defaults, seed, name, checkpoints
        train = opt['train']
        from tripled_basicsr.models.slkd_model import LOSS_TERMS
        if run.arm['role'] == 'teacher':
            spec = self.opt['teachers'][run.id]
            opt = deep_merge(opt, spec['basicsr'])
            opt.update(model_type='SRModel', network_g=copy.deepcopy(spec['network']))
            it = spec['iters']
            opt['train']['total_iter'] = it
            opt['train']['scheduler'] = dict(opt['train']['scheduler'], periods=[it])
            opt['logger']['print_freq'] = max(it // 10, 1)
            if run.id == 'teacher_b':  # clean -> clean
                opt['datasets']['train']['dataroot_lq'] = opt['datasets']['train']['dataroot_gt']
            for k in LOSS_TERMS:
                if k != 'pixel_opt':
                    opt['train'].pop(k, None)
            return opt
        opt['network_g'] = copy.deepcopy(self.opt['student'])
        for k in LOSS_TERMS:
            train[k] = copy.deepcopy(run.arm['terms'].get(k))
        opt['slkd'] = deep_merge(self.opt['slkd'], run.arm['slkd'])
        for t in run.arm['teachers']:
            opt[f'network_{t}'] = copy.deepcopy(self.opt['teachers'][t]['network'])
            opt['path'][f'pretrain_network_{t}'] = self.teacher_file(t)
            opt['path'][f'param_key_{t}'] = 'params'
        return opt

    def run_hash(self, run):
        tr = self.opt['training']
        if run.arm['role'] == 'teacher':
            spec = self.opt['teachers'][run.id]
            what = {'teacher': run.id, 'spec': spec, 'source': self.opt['source'],
                    'training': {k: v for k, v in tr.items() if k != 'iters'}}
            if spec['pretrained']:
                from tripled_basicsr.utils.io import file_sha256
                what = {'teacher': run.id, 'network': spec['network'],
                        'sha256': file_sha256(spec['pretrained']) if os.path.isfile(spec['pretrained']) else None}
            return _hash(what)
        arm = {k: run.arm[k] for k in ('terms', 'slkd', 'teachers')}  # (sides: derived from these)
        return _hash({'arm': arm, 'seed': run.seed, 'source': self.opt['source'], 'training': tr,
                      'student': self.opt['student'], 'slkd': self.opt['slkd'],
                      'teachers': {t: self.run_hash(self.teacher_run(t)) for t in run.arm['teachers']}})

    # ------------------------------------------------------------------ checks
    def check(self):
        """Every network builds and every arm's terms and taps are valid, before any training (the
        tap shapes are checked by SLKDModel's probe forward when a run starts)."""
        from tripled_basicsr import benchmark as bm
        from tripled_basicsr.models.slkd_model import SLKDConfigError, resolve_modules
        tnames = {r.id for r in self.runs if r.arm['role'] == 'teacher'}
        nets = {'student': bm.build_arch(self.opt['student'], 'student', StudyError)}
        for t in tnames:
            spec = self.opt['teachers'][t]
            if not isinstance(spec['network'], dict):
                raise StudyError(f'teachers.{t}.network is required (the teacher arch, a BasicSR network mapping): '
                                 f'an arm needs {t}.')
            nets[t] = bm.build_arch(spec['network'], f'teachers.{t}.network', StudyError)
        for name, arm in self.arms.items():  # the taps of the sides an arm switches on
            for side, s in arm['sides'].items():
                for who, names in (('student', s['student']), (s['teacher'], s['teacher_taps'])):
                    try:
                        resolve_modules(nets[who], names, f'slkd.{side}_taps.{who} (arm {name})')
                    except SLKDConfigError as exc:
                        raise StudyError(str(exc)) from None

    # ------------------------------------------------------------------ report
    def records(self):
        from tripled_basicsr.study.report import run_scores
        out = []
        for run in self.runs:
            scores = run_scores(self, run)
            if scores is not None:
                out.append({'run': run.id, 'arm': run.arm_name, 'role': run.arm['role'], 'seed': run.seed,
                            'final': scores[0], 'train_s': scores[1], 'curve': scores[2]})
        return out

    def cost(self):
        """Params and FLOPs of the student and the teachers at ``cost_size`` (cost.network_cost)."""
        from tripled_basicsr import benchmark as bm
        from tripled_basicsr.cost import network_cost, reduction
        size = tuple(int(v) for v in self.opt['cost_size'])
        out = {'size': list(size), 'student': network_cost(bm.build_arch(self.opt['student']), size)}
        for t in TEACHERS:
            if self.opt['teachers'][t].get('network'):
                out[t] = network_cost(bm.build_arch(self.opt['teachers'][t]['network']), size)
        if 'teacher_a' in out:
            out['cut'] = {k: reduction(out['student'][k], out['teacher_a'][k]) for k in ('params', 'flops')}
        for v in out.values():
            if isinstance(v, dict):
                v.pop('input', None)
        return out

    def write_report(self, evaluator):
        from tripled_basicsr.study import study_sources
        from tripled_basicsr.utils.ownership import AtomicOutputDir
        for run in self.runs:  # a teacher trained by a student's worker (ensure_teacher) is scored here
            if run.arm['role'] == 'teacher' and os.path.isfile(self.path('runs', run.id, 'done.json')) \
                    and evaluator.pending(self, run):
                evaluator.evaluate_run(self, run)
        records = self.records()
        if not records:
            return None
        inputs = evaluator.input_scores(self)
        summary = summarize_slkd(records, inputs, self.opt['arms'], self.opt['references'])
        summary['cost'] = self.cost()
        md = markdown_slkd(summary, self.header())
        with AtomicOutputDir(self.path('report'), overwrite=True, option_name='(the report is always regenerated)',
                             sources=study_sources(self.opt), tool='study') as tmp:
            with open(os.path.join(tmp, 'table.md'), 'w', encoding='utf-8') as f:
                f.write(md)
            with open(os.path.join(tmp, 'results.json'), 'w', encoding='utf-8') as f:
                json.dump({'summary': summary, 'records': records}, f, indent=1, default=str)
            try:
                plot_slkd(summary, records, tmp, evaluator.curve[0])
            except ImportError:
                from tripled_basicsr.utils.log import warn
                warn('matplotlib is not installed: no plots (pip install matplotlib)')
        return md

    def header(self):
        o, tr = self.opt, self.opt['training']
        teach = '; '.join(f'{t}: {o["teachers"][t]["network"].get("type")}, '
                          + ('pretrained ' + os.path.basename(o['teachers'][t]['pretrained'])
                             if o['teachers'][t]['pretrained'] else f'{o["teachers"][t]["iters"]} iterations')
                          for t in TEACHERS if any(r.id == t for r in self.runs))
        return {'name': o['name'], 'description': o.get('description') or '',
                'setting': (f'Pool: {o["source"]["dataroot_gt"]}. Student {o["student"].get("type")}, '
                            f'{tr["iters"]} iterations, batch {tr["batch_size"]}, GT patch {tr["gt_size"]}, '
                            f'training seeds {o["seeds"]} (the seed of BasicSR\'s run: student init and patch '
                            f'draws). Teachers: {teach}. '
                            f'{datetime.datetime.now().isoformat(timespec="minutes")}.')}


# ---------------------------------------------------------------------------------------------- pure report parts
def summarize_slkd(records, inputs, arms, references):
    """Rows per arm (mean/std over seeds per test set, wall time), teacher rows, paired comparisons
    of every arm with each reference on the seeds both have, and the gap to teacher A."""
    sets = list(inputs)
    by_arm = {}
    for r in records:
        by_arm.setdefault(r['arm'], []).append(r)
    teacher_a = {lb: (by_arm.get('teacher_a') or [{}])[0].get('final', {}).get(lb, {}).get('psnr') for lb in sets}

    def row(arm, recs):
        entry = {'arm': arm, 'role': recs[0]['role'], 'seeds': [r['seed'] for r in recs],
                 'train_s': mean_std([r['train_s'] for r in recs])[0], 'sets': {}}
        for lb in sets:
            vals = [r['final'][lb]['psnr'] for r in recs if lb in r['final']]
            m, s, n = mean_std(vals)
            entry['sets'][lb] = {'psnr_mean': m, 'psnr_std': s, 'n': n, 'psnr': vals,
                                 'ssim_mean': mean_std([r['final'][lb]['ssim'] for r in recs if lb in r['final']])[0],
                                 'gap_to_teacher_a': (teacher_a[lb] - m) if None not in (teacher_a[lb], m) else None}
        return entry

    rows = [row(t, by_arm[t]) for t in TEACHERS if t in by_arm]
    rows += [row(a, by_arm[a]) for a in arms if a in by_arm]
    comps = []
    for ref in references:
        base = {r['seed']: r for r in by_arm.get(ref, [])}
        for arm in arms:
            if arm == ref or arm not in by_arm or (ref != references[0] and arm in references[:references.index(ref)]):
                continue
            mine = {r['seed']: r for r in by_arm[arm]}
            seeds = sorted(set(mine) & set(base))
            for lb in sets:
                a = [mine[s]['final'][lb]['psnr'] for s in seeds]
                b = [base[s]['final'][lb]['psnr'] for s in seeds]
                t = paired_test(a, b)
                sa, sb = mean_std(a)[1], mean_std(b)[1]
                comps.append({'arm': arm, 'vs': ref, 'set': lb, 'seeds': seeds, **t,
                              'diffs': [x - y for x, y in zip(a, b)], 'spread': max(sa or 0.0, sb or 0.0),
                              'verdict': verdict(t['mean_diff'], sa, sb, t['n'])})
    return {'rows': rows, 'comparisons': comps, 'inputs': inputs, 'sets': sets}


def _fmt(e):
    if e['psnr_mean'] is None:
        return '-'
    return f'{e["psnr_mean"]:.2f} ± {e["psnr_std"]:.2f} (n={e["n"]})' if e['n'] > 1 else f'{e["psnr_mean"]:.2f}'


def markdown_slkd(summary, header):
    sets, cost = summary['sets'], summary.get('cost') or {}
    lines = [f'# SLKD study: {header["name"]}', '', header['description'], '', header['setting'], '']
    if cost:
        h, w = cost['size']
        lines.append('| network | params | GFLOPs @ %dx%d |' % (h, w))
        lines.append('|---|---:|---:|')
        for k in ('student', 'teacher_a', 'teacher_b'):
            if k in cost:
                lines.append(f'| {k} | {cost[k]["params"] / 1e6:.4f} M | {cost[k]["flops"] / 1e9:.3f} |')
        if 'cut' in cost:
            lines += ['', f'Student vs teacher A: params {cost["cut"]["params"]:.1f} % fewer, FLOPs '
                          f'{cost["cut"]["flops"]:.1f} % fewer (tripled_basicsr.cost).']
        lines.append('')
    lines += ['PSNR in dB, mean ± std over training seeds (n); gap = teacher A - arm. Teacher B is scored on the '
              'clean images (reconstruction, not restoration). Train s: wall seconds of one run.', '',
              '| arm | train s | ' + ' | '.join(f'{lb} PSNR | gap' for lb in sets) + ' |',
              '|---|---:|' + '---|---|' * len(sets),
              '| input | - | ' + ' | '.join(f'{summary["inputs"][lb]["psnr"]:.2f} | -' for lb in sets) + ' |']
    for r in summary['rows']:
        cells = []
        for lb in sets:
            e = r['sets'][lb]
            gap = f'{e["gap_to_teacher_a"]:.2f}' if e['gap_to_teacher_a'] is not None and r['role'] != 'teacher' else '-'
            cells.append(f'{_fmt(e)} | {gap}')
        ts = f'{r["train_s"]:.0f}' if r['train_s'] is not None else '-'
        lines.append(f'| {r["arm"]} | {ts} | ' + ' | '.join(cells) + ' |')
    if summary['comparisons']:
        lines += ['', 'Paired differences (arm - reference, same training seeds). A difference inside the seed '
                  'spread (|diff| <= the larger seed std of the two arms) or on fewer than 2 seeds is a tie.', '',
                  '| arm | vs | set | diff (dB) | per seed | p (test) | seed spread | verdict |',
                  '|---|---|---|---|---|---|---|---|']
        for c in summary['comparisons']:
            d = f'{c["mean_diff"]:+.3f}' if c['mean_diff'] is not None else '-'
            p = f'{c["p"]:.3f}' if c['p'] is not None else '-'
            per = ' '.join(f'{x:+.3f}' for x in c['diffs'])
            lines.append(f'| {c["arm"]} | {c["vs"]} | {c["set"]} | {d} | {per} | {p} | {c["spread"]:.3f} | '
                         f'**{c["verdict"]}** |')
    return '\n'.join(lines) + '\n'


def plot_slkd(summary, records, out_dir, curve_set):
    """final_psnr.png (mean ± std and each seed, per arm and set), psnr_vs_iter.png (students, curve set)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    students = [r for r in summary['rows'] if r['role'] == 'student']
    sets = summary['sets']
    fig, axes = plt.subplots(1, len(sets), figsize=(max(5, 1.1 * len(students)) * len(sets), 3.8), squeeze=False)
    for ax, lb in zip(axes[0], sets):
        for i, r in enumerate(students):
            e = r['sets'][lb]
            if e['psnr_mean'] is None:
                continue
            ax.errorbar([i], [e['psnr_mean']], yerr=[e['psnr_std'] or 0], fmt='o', color=f'C{i % 10}', capsize=3)
            ax.scatter([i] * len(e['psnr']), e['psnr'], s=8, color=f'C{i % 10}', alpha=0.5)
        ax.set_xticks(range(len(students)))
        ax.set_xticklabels([r['arm'] for r in students], rotation=35, ha='right', fontsize=7)
        ax.set_title(f'{lb} (input {summary["inputs"][lb]["psnr"]:.2f} dB)', fontsize=9)
        ax.set_ylabel('PSNR (dB)')
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'final_psnr.png'), dpi=90)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, r in enumerate(students):
        pts = {}
        for rec in records:
            if rec['arm'] == r['arm']:
                for it, _, p in rec['curve'].get(curve_set, []):
                    pts.setdefault(it, []).append(p)
        its = sorted(pts)
        ax.plot(its, [np.mean(pts[k]) for k in its], marker='o', ms=3, label=r['arm'], color=f'C{i % 10}')
    ax.set_xlabel('iteration')
    ax.set_ylabel(f'PSNR on {curve_set} (dB)')
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, 'psnr_vs_iter.png'), dpi=90)
    plt.close(fig)


__all__ = ['SLKDStudy', 'merge_slkd_options', 'resolve_slkd_arm', 'presets', 'summarize_slkd', 'markdown_slkd',
           'SHIPPED_TERMS', 'SLKD_DEFAULTS']
