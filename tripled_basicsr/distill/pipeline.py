"""The TripleD pipeline as small stages over one run state.

    preflight -> features -> scores -> selection -> report -> calibration -> write

``run_distill(opt)`` is the whole command. ``preflight`` checks everything that can be
checked without data (options, strategy keys, paths, device, output policy, the work-dir
lock) so a mistake fails in seconds, before the backbone is built. ``features`` runs on
every rank (under ``torchrun`` the ranks share the embedding); the later stages run on
rank 0 only, each reading what the earlier ones left in ``RunState`` and adding its own
results. To change one step, replace its stage function; to add a scoring or selection
rule, register a strategy (registry.py) instead.
"""
import contextlib
import datetime
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from tripled_basicsr.options import OptionError
from tripled_basicsr.distill.options import (feature_dependencies, is_multi, merge_options, resolve_budget, scale_of,
                                             source_entries, work_dir_of)
from tripled_basicsr.utils.log import note, warn


@dataclass
class RunState:
    """Everything one run knows; each stage fills its own block."""
    opt: dict
    progress: bool = True
    rank: int = 0
    world: int = 1
    t_start: float = field(default_factory=time.time)
    timings: dict = field(default_factory=dict)
    # preflight
    out_path: str = ''
    work: str = ''
    device: object = None
    writer: object = None  # DistilledWriter: output policy checked up front, entered by `write`
    lock: object = None
    # features
    source: object = None
    skipped: list = field(default_factory=list)  # unpaired / undecodable pairs (dicts)
    n_budget: int = 0
    task_budget: dict = field(default_factory=dict)  # several tasks: {task: units} of the subset
    model: object = None
    kinds: tuple = ()
    views_per_kind: int = 1
    store: object = None
    feat_info: dict = field(default_factory=dict)
    changed: list = field(default_factory=list)  # keys re-embedded because their file changed
    # scores
    valid: object = None  # (N_usable,) source indices with features
    n: int = 0  # subset size
    feats: object = None  # (N_usable, D) float32, L2-normalised
    stats: dict = field(default_factory=dict)
    k: int = 0
    labels: object = None
    c: object = None
    u: object = None
    ctx: dict = field(default_factory=dict)
    task_rows: dict = field(default_factory=dict)  # several tasks: {task: positions into valid}
    task_n: dict = field(default_factory=dict)  # several tasks: {task: units to select}
    # selection
    picked: object = None  # positions into valid
    stages: object = None
    # report
    mmd: dict = field(default_factory=dict)
    tasks: dict = field(default_factory=dict)  # several tasks: summary.tasks
    # calibration
    cal: object = None
    cal_report: dict = field(default_factory=dict)
    weights: object = None  # (n,) per-sample weights of the picked items (calibration.mode: weights)
    # write
    summary: dict = field(default_factory=dict)
    summary_text: str = ''


@contextlib.contextmanager
def timed(st, name):
    t = time.time()
    yield
    st.timings[name] = time.time() - t


# ---------------------------------------------------------------- distributed helpers
def init_distributed():
    """Initialise torch.distributed from torchrun's env (gloo on CPU, nccl on GPU). -> (rank, world)."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world <= 1:
        return 0, 1
    import torch.distributed as tdist
    if not tdist.is_initialized():
        backend = os.environ.get('TRIPLED_DIST_BACKEND') or ('nccl' if torch.cuda.is_available() else 'gloo')
        if backend == 'nccl':
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        tdist.init_process_group(backend=backend)
    return tdist.get_rank(), tdist.get_world_size()


# How long the other ranks wait for rank 0's selection, report and write (hours for millions of
# pairs): longer than the 30 min default timeout of a process group, which would abort them.
RANK0_WAIT = datetime.timedelta(days=2)


def _wait_group(world):
    """A gloo group with a long timeout for the final wait on rank 0 (None on one process).

    Created on every rank at the same point (``new_group`` is collective). gloo also under
    NCCL: the wait carries a small Python object and must not trip NCCL's watchdog."""
    if world <= 1:
        return None
    return torch.distributed.new_group(backend='gloo', timeout=RANK0_WAIT)


def _on_rank0(fn, rank, world, group=None, share=False):
    """Run ``fn`` on rank 0 and re-raise its error on every rank (so no rank hangs); with
    ``share``, every rank returns rank 0's result (a picklable value)."""
    result, err = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001
            err = exc
    if world > 1:
        box = [None if err is None else (type(err).__name__, str(err))]
        torch.distributed.broadcast_object_list(box, src=0, group=group)
        if box[0] is not None and err is None:
            raise RuntimeError(f'rank 0 failed: {box[0][0]}: {box[0][1]}')
    if err is not None:
        raise err
    if share and world > 1:
        box = [result]
        torch.distributed.broadcast_object_list(box, src=0, group=group)
        result = box[0]
    return result


# ---------------------------------------------------------------- entry point
def _run_stages(st, stages):
    """Run ``(timing name or None, stage function)`` pairs in order on the run state."""
    for name, stage in stages:
        if name is None:
            stage(st)
        else:
            with timed(st, name):
                stage(st)


