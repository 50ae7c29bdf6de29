"""Plans and runs the study: subsets -> BasicSR training (subprocess) -> checkpoint evaluation.

Layout of ``study_dir``::

    study.yml                     the options as run
    subsets/{run}/                distilled-format subsets (random, random_crops, distill arms)
    distill_work/{hash}/          the distiller's feature cache, shared by every distill arm
    runs/{run}/train.yml          the generated BasicSR options (re-run by hand with
                                  python -m tripled_basicsr.train -opt ... --auto_resume)
    runs/{run}/{run.json, prep.json, attempts.json, done.json, eval.json, train.log}
    experiments/{study}_{run}/    BasicSR's experiment folder (checkpoints, states, log)
    input_psnr.json               the LQ (bicubic for SR) baseline per test set
    report/                       table.md, results.csv, results.json, *.png (rewritten each time)
    .lock, runs/{run}/.lock,      flock files of parallel studies (--jobs/--shard, study/parallel.py)
    distill_work/{hash}.study.lock

A run is finished when ``runs/{run}/done.json`` exists (then it is skipped); a killed run
resumes from its last BasicSR training state (``--auto_resume``).
"""
import contextlib
import copy
import fcntl
import glob
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time

from tripled_basicsr.options import OptionError, ratio, unknown_key
from tripled_basicsr.study.arms import deep_merge, resolve_arm
from tripled_basicsr.study.stats import enlarge_ratio
from tripled_basicsr.utils.io import read_json, write_json_atomic
from tripled_basicsr.utils.log import note

DOC = 'docs/study.md'
REF = 'docs/reference/study.md'  # where every key is documented

DEFAULTS = {
    'mode': 'subsets',
    'name': 'study',
    'study_dir': None,
    'source': {'dataroot_gt': None, 'dataroot_lq': None, 'filename_tmpl': '{}', 'meta_info_file': None,
               'io_backend': {'type': 'disk'}, 'scale': 1},
    'ratios': [0.02],
    'seeds': [0, 1, 2],
    'arms': ['full', 'random', 'random_crops', 'tripled'],
    'arm_definitions': {},
    'random_crops': {'crop_size': 'auto'},
    'distill': {},
    'training': {
        'iters': 1000,
        'batch_size': 8,
        'gt_size': 48,
        'eval_every': None,
        'num_worker': 1,
        'use_hflip': True,
        'use_rot': True,
        'min_batches_per_epoch': 50,
        'model_type': 'SRModel',
        'curriculum_model_type': 'TripleDModel',
        'curriculum_sampler': {'type': 'TripleDCurriculumSampler'},
        'basicsr': {},
    },
    'test_sets': [],
    'datasets_root': 'datasets',
    'curve_sets': None,
    'baseline_arm': 'random',
    'device': 'auto',
    'tile': {},
}


class StudyError(OptionError):
    pass


def _check_keys(user, base, path=''):
    if user is not None and not isinstance(user, dict):
        raise StudyError(f'{path.rstrip(".") or "the study options"} must be a mapping (key: value); got {user!r}.')
    for k, v in (user or {}).items():
        if k not in base:
            raise unknown_key(path, k, list(base), REF, error=StudyError)
        if isinstance(base[k], dict) and base[k] and k not in ('basicsr', 'io_backend', 'curriculum_sampler'):
            _check_keys(v, base[k], f'{path}{k}.')
        elif isinstance(base[k], dict) and v is not None and not isinstance(v, dict):
            raise StudyError(f'{path}{k} must be a mapping (key: value); got {v!r}.')