def run_distill(user_opt, progress=True):
    """Run the whole pipeline. Returns the summary dict on rank 0 (None on other ranks)."""
    st = RunState(opt=merge_options(user_opt), progress=progress)
    st.rank, st.world = init_distributed()
    wait = _wait_group(st.world)
    try:
        _run_stages(st, (('preflight', preflight), ('setup', setup_features), ('features', extract)))
        # rank 0 selects and writes; the others wait for it here (a rank that returned at once
        # would tear down its process group while rank 0 still uses it: gloo then aborts the
        # process at exit) and fail with rank 0's error, if any
        _on_rank0(lambda: _run_stages(st, ((None, scores), ('selection', select), ('mmd', report),
                                           ('calibration', calibrate), (None, write))),
                  st.rank, st.world, group=wait)
        return st.summary if st.rank == 0 else None
    finally:
        if st.lock is not None:
            st.lock.release()


# ---------------------------------------------------------------- preflight
def _sources(opt):
    return [(f'{p}.{k}', s[k]) for p, s in source_entries(opt) for k in ('dataroot_gt', 'dataroot_lq', 'meta_info_file')
            if s.get(k)]


def check_work_dir(work, out_path, sources):
    """The work dir may not be, contain or lie inside the output (replacing the output would
    delete the features, or the output would be built inside the cache) nor a source."""
    from tripled_basicsr.utils.ownership import check_disjoint, path_relation
    rel = path_relation(work, out_path)
    if rel is not None:
        raise OptionError(f'work_dir {work} {rel} output.path {out_path}: replacing the output would delete the '
                          f'features (or the output would be written into the work dir). Use a work_dir beside the '
                          f'output, e.g. the default {out_path.rstrip(os.sep)}.work (leave work_dir unset).')
    check_disjoint(work, sources, 'work_dir', 'a work_dir', '_work')


def _writer_error(exc):
    """DistilledWriter's parameter errors, prefixed with the option that sets them."""
    msg = str(exc)
    for word, sec in (('tile_size', 'output'), ('compress_level', 'output'), ('scale', 'source')):
        if msg.startswith(word):
            return OptionError(f'{sec}.{msg}')
    return exc


def _check_output(st):
    from tripled_basicsr.data.distilled_format import DistilledWriter
    out = st.opt['output']
    try:
        return DistilledWriter(st.out_path, scale=scale_of(st.opt), tile_size=out['tile_size'],
                               compress_level=out['compress_level'], overwrite=out['overwrite'], tool='distill',
                               overwrite_option='output.overwrite: true (or --force-overwrite)',
                               sources=_sources(st.opt), codec='png' if out['codec'] == 'auto' else out['codec'])
    except ValueError as exc:
        raise _writer_error(exc) from exc


def _check_calibrator(opt):
    """The calibration network must be a registered BasicSR arch (needs BasicSR's registries)."""
    if not opt['calibration']['enabled'] or opt['calibration']['mode'] != 'pixels':
        return
    import tripled_basicsr
    tripled_basicsr.register()
    from basicsr.utils.registry import ARCH_REGISTRY
    name = opt['calibration']['network']['type']
    if name not in ARCH_REGISTRY:
        raise OptionError(f'calibration.network.type {name!r} is not a registered BasicSR arch (TripleD ships '
                          f'TripleDCalibrator).')


def preflight(st):
    """Every check that needs no data, before the first expensive step; takes the work-dir lock."""
    from tripled_basicsr.utils.device import resolve_device
    from tripled_basicsr.utils.lock import DirLock
    opt = st.opt
    st.out_path = os.path.abspath(os.path.expanduser(opt['output']['path']))
    st.work = work_dir_of(opt)
    st.device = resolve_device(opt['features']['device'], int(os.environ.get('LOCAL_RANK', 0)), 'features.device')

    def rank0():
        from tripled_basicsr.distill.features import claim_work_dir
        check_work_dir(st.work, st.out_path, _sources(opt))
        claim_work_dir(st.work, check_only=True)
        writer = _check_output(st)
        _check_calibrator(opt)
        lock = DirLock(st.work, 'work_dir', 'Two runs may share features only one after the other.').acquire()
        return writer, lock

    res = _on_rank0(rank0, st.rank, st.world)
    if st.rank == 0:
        st.writer, st.lock = res


# ---------------------------------------------------------------- features
def _open_pairs(s, p):
    """PairedSource of one ``source``-like entry ``s`` named ``p`` in messages."""
    from tripled_basicsr.data.paired_source import PairedSource, SourceError
    try:
        src = PairedSource(s['dataroot_gt'], s['dataroot_lq'], filename_tmpl=s['filename_tmpl'],
                           meta_info_file=s['meta_info_file'], scale=s['scale'],
                           on_missing='skip' if s['on_error'] == 'skip' else 'raise',
                           max_pixels=s['max_pixels'], max_pixels_option=f'{p}.max_pixels')
    except SourceError as exc:
        where = '' if p == 'source' else f'{p}: '
        if 'partner' in str(exc) or 'has no LQ' in str(exc) or 'has no GT' in str(exc):
            raise SourceError(f'{where}{exc} (Or set `{p}.on_error: skip` to leave unpaired files out.)') from exc
        if where:
            raise SourceError(f'{where}{exc}') from exc
        raise
    return src


def _as_crops(src, s, p, shapes=None):
    """The entry's PairedSource ``src`` as crop units when ``s['crop_size']`` (an int) asks for them."""
    if s.get('crop_size'):
        from tripled_basicsr.data.paired_source import SourceError
        from tripled_basicsr.distill.crops import CropSource
        try:
            skip = s['on_error'] == 'skip'
            if shapes is not None and not skip and any(hw is None for hw in shapes):
                shapes = None  # read again strictly: the unreadable image's own error names it
            src = CropSource(src, s['crop_size'], s.get('crop_step'), shapes=shapes, skip_unreadable=skip)
        except SourceError as exc:  # a file of the source, not an option: named as such
            raise SourceError(f'{"" if p == "source" else f"{p}: "}{exc} (Or set `{p}.on_error: skip` to leave '
                              f'such pairs out.)') from exc
        except ValueError as exc:
            raise OptionError(str(exc) if p == 'source' else f'{p}: {exc}') from exc
        if src.small_images:
            note(f'{len(src.small_images)} source image(s) smaller than {p}.crop_size {s["crop_size"]} '
                 f'give no crop (first: {src.small_images[0]!r}).')
    return src


def _resolve_auto_crop(entries, pairs):
    """``crop_size: auto`` -> one crop size for every entry, from the GT image sizes of all of
    them (crops.auto_crop_size), written into the entries (so the options recorded with the
    output and the feature cache name the size used). Returns the GT shapes per entry."""
    from tripled_basicsr.distill.crops import auto_crop_size, image_shapes
    shapes = [image_shapes(src, strict=False) for src in pairs]
    crop = auto_crop_size([hw for sh in shapes for hw in sh if hw], entries[0][1]['scale']) or 0
    for p, s in entries:
        s['crop_size'] = crop
    if int(os.environ.get('RANK', 0)) == 0:
        what = f'{crop}-px crops' if crop else 'whole images (median short side under 96 px)'
        note(f'source.crop_size auto -> {what} as selection units.')
    return shapes


def open_source(opt):
    """PairedSource from ``source`` options (a ``tasks.MultiSource`` of one per entry with
    ``sources:``), as crop units when ``crop_size`` asks for them (``auto`` is resolved here, in
    ``opt``); with on_error: skip, unpaired files (GT without LQ or the reverse, folders or LMDBs)
    are left out and returned as skipped entries."""
    entries = source_entries(opt)
    pairs = [_open_pairs(s, p) for p, s in entries]
    shapes = [None] * len(entries)
    if entries[0][1].get('crop_size') == 'auto':
        shapes = _resolve_auto_crop(entries, pairs)
    units = [_as_crops(src, s, p, sh) for (p, s), src, sh in zip(entries, pairs, shapes)]
    if is_multi(opt):
        from tripled_basicsr.distill.tasks import MultiSource
        src = MultiSource([(s['task'], u, s, p) for (p, s), u in zip(entries, units)])
    else:
        src = units[0]
    return src, list(src.skipped)


def unit_budget(opt, source, n_units):
    """n units: pairs (ratio of pairs) or, with crop units, crops (ratio of the source's GT pixels)."""
    if getattr(source, 'crop', 0):
        from tripled_basicsr.distill.crops import pixel_budget
        return pixel_budget(opt['selection'], source.total_pixels, source.crop, n_units)
    return resolve_budget(opt['selection'], n_units)


def task_budget(opt, source, n, rows=None):
    """Several tasks: {task: units} of the subset, the ``n`` units split by selection.task_quota
    over the tasks' units (of ``rows``, the usable unit indices, when given)."""
    from tripled_basicsr.distill.tasks import task_counts
    crop = getattr(source, 'crop', 0)
    return task_counts(n, opt['selection']['task_quota'], source.sizes(rows), unit='crops' if crop else 'pairs',
                       what='selection.ratio')


def _weights_id(fopt):
    ck = fopt.get('checkpoint')
    if ck:
        p = os.path.abspath(os.path.expanduser(str(ck)))
        st = os.stat(p) if os.path.exists(p) else None
        return {'checkpoint': p, 'size': st.st_size if st else None, 'mtime': int(st.st_mtime) if st else None}
    return {'pretrained': bool(fopt.get('pretrained'))}