def open_options(user):
    """-> (options, study) of a study's YAML dict: a subset study, or with ``mode: slkd`` an SLKD
    study (study/slkd.py: teachers once, then students with each set of loss terms)."""
    mode = user.get('mode', 'subsets') if isinstance(user, dict) else None
    if mode == 'slkd':
        from tripled_basicsr.study.slkd import SLKDStudy, merge_slkd_options
        opt = merge_slkd_options(user)
        return opt, SLKDStudy(opt)
    if mode != 'subsets' and isinstance(user, dict):
        from tripled_basicsr.options import choice
        try:
            choice('mode', mode, ('subsets', 'slkd'))
        except OptionError as exc:
            raise StudyError(f'{exc} (subsets: the subset study; slkd: the SLKD study, {REF})') from None
    opt = merge_options(user)
    return opt, Study(opt)


def merge_options(user):
    """The user's study options over DEFAULTS, every key and the values the study itself uses
    checked (the arms' distill options and networks: :func:`check_study`)."""
    _check_keys(user, DEFAULTS)
    opt = deep_merge(DEFAULTS, user)
    src, tr = opt['source'], opt['training']
    for k in ('dataroot_gt', 'dataroot_lq'):
        if not src.get(k):
            raise StudyError(f'source.{k} is required (the paired training pool: a folder or a BasicSR .lmdb).')
    for k in ('dataroot_gt', 'dataroot_lq', 'meta_info_file'):  # training runs in study_dir: no relative paths
        if src.get(k):
            src[k] = os.path.abspath(os.path.expanduser(src[k]))
    ratios = opt['ratios'] if isinstance(opt['ratios'], list) else [opt['ratios']]
    try:
        opt['ratios'] = [ratio(f'ratios[{i}]', r) for i, r in enumerate(ratios)]
    except OptionError as e:
        raise StudyError(f'ratios: every ratio must be in (0, 1]; {e}') from None
    seeds = opt['seeds'] if isinstance(opt['seeds'], list) else list(range(int(opt['seeds'])))
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise StudyError(f'seeds: a list of integers or a count; got {opt["seeds"]!r}.')
    opt['seeds'] = seeds
    for k in ('iters', 'batch_size', 'gt_size'):
        if not isinstance(tr[k], int) or tr[k] < 1:
            raise StudyError(f'training.{k} must be a positive integer; got {tr[k]!r}.')
    c = opt['random_crops'].get('crop_size')
    if c is not None and c != 'auto' and (isinstance(c, bool) or not isinstance(c, int) or c < 1):
        raise StudyError(f'random_crops.crop_size must be auto (the distiller\'s own crop units on this pool) or a '
                         f'positive integer (GT px); got {c!r}.')
    tr['eval_every'] = int(tr['eval_every'] or tr['iters'])
    if tr['eval_every'] < 1:
        raise StudyError('training.eval_every must be >= 1.')
    if not opt['test_sets']:
        raise StudyError('test_sets is empty: list the sets every arm is evaluated on (docs/benchmark.md).')
    if not (tr['basicsr'] or {}).get('network_g'):
        raise StudyError('training.basicsr.network_g is required (the BasicSR arch every arm trains).')
    if not isinstance(opt['name'], str) or not re.match(r'^[A-Za-z0-9_.-]+$', opt['name']) \
            or opt['name'] in ('.', '..') or 'debug' in opt['name']:
        raise StudyError(f'name {opt["name"]!r}: use letters, digits, _ . - only (and not "debug", which BasicSR '
                         f'treats specially).')
    if opt['study_dir'] is not None and not isinstance(opt['study_dir'], str):
        raise StudyError(f'study_dir must be a path (a string); got {opt["study_dir"]!r}.')
    opt['study_dir'] = os.path.abspath(os.path.expanduser(opt['study_dir'] or os.path.join('studies', opt['name'])))
    from tripled_basicsr import benchmark as bm  # the test sets and tiling follow the benchmark's rules
    if not isinstance(opt['test_sets'], list):
        raise StudyError(f'test_sets must be a list of benchmark set entries; got {opt["test_sets"]!r}.')
    for i, entry in enumerate(opt['test_sets']):
        bm.set_spec(entry, {'datasets_root': opt['datasets_root']}, f'test_sets[{i}].')
    bm.check_tile(opt['tile'], 'tile')
    return opt