def setup_features(st):
    """Source listing, budget check, backbone, feature store (created or checked for resume)."""
    from tripled_basicsr.distill.backbone import build_backbone, embed, normalization, resolve_auto_backbone
    from tripled_basicsr.distill.features import KINDS, FeatureStore, stale_rows
    from tripled_basicsr.distill.selection import resolve_clusters
    opt, fopt = st.opt, st.opt['features']
    st.source, st.skipped = open_source(opt)
    n_total = len(st.source)
    st.n_budget = unit_budget(opt, st.source, n_total)  # fail fast; re-checked after skipping
    if is_multi(opt):  # quotas per task, before the backbone
        st.task_budget = task_budget(opt, st.source, st.n_budget)
    else:
        resolve_clusters(opt['selection']['clusters'], st.n_budget)  # strata vs budget, before the backbone
    keys_hash = hashlib.sha256('\n'.join(st.source.keys).encode()).hexdigest()
    if fopt['backbone'] == 'auto':  # resolved into the options: the feature cache and meta name the model used;
        # on rank 0 only and shared, so ranks that see the hub differently still embed with one model
        fopt['backbone'] = _on_rank0(lambda: resolve_auto_backbone(fopt['pretrained'], fopt['checkpoint'],
                                                                   fopt['hub_timeout']), st.rank, st.world, share=True)
    st.model = build_backbone(fopt['backbone'], fopt['pretrained'], fopt['checkpoint'], fopt['input_size'],
                              fopt['model_kwargs'], fopt['hub_timeout'], fopt['seed'])
    with torch.no_grad():
        mean, std = normalization(st.model)
        probe, _ = embed(st.model, torch.zeros(1, 3, fopt['input_size'], fopt['input_size']), mean, std)
    dim = probe.shape[1]
    st.kinds = KINDS[fopt['image']]
    st.views_per_kind = 1 + int(fopt['local_views'])
    deps = feature_dependencies(opt, keys_hash, _weights_id(fopt))
    v = st.views_per_kind * len(st.kinds)

    def create():
        store = FeatureStore(st.work, n_total, v, dim, deps)
        changed = stale_rows(st.source, store.open('r+'), st.progress)
        if changed:
            note(f'{len(changed)} source pair(s) changed since their features were computed (first: '
                 f'{changed[0]!r}); embedding them again.')
        return store, changed

    res = _on_rank0(create, st.rank, st.world)
    if st.rank == 0:
        st.store, st.changed = res
    else:
        st.store = FeatureStore(st.work, n_total, v, dim, deps, rank=st.rank)


def extract(st):
    from tripled_basicsr.distill.features import extract_features
    interrupt = os.environ.get('TRIPLED_DISTILL_INTERRUPT_AFTER')  # test hook (resume tests)
    if is_multi(st.opt):  # each task its own on_error
        src = st.source
        on_error = np.array([p[2]['on_error'] == 'raise' for p in src.parts], bool)[src.task_index]

        def option(row):
            return f'{src.options_of(row)[1]}.on_error'
    else:
        on_error, option = st.opt['source']['on_error'], 'source.on_error'
    st.feat_info = extract_features(st.source, st.store, st.model, st.opt['features'], on_error,
                                    st.rank, st.world, st.progress,
                                    interrupt_after=int(interrupt) if interrupt else None, on_error_option=option)


# ---------------------------------------------------------------- scores
def _strata(opt, feats, n, progress, clusters=None):
    """k-means strata of one pool of items, k from selection.clusters and the budget n. -> (k, labels)."""
    from tripled_basicsr.distill.selection import kmeans, resolve_clusters
    sel = opt['selection']
    k = resolve_clusters(sel['clusters'] if clusters is None else clusters, n)
    labels, _ = kmeans(feats, k, seed=sel['seed'], iters=sel['kmeans_iters'], progress=progress)
    return k, labels


def _scores(opt, feats, stats, k, labels, progress, device, difficulty=None):
    """Complexity c and uncertainty u in [0, 1] of one pool of items. -> (c, u, ctx)."""
    from tripled_basicsr.distill.registry import COMPLEXITY, UNCERTAINTY
    sel = opt['selection']
    ctx = {'seed': sel['seed'], 'labels': labels, 'clusters': k, 'kmeans_iters': sel['kmeans_iters'],
           'progress': progress, 'device': str(device), 'difficulty': difficulty}
    out = []
    for name, reg in (('complexity', COMPLEXITY), ('uncertainty', UNCERTAINTY)):
        arr = np.asarray(reg.call(opt[name], feats, stats, ctx), np.float64)
        if arr.shape != (len(feats),) or not np.isfinite(arr).all():
            raise RuntimeError(f'{name} strategy {opt[name]["type"]!r} returned an invalid array '
                               f'(shape {arr.shape}, finite: {np.isfinite(arr).all()}).')
        out.append(np.clip(arr, 0, 1))
    return out[0], out[1], ctx


def scores(st):
    """Usable rows, pair features, k-means strata, complexity c and uncertainty u in [0, 1].

    Several tasks: the units of the subset are split over the tasks first (task_budget), then
    strata and scores are computed inside each task, on its own features: the strata of one
    task do not depend on the others, and c / u are ranks within the task, so the selection
    pressure (temperature) and the curriculum's "easy" mean the same in every task. Cluster
    ids are made unique over tasks (offset by the earlier tasks' clusters).
    """
    from tripled_basicsr.distill.features import pair_features
    opt, store, source = st.opt, st.store.open('r'), st.source
    done = np.asarray(store.done)
    st.valid = np.flatnonzero(done == 1)
    errors = store.errors()
    st.skipped += [{'key': source.keys[i], 'gt_path': source.source_path(i, 'gt'),
                    'lq_path': source.source_path(i, 'lq'), 'reason': errors.get(i, '')}
                   for i in np.flatnonzero(done == 2)]
    if len(st.valid) == 0:
        raise RuntimeError('No usable pairs: every pair was skipped (see errors above / work dir errors.json).')
    n_valid = len(st.valid)
    st.n = unit_budget(opt, source, n_valid) if n_valid != len(source) else st.n_budget
    multi = is_multi(opt)
    if multi:
        st.task_n = task_budget(opt, source, st.n, st.valid) if n_valid != len(source) else dict(st.task_budget)
        tix = source.task_index[st.valid]
        st.task_rows = {t: np.flatnonzero(tix == j) for j, t in enumerate(source.tasks)}

    with timed(st, 'kmeans'):
        from tripled_basicsr.distill import handcrafted
        if opt['features']['backbone'] == handcrafted.NAME:  # statistics in different units: z-score first
            from tripled_basicsr.distill.handcrafted import standardized_features
            st.feats = standardized_features(store.feat, len(st.kinds), st.views_per_kind)[st.valid]
        else:
            st.feats = pair_features(store.feat, len(st.kinds), st.views_per_kind)[st.valid]
        stats_arr = np.asarray(store.stats, np.float64)[st.valid]
        st.stats = {'entropy': stats_arr[:, 0], 'gradient': stats_arr[:, 1], 'token_var': stats_arr[:, 2]}
        if not multi:
            st.k, st.labels = _strata(opt, st.feats, st.n, st.progress)
    if not multi:
        with timed(st, 'scoring'):
            st.c, st.u, st.ctx = _scores(opt, st.feats, st.stats, st.k, st.labels, st.progress, st.device,
                                         _difficulty(st, st.valid))
        return
    st.labels = np.full(n_valid, -1, np.int64)
    st.c, st.u = np.full(n_valid, 0.5), np.full(n_valid, 0.5)
    st.k, st.ctx = 0, {'tasks': {}}
    clusters = opt['selection']['clusters']
    for t, rows in st.task_rows.items():
        n_t = st.task_n[t]
        if n_t == 0:  # share 0: the task is listed (and reported) but gives no unit
            continue
        # an integer `clusters` applies per task, at most the task's budget
        k_t = clusters if clusters == 'auto' else min(int(clusters), n_t)
        t0 = time.time()
        k, labels = _strata(opt, st.feats[rows], n_t, st.progress, k_t)
        t1 = time.time()
        st.c[rows], st.u[rows], st.ctx['tasks'][t] = _scores(opt, st.feats[rows], {k: v[rows] for k, v in
                                                                                   st.stats.items()},
                                                             k, labels, st.progress, st.device,
                                                             _difficulty(st, st.valid[rows]))
        st.timings['kmeans'] += t1 - t0
        st.timings['scoring'] = st.timings.get('scoring', 0.0) + time.time() - t1
        st.labels[rows] = labels + st.k
        st.k += k


def _difficulty(st, rows):
    """A callable taps -> proxy difficulty of the source units ``rows`` (distill/difficulty.py),
    computed (timed as 'difficulty') only when a strategy asks for it."""
    def get(taps):
        from tripled_basicsr.distill.difficulty import unit_difficulty
        t = time.time()
        d = unit_difficulty(st.source, rows, taps=taps, seed=st.opt['selection']['seed'], progress=st.progress)
        st.timings['difficulty'] = st.timings.get('difficulty', 0.0) + time.time() - t
        return d
    return get


# ---------------------------------------------------------------- selection
def _select_pool(sel, feats, c, u, n, ctx):
    from tripled_basicsr.distill.registry import SELECTION
    picked, _ = SELECTION.call(sel, feats, c, u, n, ctx)
    picked = np.asarray(picked, np.int64)
    if len(picked) != n or len(np.unique(picked)) != n:
        raise RuntimeError(f'selection {sel["type"]!r} returned {len(picked)} items ({len(np.unique(picked))} '
                           f'unique), expected {n}.')
    return picked


def select(st):
    """The selection strategy picks n positions; the curriculum splits them in two stages.
    Several tasks: each task's quota is picked inside the task and its stages use the task's
    own complexities (easy_quantile inside each task)."""
    from tripled_basicsr.distill.selection import curriculum_stages
    sel, q = st.opt['selection'], st.opt['curriculum']['easy_quantile']
    if not is_multi(st.opt):
        st.picked = _select_pool(sel, st.feats, st.c, st.u, st.n, st.ctx)
        st.stages = curriculum_stages(st.c[st.picked], q)
        return
    picked, stages = [], []
    for t, rows in st.task_rows.items():
        if st.task_n[t] == 0:
            continue
        local = _select_pool(sel, st.feats[rows], st.c[rows], st.u[rows], st.task_n[t], st.ctx['tasks'][t])
        picked.append(rows[local])
        stages.append(curriculum_stages(st.c[rows[local]], q))
    picked, stages = np.concatenate(picked), np.concatenate(stages)
    order = np.argsort(picked, kind='stable')  # subset in source order (tasks in the order of `sources:`)
    st.picked, st.stages = picked[order], stages[order]