def _path_parts(path):
    """'sources[0].task' -> ['sources', 0, 'task']."""
    return [int(p[1:-1]) if p.startswith('[') else p for p in re.findall(r'\[\d+\]|[^.\[\]]+', path)]


def _holds(d, parts):
    """True when the nested mapping/list ``d`` has the key path ``parts``."""
    for p in parts:
        if isinstance(p, int) and isinstance(d, list) and p < len(d):
            d = d[p]
        elif isinstance(p, str) and isinstance(d, dict) and p in d:
            d = d[p]
        else:
            return False
    return True


def _distill_key_origin(opt, arm_name, message):
    """Where the study options set the distill key a distiller message names: the arm's own
    ``arm_definitions.ARM.distill`` (or its base arms') or the study's ``distill``; None if neither."""
    m = re.match(r'(?:Unknown option )?([A-Za-z_][\w.\[\]]*)', message)
    if not m:
        return None
    key = m.group(1).rstrip('.')
    parts = _path_parts(key)
    defs, name, seen = opt.get('arm_definitions') or {}, arm_name, set()
    while name in defs and name not in seen and isinstance(defs[name], dict):
        seen.add(name)
        if _holds(defs[name].get('distill'), parts):
            return f'arm_definitions.{name}.distill.{key}'
        name = defs[name].get('base')
    if _holds(opt.get('distill'), parts):
        return f'distill.{key}'
    return None


def check_study(study):
    """Check what each arm will run before the first arm trains (seconds): the distiller's
    options of every distill arm (with the distiller's own checker, as its run will write
    them), and every arm's ``network_g`` (registered in BasicSR's ARCH_REGISTRY and built with
    its options) and ``model_type`` (registered in MODEL_REGISTRY). Raises StudyError naming
    the study key."""
    import difflib

    import tripled_basicsr
    from tripled_basicsr import benchmark as bm
    tripled_basicsr.register()
    from basicsr.models import build_model  # noqa: F401  (fills MODEL_REGISTRY)
    from basicsr.utils.registry import MODEL_REGISTRY

    opt, built, first = study.opt, set(), {}
    for run in study.runs:
        first.setdefault(run.arm_name, run)
    for name, run in first.items():
        arm = run.arm
        if arm['kind'] == 'distill':
            from tripled_basicsr.distill.options import merge_options as distill_options
            try:
                distill_options(study.distill_options(run, study.path('subsets', run.id), check_only=True))
            except ValueError as exc:
                origin = _distill_key_origin(opt, name, str(exc))
                where = f'{origin} (arm {name})' if origin else \
                    f'the distill options of arm {name} (distill: with the arm\'s own overrides)'
                raise StudyError(f'{where}: {exc}') from None
        own = 'network_g' in arm['basicsr']
        train = study.train_options(run, {'units': 1, 'root': study.path('subsets', run.id)})
        where = f'arm_definitions.{name}.basicsr' if own else 'training.basicsr'
        key = json.dumps(train.get('network_g'), sort_keys=True, default=str)
        if key not in built:
            bm.build_arch(train.get('network_g'), f'{where}.network_g', StudyError)
            built.add(key)
        mt = train.get('model_type')
        if mt not in MODEL_REGISTRY:
            close = difflib.get_close_matches(str(mt), list(MODEL_REGISTRY.keys()), n=3)
            src = (f'arm_definitions.{name}.basicsr.model_type' if 'model_type' in arm['basicsr'] else
                   'training.basicsr.model_type' if 'model_type' in opt['training']['basicsr'] else
                   'training.curriculum_model_type' if arm['curriculum'] else 'training.model_type')
            raise StudyError(f'{src} {mt!r} (arm {name}) is not a registered BasicSR model.'
                             + (f' Did you mean {", ".join(close)}?' if close else ''))


def log_error(path, start=0, max_lines=4, max_chars=2000):
    """The error a failed subprocess wrote to its log (from byte ``start``, this attempt): from
    its last ``error:`` line (our commands) or the last lines (a traceback's ends in the exception)."""
    try:
        with open(path, 'rb') as f:
            f.seek(start)
            text = f.read().decode('utf-8', 'replace')
    except OSError:
        return 'no log'
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return 'it printed nothing'
    marks = [i for i, ln in enumerate(lines) if ln.lstrip().lower().startswith('error:') or ': error:' in ln]
    tail = lines[marks[-1]:][:max_lines] if marks else lines[-max_lines:]
    out = '\n  '.join(tail)
    return out if len(out) <= max_chars else '...' + out[-max_chars:]


def ratio_tag(r):
    return ('%g' % (r * 100)).replace('.', 'p') + 'pct'


class Run:
    def __init__(self, arm_name, arm, ratio, seed):
        self.arm_name, self.arm, self.ratio, self.seed = arm_name, arm, ratio, seed
        safe = re.sub(r'[^A-Za-z0-9_-]', '-', arm_name)
        self.id = f'{safe}_s{seed}' if arm['kind'] == 'full' else f'{safe}_{ratio_tag(ratio)}_s{seed}'

    def __repr__(self):
        return f'Run({self.id})'


def plan(opt):
    """-> list of runs: the full arm once per seed first, then seed by seed every arm and ratio
    (so an interrupted study already has complete seeds)."""
    try:
        from tripled_basicsr.distill.registry import SELECTION
        sel_types = set(SELECTION.names())
    except Exception:  # registry unavailable: the distiller reports a bad type itself
        sel_types = None
    arms = {a: resolve_arm(a, opt['arm_definitions'], sel_types) for a in opt['arms']}
    runs = []
    for name, arm in arms.items():
        if arm['kind'] == 'full':
            runs += [Run(name, arm, None, s) for s in (arm['seeds'] or opt['seeds'])]
    for s in opt['seeds']:
        for r in opt['ratios']:
            for name, arm in arms.items():
                if arm['kind'] != 'full' and s in (arm['seeds'] or opt['seeds']):
                    runs.append(Run(name, arm, r, s))
    return runs


def _alive(pid):
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    try:  # a reused pid belongs to another program
        with open(f'/proc/{int(pid)}/cmdline', 'rb') as f:
            return b'tripled_basicsr.train' in f.read()
    except OSError:
        return True