# ---------------------------------------------------------------- report
def _mmd_report(feats, picked, c, ropt, seed, tag=()):
    """MMD of ``feats[picked]`` to (a bank of) ``feats``, next to random and top-complexity
    subsets of the same size; ``tag`` extends the random streams (one per task)."""
    from tripled_basicsr.utils.distribution import median_bandwidth, mmd_numpy
    n_pool, n = len(feats), len(picked)
    rng = np.random.default_rng([seed, 7, *tag])
    m = ropt['mmd_samples']
    bank_idx = np.sort(rng.choice(n_pool, min(m, n_pool), replace=False))
    bank = feats[bank_idx]
    bw = median_bandwidth(bank)

    def mmd_of(idx):
        idx = np.asarray(idx)
        if len(idx) > m:
            idx = np.sort(np.random.default_rng([seed, 8, *tag]).choice(idx, m, replace=False))
        return mmd_numpy(feats[idx], bank, bw)

    rand = [mmd_of(np.random.default_rng([seed, 100 + r, *tag]).choice(n_pool, n, replace=False))
            for r in range(ropt['random_repeats'])]
    return {'subset': mmd_of(picked), 'random_mean': float(np.mean(rand)), 'random_std': float(np.std(rand)),
            'random_repeats': len(rand), 'top_complexity': mmd_of(np.argsort(-c, kind='stable')[:n]),
            'bandwidth': bw, 'bank_size': int(len(bank_idx))}


def report(st):
    """MMD of the subset to the source, next to random and top-complexity subsets of the same size.
    Several tasks: also per task (the task's picks vs random picks of the same size from the task)."""
    ropt, seed = st.opt['report'], st.opt['selection']['seed']
    st.mmd = _mmd_report(st.feats, st.picked, st.c, ropt, seed)
    if not is_multi(st.opt):
        return
    from tripled_basicsr.distill.tasks import quota_shares
    sizes = {t: len(rows) for t, rows in st.task_rows.items()}
    shares = dict(zip(sizes, quota_shares(st.opt['selection']['task_quota'], sizes).tolist()))
    picked_set = np.zeros(len(st.valid), bool)
    picked_set[st.picked] = True
    st.tasks = {}
    for j, (t, rows) in enumerate(st.task_rows.items()):
        local = np.flatnonzero(picked_set[rows])
        mmd = _mmd_report(st.feats[rows], local, st.c[rows], ropt, seed, (j,)) if len(local) else None
        st.tasks[t] = {'N': int(len(rows)), 'n': int(len(local)), 'quota': len(local) / len(st.picked),
                       'share': shares[t], 'mmd': mmd}


# ---------------------------------------------------------------- calibration
def calibrate(st):
    """Calibrate when enabled: per-sample weights (mode weights, no pixel changes), or train the
    calibrator CNN (mode pixels) and decide, by MMD before/after, whether to apply it."""
    copt = st.opt['calibration']
    st.cal, st.cal_report = None, {'enabled': bool(copt['enabled']), 'mode': copt['mode']}
    if not copt['enabled']:
        return
    if copt['mode'] == 'weights':
        st.cal_report = _weights_calibration(st)
        return
    cal, rep = _train_calibrator(st)
    rep['enabled'] = True
    worse = rep['mmd_after'] > rep['mmd_before']
    no_gain = rep['mmd_after'] == rep['mmd_before']
    rep['improved'] = not (worse or no_gain)
    rep['applied'] = True
    if no_gain:
        note('calibration found no transform that brings the subset closer to the source (MMD '
             f'{rep["mmd_before"]:.5g}); writing the subset uncalibrated.')
        cal, rep['applied'] = None, False
    elif worse:
        msg = (f'Calibration moved the subset away from the source: MMD {rep["mmd_before"]:.5g} before, '
               f'{rep["mmd_after"]:.5g} after.')
        if copt['on_worse'] == 'raise':
            from tripled_basicsr.distill.calibration import CalibrationWorse
            raise CalibrationWorse(msg + ' Nothing was written. Set calibration.on_worse: skip (write the '
                                   'uncalibrated subset), keep (write it calibrated anyway), '
                                   'calibration.keep_best: true, or calibration.enabled: false; or try a lower '
                                   'lr / more iters.')
        if copt['on_worse'] == 'skip':
            warn(f'{msg} Writing the uncalibrated subset (on_worse: skip).')
            cal, rep['applied'] = None, False
    st.cal, st.cal_report = cal, rep