def _hash(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Busy(RuntimeError):
    """A lock taken with ``wait=False`` is held by another process (the message names it)."""


@contextlib.contextmanager
def file_lock(path, wait=True):
    """Exclusive ``flock`` on the file ``path`` (created; never deleted, so two processes always
    lock the same inode; never opened through a link: utils/lock.open_lock_file). The kernel
    releases it when the holder exits or is killed, so a stale lock never blocks. ``wait=False``
    raises :class:`Busy` naming the holder instead of waiting. Not re-entrant: a process must
    not take the same lock twice."""
    from tripled_basicsr.utils.lock import LockedError, open_lock_file
    try:
        fd = open_lock_file(path)
    except LockedError as exc:
        raise StudyError(str(exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.lseek(fd, 0, os.SEEK_SET)
            raise Busy(os.read(fd, 512).decode(errors='replace').strip() or 'holder unknown') from None
        os.ftruncate(fd, 0)
        os.write(fd, f'pid {os.getpid()} on {socket.gethostname()}\n'.encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _no_lock(path):
    return contextlib.nullcontext()


class Study:
    def __init__(self, opt, python=sys.executable):
        self.opt = opt
        self.dir = opt['study_dir']
        self.python = python
        self.scale = int(opt['source'].get('scale', 1))
        self.runs = plan(opt)
        # path -> context manager guarding a resource runs share (the distiller's feature cache);
        # a no-op in one process, file_lock in the workers of a parallel study (study/parallel.py)
        self.lock = _no_lock

    # ------------------------------------------------------------------ paths
    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def exp_name(self, run):
        return f'{self.opt["name"]}_{run.id}'

    def final_iter(self, run):
        """The iteration of ``run``'s final weights (every run of a subset study trains as long)."""
        return self.opt['training']['iters']

    def eval_pairs(self, run, pairs):
        """The (key, GT, input) triples ``run`` is scored on: the test set as it is."""
        return pairs

    def check(self):
        check_study(self)

    def crop_size(self):
        """GT side of the crop units (random_crops arm, and the tripled arm unless it sets its own).
        ``auto`` (the default): what the distiller's ``source.crop_size: auto`` gives on this pool, so
        the study measures the units a stand-alone distill uses; on a pool too small for crop units
        (where the distiller takes whole images) the training patch + 25 %."""
        if getattr(self, '_crop', None) is None:
            c = self.opt['random_crops'].get('crop_size')
            if c in (None, 'auto'):
                from tripled_basicsr.distill.crops import auto_crop_size
                from tripled_basicsr.study.subsets import gt_shapes, open_source
                cache = self.path('source_shapes.json') if os.path.isdir(self.dir) else None
                c = auto_crop_size(gt_shapes(open_source(self.opt['source']), cache), self.scale)
            if not c:
                g = self.opt['training']['gt_size']
                c = g + g // 4
            self._crop = int(-(-int(c) // self.scale) * self.scale)
        return self._crop

    # ------------------------------------------------------------------ subsets
    def prepare(self, run):
        """Build the run's subset (timed); -> dict(prep_s, units, images, root)."""
        rec = read_json(self.path('runs', run.id, 'prep.json'))
        if rec and (run.arm['kind'] == 'full' or os.path.isdir(rec['root'])):
            return rec
        kind = run.arm['kind']
        root = self.path('subsets', run.id)
        t = time.time()
        extra = {}
        if kind == 'full':
            from tripled_basicsr.study.subsets import open_source
            n = len(open_source(self.opt['source']))
            rec = {'prep_s': 0.0, 'units': n, 'images': n, 'root': None}
        else:
            if os.path.lexists(root):  # complete (written atomically) but prep.json lost: rebuild for timing
                self._remove_subset(root)
            if kind == 'random':
                from tripled_basicsr.study.subsets import write_random
                info = write_random(self.opt['source'], root, run.ratio, run.seed)
            elif kind == 'random_crops':
                from tripled_basicsr.study.subsets import write_random_crops
                info = write_random_crops(self.opt['source'], root, run.ratio, run.seed, self.crop_size(),
                                          self.path('source_shapes.json'))
            else:
                info, extra = self._distill(run, root)
            rec = {'prep_s': time.time() - t + extra.get('features_credit', 0.0) - extra.get('lock_wait_s', 0.0),
                   'root': root, **info, **extra}
        write_json_atomic(self.path('runs', run.id, 'prep.json'), rec)
        return rec

    @staticmethod
    def _remove_subset(root):
        """Delete a subset this study wrote (our marker, nothing a user added; utils/ownership)."""
        from tripled_basicsr.utils.ownership import foreign_paths, read_marker, remove_tree
        marker = read_marker(root)
        found = foreign_paths(root) if marker is not None else []
        if marker is None or found:
            what = f'holds files the study did not write ({", ".join(found[:3])})' if found else \
                'is not a subset written by the study'
            raise StudyError(f'{root} {what}; it is never deleted. Move it (or those files) out of the study dir, '
                             f'then run the study again.')
        err = remove_tree(root)
        if err is not None:
            raise StudyError(f'could not delete the subset {root} to rebuild it: {err}. Delete it yourself.')

    def distill_options(self, run, root, check_only=False):
        """The distiller's options of a distill run. ``check_only``: for the option check before
        anything runs, which must not read the pool (the crop size stays ``auto`` there)."""
        src = self.opt['source']
        base = deep_merge(self.opt['distill'], run.arm['distill'])
        over = {'name': f'{self.opt["name"]}_{run.id}', 'output': {'path': root, 'overwrite': False},
                'selection': {'ratio': run.ratio, 'num': None, 'seed': run.seed}}
        if not base.get('sources'):  # several tasks (distill.sources) replace the study's one pool
            over['source'] = {k: src[k] for k in ('dataroot_gt', 'dataroot_lq', 'filename_tmpl', 'meta_info_file',
                                                  'io_backend', 'scale')}
            if 'crop_size' not in (base.get('source') or {}):  # crop units of the random-crops arm's size
                over['source']['crop_size'] = 'auto' if check_only else self.crop_size()
        opt = deep_merge(base, over)
        feat = {'source': opt.get('sources') or opt['source'], 'features': opt.get('features', {})}
        opt['work_dir'] = self.path('distill_work', _hash(feat))
        return opt

    def _distill(self, run, root):
        import yaml
        opt = self.distill_options(run, root)
        yml = self.path('runs', run.id, 'distill.yml')
        with open(yml, 'w', encoding='utf-8') as f:
            yaml.safe_dump(opt, f, sort_keys=False)
        log = self.path('runs', run.id, 'distill.log')
        os.makedirs(os.path.dirname(opt['work_dir']), exist_ok=True)
        # one distillation at a time per feature cache: the distiller's own work-dir lock refuses a
        # second run rather than waiting (a no-op in a one-process study, which runs one at a time)
        t_wait = time.time()
        with self.lock(opt['work_dir'] + '.study.lock'):
            waited = time.time() - t_wait  # not part of this run's preparation time
            note(f'  distill: {self.python} -m tripled_basicsr.distill -opt {yml} --quiet')
            start = os.path.getsize(log) if os.path.isfile(log) else 0
            with open(log, 'a', encoding='utf-8') as f:
                rc = subprocess.call([self.python, '-m', 'tripled_basicsr.distill', '-opt', yml, '--quiet'],
                                     stdout=f, stderr=subprocess.STDOUT, cwd=self.dir)
            if rc != 0:
                raise StudyError(f'run {run.id}: distillation failed (exit {rc}): {log_error(log, start)}\n'
                                 f'(full log: {log})')
            from tripled_basicsr.data.distilled_format import read_meta
            meta = read_meta(root)
            n = len(meta['samples'])
            feat_s = float(((meta.get('summary') or {}).get('timings') or {}).get('features', 0.0))
            # the feature pass is shared by every distill run of the study; charge each run its full
            # cost, as a user distilling once would pay it
            ft_path = opt['work_dir'] + '.features_time.json'
            known = (read_json(ft_path) or {}).get('features_s', 0.0)
            if feat_s > known:
                write_json_atomic(ft_path, {'features_s': feat_s})
                known = feat_s
        return {'units': n, 'images': len({s.get('source_index', s['key']) for s in meta['samples']}),
                'crops': any('box' in s for s in meta['samples'])}, \
            {'features_credit': max(0.0, known - feat_s), 'distill_summary_n': n,
             **({'lock_wait_s': waited} if waited > 0.01 else {})}

    # ------------------------------------------------------------------ training
    def train_options(self, run, prep):
        tr = self.opt['training']
        b = tr['basicsr']
        curriculum = run.arm['curriculum']
        n = prep['units']
        common = {'gt_size': tr['gt_size'], 'use_hflip': tr['use_hflip'], 'use_rot': tr['use_rot'],
                  'num_worker_per_gpu': tr['num_worker'], 'batch_size_per_gpu': tr['batch_size'],
                  'dataset_enlarge_ratio': enlarge_ratio(n, tr['batch_size'], 1, tr['min_batches_per_epoch']),
                  'prefetch_mode': None}
        if run.arm['kind'] == 'full':
            src = self.opt['source']
            ds = {'name': f'{run.id}', 'type': 'PairedImageDataset', 'dataroot_gt': src['dataroot_gt'],
                  'dataroot_lq': src['dataroot_lq'], 'filename_tmpl': src.get('filename_tmpl') or '{}',
                  'io_backend': copy.deepcopy(src.get('io_backend') or {'type': 'disk'}), **common}
            if src.get('meta_info_file'):
                ds['meta_info_file'] = src['meta_info_file']
        else:
            ds = {'name': run.id, 'type': 'TripleDDataset', 'dataroot': prep['root'], 'io_backend': {'type': 'lmdb'},
                  **common}
        if curriculum:
            ds['sampler'] = deep_merge(tr['curriculum_sampler'], run.arm['sampler'])
        opt = deep_merge({
            'model_type': tr['curriculum_model_type'] if curriculum else tr['model_type'],
            'num_gpu': 'auto',
            'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
            'train': {'ema_decay': 0, 'warmup_iter': -1,
                      'optim_g': {'type': 'Adam', 'lr': 1e-3, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                      'scheduler': {'type': 'CosineAnnealingRestartLR', 'periods': [tr['iters']],
                                    'restart_weights': [1], 'eta_min': 1e-5},
                      'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
            'logger': {'print_freq': max(tr['iters'] // 10, 1), 'use_tb_logger': False},
            'dist_params': {'backend': 'gloo', 'port': 29500},
        }, deep_merge(b, run.arm['basicsr']))
        # what every arm must share, whatever the overrides say
        opt.update({'name': self.exp_name(run), 'scale': self.scale, 'manual_seed': int(run.seed),
                    'datasets': {'train': ds}})
        opt['train']['total_iter'] = tr['iters']
        opt['logger']['save_checkpoint_freq'] = tr['eval_every']
        opt.pop('val', None)  # the study evaluates saved checkpoints itself, on every test set
        return opt

    def exp_dir(self, run):
        return self.path('experiments', self.exp_name(run))

    def train(self, run, prep):
        import yaml
        rdir = self.path('runs', run.id)
        opt = self.train_options(run, prep)
        yml = os.path.join(rdir, 'train.yml')
        with open(yml, 'w', encoding='utf-8') as f:
            yaml.safe_dump(opt, f, sort_keys=False)
        states = glob.glob(os.path.join(self.exp_dir(run), 'training_states', '*.state'))
        resume_iter = max((int(float(os.path.basename(s)[:-6])) for s in states), default=0)
        attempts = read_json(os.path.join(rdir, 'attempts.json'), [])
        pid = self.live_trainer(run)
        if pid:
            raise StudyError(f'run {run.id} is still being trained by process {pid} (an earlier '
                             f'study command that was stopped without its trainer?). Wait for it to end or stop it, '
                             f'then run the study again.')
        cmd = [self.python, '-m', 'tripled_basicsr.train', '-opt', yml, '--auto_resume']
        note(f'  train: (cd {self.dir} && python {" ".join(cmd[1:])})' + (f'  [resuming at {resume_iter}]'
                                                                   if resume_iter else ''))
        env = dict(os.environ, TRIPLED_BASICSR_ROOT=self.dir)
        log = os.path.join(rdir, 'train.log')
        start = os.path.getsize(log) if os.path.isfile(log) else 0
        with open(log, 'a', encoding='utf-8') as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=self.dir, env=env)
            attempts.append({'start': time.time(), 'resume_iter': resume_iter, 'pid': proc.pid,
                             'host': socket.gethostname()})
            write_json_atomic(os.path.join(rdir, 'attempts.json'), attempts)
            try:
                rc = proc.wait()
            except BaseException:  # Ctrl-C / kill of the study: do not leave the trainer running alone
                proc.terminate()
                proc.wait()
                raise
        if rc != 0 or not os.path.isfile(os.path.join(self.exp_dir(run), 'models', 'net_g_latest.pth')):
            raise StudyError(f'run {run.id}: training failed (exit {rc}): {log_error(log, start)}\n(full log: {log}; '
                             f're-run the study to resume)')
        write_json_atomic(os.path.join(rdir, 'done.json'), {'hash': self.run_hash(run), 'finished': time.time(),
                                                      'times': self.checkpoint_times(run)})

    def live_trainer(self, run):
        """The pid of a trainer of ``run`` still alive on this host (its last attempt), else None.
        An attempt on another host (a study dir shared by machines) cannot be checked here."""
        attempts = read_json(self.path('runs', run.id, 'attempts.json'), [])
        last = attempts[-1] if attempts else {}
        if last.get('host', socket.gethostname()) == socket.gethostname() and _alive(last.get('pid')):
            return last['pid']
        return None

    def run_hash(self, run):
        arm = {k: v for k, v in run.arm.items() if k != 'sampler' or v}  # runs from before `sampler` keep their hash
        return _hash({'arm': arm, 'ratio': run.ratio, 'seed': run.seed, 'source': self.opt['source'],
                      'training': self.opt['training'], 'distill': self.opt['distill'] if run.arm['kind'] == 'distill'
                      else None, 'crop': self.crop_size() if run.arm['kind'] == 'random_crops' else None})

    def checkpoints(self, run):
        """-> {iteration: checkpoint path}, the final weights under total_iter."""
        models = os.path.join(self.exp_dir(run), 'models')
        out = {}
        for p in glob.glob(os.path.join(models, 'net_g_*.pth')):
            m = re.match(r'net_g_(\d+)\.pth$', os.path.basename(p))
            if m:
                out[int(m.group(1))] = p
        latest = os.path.join(models, 'net_g_latest.pth')
        if os.path.isfile(latest):
            out[self.final_iter(run)] = latest
        return dict(sorted(out.items()))

    def checkpoint_times(self, run):
        """Training seconds at each checkpoint, across resumed attempts (each attempt continues
        from the time its resume checkpoint was reached)."""
        attempts = read_json(self.path('runs', run.id, 'attempts.json'), [])
        times = {}
        for it, p in self.checkpoints(run).items():
            mt = os.path.getmtime(p)
            att = [a for a in attempts if a['start'] <= mt + 1e-3]
            if not att:
                continue
            a = att[-1]
            times[it] = mt - a['start'] + times.get(a['resume_iter'], 0.0)
        return times

    # ------------------------------------------------------------------ main loop
    def open_run(self, run):
        """Create ``runs/{run}`` and record the run (run.json); -> its done.json record or None.
        A run finished with other options is refused, naming it."""
        rdir = self.path('runs', run.id)
        os.makedirs(rdir, exist_ok=True)
        done = read_json(os.path.join(rdir, 'done.json'))
        h = self.run_hash(run)
        if done and done.get('hash') != h:
            raise StudyError(f'run {run.id} finished earlier with different options (arm, source, training or '
                             f'distill changed). Use another study_dir, or delete {rdir} and '
                             f'{self.exp_dir(run)} to redo it.')
        write_json_atomic(os.path.join(rdir, 'run.json'), {'id': run.id, 'arm': run.arm_name, 'definition': run.arm,
                                                     'ratio': run.ratio, 'seed': run.seed, 'hash': h})
        return done

    def run_all(self, evaluator):
        total = len(self.runs)
        t0 = time.time()
        worked = 0  # runs trained by this command (the ETA uses their mean duration)
        for k, run in enumerate(self.runs, 1):
            done = self.open_run(run)
            elapsed = time.time() - t0
            eta = ''
            if worked:
                left = sum(1 for r in self.runs[k - 1:] if not os.path.isfile(self.path('runs', r.id, 'done.json')))
                eta = f', about {elapsed / worked * left / 60:.0f} min left'
            note(f'[{k}/{total}] {run.id}' + (' (done, skipped)' if done else '')
                 + f'  elapsed {elapsed / 60:.1f} min{eta}')
            if not done:
                prep = self.prepare(run)
                self.train(run, prep)
                worked += 1
            evaluator.evaluate_run(self, run)