def _weights_calibration(st):
    """Kernel mean matching of the subset to a full-set feature bank (degradation.kmm_weights)."""
    from tripled_basicsr.distill.degradation import kmm_weights
    from tripled_basicsr.utils.distribution import median_bandwidth
    copt, seed = st.opt['calibration'], st.opt['selection']['seed']
    t = time.time()
    n_valid = len(st.valid)
    rng = np.random.default_rng([seed, 9])
    bank_idx = np.arange(n_valid) if n_valid <= copt['bank_size'] else np.sort(
        rng.choice(n_valid, copt['bank_size'], replace=False))
    bank = st.feats[bank_idx].astype(np.float64)
    bw = median_bandwidth(bank)
    lo, hi = copt['weight_range']
    w, before, after = kmm_weights(st.feats[st.picked], bank, bw, lo=lo, hi=hi)
    st.weights = w
    return {'enabled': True, 'mode': 'weights', 'applied': True, 'improved': bool(after < before),
            'mmd_before': before, 'mmd_after': after, 'weight_min': float(w.min()), 'weight_max': float(w.max()),
            'weight_range': [lo, hi], 'bank_size': int(len(bank_idx)), 'bandwidth': bw, 'iters': None,
            'seconds': time.time() - t}


def _train_calibrator(st):
    from tripled_basicsr.distill.calibration import train_calibrator
    from tripled_basicsr.distill.features import EmbedInputs, _collate
    fopt, copt, seed = st.opt['features'], st.opt['calibration'], st.opt['selection']['seed']
    valid = st.valid
    rng = np.random.default_rng([seed, 9])
    bank_rows = valid if len(valid) <= copt['bank_size'] else np.sort(rng.choice(valid, copt['bank_size'],
                                                                               replace=False))
    bank = torch.from_numpy(np.asarray(st.store.feat[bank_rows, 0, :], np.float32))
    bank = torch.nn.functional.normalize(bank, dim=1)
    sub = valid[st.picked]
    if len(sub) > copt['max_images']:
        sub = np.sort(rng.choice(sub, copt['max_images'], replace=False))
    kinds = ('gt',) if fopt['image'] in ('gt', 'both') else ('gt', 'lq')
    ds = EmbedInputs(st.source, kinds, fopt['input_size'], 0, fopt['decode_size'], fopt['seed'])
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, sub.tolist()), batch_size=64,
                                         num_workers=fopt['num_workers'], collate_fn=_collate)
    views = []
    for _, v, _, errs, _ in loader:
        if any(errs):
            raise RuntimeError(f'calibration: cannot decode a subset image: {next(e for e in errs if e)}')
        views.append(v)
    v = torch.cat(views).permute(0, 1, 4, 2, 3).float().div_(255)  # (n, kinds, 3, S, S)
    gt_views = v[:, 0].contiguous()
    target = gt_views if len(kinds) == 1 else v[:, 1].contiguous()
    return train_calibrator(st.model, gt_views, target, bank, copt, device=str(st.device), seed=seed,
                            progress=st.progress)


# ---------------------------------------------------------------- write
def _versions():
    from importlib import metadata
    out = {'python': sys.version.split()[0]}
    for dist in ('torch', 'timm', 'numpy', 'basicsr', 'tripled_basicsr'):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = 'unknown'
    return out


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 100.0 if mse == 0 else min(100.0, 10 * math.log10(255.0 ** 2 / mse))


RAW_AUTO_MAX = 4 << 30  # output.codec auto: raw up to 4 GiB of GT + LQ arrays


def auto_codec(crop, scale, n, limit=RAW_AUTO_MAX):
    """``output.codec: auto`` -> 'raw' for n crop units of ``crop`` px whose GT + LQ arrays fit in
    ``limit`` bytes (a small distilled set can afford no compression: a random patch is a slice,
    not a decode); 'png' for whole images (their sizes vary, and PNG values stay readable by
    stock BasicSR datasets) and for larger sets."""
    if not crop:
        return 'png'
    return 'raw' if n * 3 * crop * crop * (1 + 1 / scale ** 2) <= limit else 'png'


def write(st):
    """Write the subset (calibrated when applied), the summary and the report files, atomically."""
    from tqdm import tqdm

    from tripled_basicsr.distill.calibration import calibrate_pair
    t = time.time()
    opt, source, c, u = st.opt, st.source, st.c, st.u
    w = st.writer
    if opt['output']['codec'] == 'auto':  # resolved into the options, so the output records what was written
        opt['output']['codec'] = w.codec = auto_codec(getattr(source, 'crop', 0), scale_of(opt), len(st.picked))
    w.provenance = {'source': source.describe(), 'options': opt, 'work_dir': st.work}
    psnrs, write_skipped, strengths, greys = [], [], [], 0
    tol = opt['calibration']['residual_tolerance']
    sel_global = st.valid[st.picked]
    multi = is_multi(opt)
    with w:
        for j, gi in enumerate(tqdm(sel_global, desc='write', unit='pair', disable=not st.progress,
                                    dynamic_ncols=True)):
            gi = int(gi)
            try:
                gt, lq = source.read_pair(gi)
            except Exception as exc:  # noqa: BLE001
                if (source.options_of(gi)[0] if multi else opt['source'])['on_error'] == 'raise':
                    raise
                write_skipped.append({'key': source.keys[gi], 'reason': f'{type(exc).__name__}: {exc}'})
                continue
            extra = {}
            if st.cal is not None:
                gt_c, lq_c, info = calibrate_pair(st.cal, gt, lq, scale=scale_of(opt), tolerance=tol)
                psnrs.append(_psnr(gt_c, gt))
                strengths.append(info['strength'])
                greys += int(info['grey'])
                extra['calibration_strength'] = info['strength']
                gt, lq = gt_c, lq_c
            if st.weights is not None:
                extra['weight'] = round(float(st.weights[j]), 6)
            if hasattr(source, 'provenance'):  # crop units: image key, image index, GT box
                extra.update(source.provenance(gi))
            if multi:
                extra['task'] = source.task_of(gi)
            pi = int(st.picked[j])
            w.add(source.keys[gi], gt, lq, gt_path=source.source_path(gi, 'gt'),
                  lq_path=source.source_path(gi, 'lq'), complexity=round(float(c[pi]), 6),
                  uncertainty=round(float(u[pi]), 6), cluster=int(st.labels[pi]), stage=int(st.stages[j]),
                  calibrated=st.cal is not None and extra.get('calibration_strength', 1.0) > 0,
                  source_index=gi, **extra)
        if st.cal is not None:
            st.cal_report['psnr_fidelity'] = float(np.mean(psnrs)) if psnrs else None
            st.cal_report['residual_tolerance'] = tol
            st.cal_report['grey_pairs'] = greys
            st.cal_report['strength_mean'] = float(np.mean(strengths)) if strengths else None
            st.cal_report['refused_pairs'] = int(sum(1 for v in strengths if v == 0))
            torch.save(st.cal.state_dict(), os.path.join(w.tmp, 'calibrator.pth'))
        st.timings['write'] = time.time() - t
        st.timings['total'] = time.time() - st.t_start
        st.summary = _summary(st, n_written=len(w.samples), write_skipped=write_skipped)
        w.set_summary(st.summary)
        _write_reports(st, w.tmp)
    if st.progress:
        print(st.summary_text)


def _summary(st, n_written, write_skipped):
    opt, fopt, c, u, picked, n_valid = st.opt, st.opt['features'], st.c, st.u, st.picked, len(st.valid)
    return {
        'name': opt['name'], 'output': st.out_path, 'N': int(len(st.source)), 'N_usable': int(n_valid), 'n': int(n_written),
        'n_selected': int(st.n), 'ratio': st.n / n_valid,
        'units': 'crops' if getattr(st.source, 'crop', 0) else 'images',
        'pixel_ratio': (st.n * st.source.crop ** 2 / st.source.total_pixels) if getattr(st.source, 'crop', 0) else None,
        'selection': opt['selection']['type'], 'clusters': int(st.k),
        'cluster_sizes': np.bincount(st.labels[st.labels >= 0], minlength=st.k).tolist(),  # -1: a task of share 0
        'cluster_picks': np.bincount(st.labels[picked], minlength=st.k).tolist(),
        'stage1': int((st.stages == 1).sum()), 'stage2': int((st.stages == 2).sum()),
        'mmd': st.mmd,
        'complexity': {'type': opt['complexity']['type'], 'source_mean': float(c.mean()),
                       'subset_mean': float(c[picked].mean())},
        'uncertainty': {'type': opt['uncertainty']['type'], 'source_mean': float(u.mean()),
                        'subset_mean': float(u[picked].mean())},
        'calibration': st.cal_report,
        'features': {'backbone': fopt['backbone'], 'weights': st.model.tripled_weights, 'dim': int(st.feats.shape[1]),
                     'views_per_pair': int(st.store.v), 'embedded_this_run': st.feat_info['embedded_now'],
                     'resumed_from': st.feat_info['resumed_from'], 'changed_since_last_run': len(st.changed),
                     'world_size': int(st.world), 'forward_seconds': st.feat_info['forward_seconds']},
        'skipped': st.skipped + write_skipped,
        'timings': {k: round(v, 3) for k, v in st.timings.items()},
        'versions': _versions(),
        'options': opt,
        **({'tasks': st.tasks, 'task_quota': opt['selection']['task_quota']} if is_multi(opt) else {}),
    }


def _write_reports(st, directory):
    from tripled_basicsr.distill.report import text_summary, write_report_png, write_scores_csv
    ropt, seed = st.opt['report'], st.opt['selection']['seed']
    st.summary_text = text_summary(st.summary, st.out_path)
    with open(os.path.join(directory, 'report.txt'), 'w', encoding='utf-8') as f:
        f.write(st.summary_text + '\n')
    tasks = None
    if is_multi(st.opt):  # the task of every usable unit (report.png colours, source_scores.csv column)
        tasks = np.asarray(st.source.tasks, dtype=object)[st.source.task_index[st.valid]]
    if ropt['plot']:
        write_report_png(os.path.join(directory, 'report.png'), st.feats, st.c, st.picked, st.labels, st.summary,
                         seed, tasks=tasks)
    if ropt['scores_csv']:
        write_scores_csv(os.path.join(directory, 'source_scores.csv'), st.source, st.valid, st.c, st.u, st.labels,
                         st.picked, st.stats, tasks=tasks)
