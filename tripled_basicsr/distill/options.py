"""Options of ``python -m tripled_basicsr.distill``: defaults, merging, validation.

Every key is documented in docs/reference/distill.md (strategy keys too). ``merge_options`` checks every key and value
before any work starts: fixed sections against ``DEFAULTS``, the strategy sections
(``complexity``, ``uncertainty``, ``selection``) against the registered strategy's
signature (registry.py), so a typo fails in milliseconds, not after the feature stage.
"""
import copy
import math
import os

from tripled_basicsr import options as ck
from tripled_basicsr.data.paired_source import check_filename_tmpl
from tripled_basicsr.options import OptionError  # noqa: F401  (re-exported: the historical import path)
from tripled_basicsr.utils.lmdb_io import is_lmdb

DEFAULTS = {
    'name': 'distill',
    'work_dir': None,  # None -> '{output.path}.work'
    'source': {
        'dataroot_gt': None,
        'dataroot_lq': None,
        'io_backend': {'type': 'disk'},
        'filename_tmpl': '{}',
        'meta_info_file': None,
        'scale': 1,
        'on_error': 'raise',
        # units: crop_size x crop_size GT crops (ratio = share of source pixels); 0: whole images;
        # auto: crops.auto_crop_size of the source's image sizes (crops beat whole images, docs/method.md)
        'crop_size': 'auto',
        'crop_step': None,  # None: = crop_size (a grid without overlap)
        # an image whose header claims more pixels is refused (skipped with on_error: skip) before it is
        # decoded or cut into crops; 2**28 = 16384 x 16384 (an 8K frame is 33 M); 0 or null: no limit
        'max_pixels': 1 << 28,
    },
    # several tasks (all-in-one): a list of `source`-like entries, each with a `task` name; replaces `source`
    'sources': None,
    # codec auto: raw (uncompressed, a crop is a slice) for crop units up to RAW_AUTO_MAX bytes, else png
    'output': {'path': None, 'tile_size': 0, 'compress_level': 1, 'overwrite': False, 'codec': 'auto'},
    'features': {
        # auto: the pretrained ViT-S/16 when its weights can be had, else tripled_stats (backbone.resolve_auto_backbone)
        'backbone': 'auto',
        'pretrained': True,
        'checkpoint': None,
        'model_kwargs': {},
        'input_size': 128,
        'image': 'gt',
        'local_views': 0,
        'decode_size': 'auto',
        'batch_size': 64,
        'num_workers': 2,
        'device': 'auto',
        'amp': 'auto',
        'seed': 0,
        'hub_timeout': 3.0,
    },
    # strategy sections: `type` picks a registered strategy, whose signature gives the other keys
    'complexity': {'type': 'vit_entropy'},
    'uncertainty': {'type': 'knn_rarity'},
    # with `sources:` also task_quota (TASK_QUOTA_DEFAULT; a single `source:` has no such key)
    # importance (power 1, systematic draw, quota count): each k-means stratum keeps its unit share, units
    # inside it drawn ~ proxy difficulty; the best worst case over the task suite and the demo, where
    # k-center, the untilted draw and the weight-quota tilt each lost somewhere (docs/method.md); each seed a subset
    'selection': {'type': 'importance', 'ratio': 0.02, 'num': None, 'clusters': 'auto', 'seed': 0, 'kmeans_iters': 50},
    'curriculum': {'easy_quantile': 0.5},
    'calibration': {
        # off by default: no calibration variant beat the uncalibrated subset on the real-data study
        # (docs/method.md, "Measurements"); `mode: weights` is the one that changes no pixel
        'enabled': False,
        # weights: per-sample weights (kernel mean matching), no pixel changes; pixels: the calibrator CNN
        'mode': 'weights',
        'weight_range': [0.25, 4.0],  # weights mode: bounds of each weight (mean weight 1)
        'residual_tolerance': 0.02,  # pixels mode: max drift of the LQ-GT residual stats / noise level
        'network': {'type': 'TripleDCalibrator'},
        'iters': 300,
        'lr': 1e-3,
        'batch_size': 32,
        'bank_batch': 1024,
        'bank_size': 4096,
        'max_images': 2048,
        'mmd_weight': 1.0,
        'kl_weight': 0.1,
        'fidelity_weight': 10.0,
        'keep_best': True,
        'eval_every': None,
        'on_worse': 'raise',
    },
    'report': {'mmd_samples': 4096, 'random_repeats': 5, 'plot': True, 'scores_csv': True},
}

# options whose change invalidates stored features (checked on resume)
FEATURE_KEYS = {
    'source': ('dataroot_gt', 'dataroot_lq', 'filename_tmpl', 'meta_info_file', 'scale', 'crop_size', 'crop_step'),
    'features': ('backbone', 'pretrained', 'checkpoint', 'model_kwargs', 'input_size', 'image', 'local_views',
                 'decode_size', 'seed'),
}
_STRATEGY_SECTIONS = ('complexity', 'uncertainty', 'selection')
SOURCE_ENTRY = {'task': None, **DEFAULTS['source']}  # one entry of `sources:`
TASK_QUOTA_DEFAULT = 'proportional'  # selection.task_quota with `sources:`
_FREE_MAPPINGS = ('model_kwargs', 'network', 'io_backend')  # passed through, checked by their consumer


def _merge(base, over, path):
    out = copy.deepcopy(base)
    for k, v in ck.mapping(path.rstrip('.') or 'options', over).items():
        if k not in base:
            raise ck.unknown_key(path, k, list(base))
        if isinstance(base.get(k), dict) and k not in _FREE_MAPPINGS:
            if k in _STRATEGY_SECTIONS:
                v = ck.mapping(k, v)
                # another strategy type: start from its own defaults, not from the default type's keys
                out[k] = dict(v) if 'type' in v and v['type'] != base[k].get('type') else {**base[k], **v}
                if k == 'selection':
                    out[k] = {**{s: base[k][s] for s in base[k] if s != 'type'}, **out[k]}
            else:
                out[k] = _merge(base[k], v, f'{path}{k}.')
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_options(user):
    """User options (dict from YAML) on top of DEFAULTS, every key and value checked; returns a new dict.

    With ``sources:`` (several tasks) the merged options have ``sources`` (each entry on top of
    the ``source`` defaults) and no ``source``; ``features.image`` defaults to ``both`` then.
    """
    from tripled_basicsr.distill import scoring, selection  # noqa: F401  (register the built-in strategies)
    from tripled_basicsr.distill.registry import COMPLEXITY, SELECTION, UNCERTAINTY
    user = ck.mapping('options', user)
    multi = user.get('sources') is not None
    if multi and 'source' in user:
        raise OptionError('Set either source: (one paired set) or sources: (a list of paired sets, one per task), '
                          'not both; move the source: entry into sources: with a task name.')
    opt = _merge(DEFAULTS, user, '')
    if multi:
        entries = user['sources']
        if not isinstance(entries, (list, tuple)) or not entries:
            raise OptionError(f'sources must be a non-empty list of paired sets, each with a task name '
                              f'(- {{task: rain, dataroot_gt: ..., dataroot_lq: ...}}); got {entries!r}.')
        opt['sources'] = [_merge(SOURCE_ENTRY, e, f'sources[{i}].') for i, e in enumerate(entries)]
        del opt['source']
        if 'image' not in ck.mapping('features', user.get('features')):
            # several tasks: the features see the degradation (LQ) next to the content (GT), so the
            # strata separate tasks and degradation levels, not only scenes
            opt['features']['image'] = 'both'
    for sec, reg in (('complexity', COMPLEXITY), ('uncertainty', UNCERTAINTY), ('selection', SELECTION)):
        opt[sec] = reg.resolve(opt[sec])
    if multi:
        opt['selection'].setdefault('task_quota', TASK_QUOTA_DEFAULT)
    validate(opt)
    return opt


def is_multi(opt):
    """True for merged options with several tasks (``sources:``)."""
    return opt.get('sources') is not None


def source_entries(opt):
    """[(option path, source options)]: ``[('source', ...)]`` or ``[('sources[0]', ...), ...]``."""
    if is_multi(opt):
        return [(f'sources[{i}]', s) for i, s in enumerate(opt['sources'])]
    return [('source', opt['source'])]


def scale_of(opt):
    """The scale of the distillation (one for every source; checked by ``validate``)."""
    return source_entries(opt)[0][1]['scale']


def _validate_source(src, p):
    """Checks of one paired source (``source`` or ``sources[i]``, named by ``p``); normalises in place."""
    for k in ('dataroot_gt', 'dataroot_lq'):
        if not src.get(k):
            raise OptionError(f'{p}.{k} is required (a folder or a BasicSR .lmdb).')
        ck.string(f'{p}.{k}', src[k])
    ck.choice(f'{p}.on_error', src['on_error'], ('raise', 'skip'))
    src['filename_tmpl'] = check_filename_tmpl(ck.string(f'{p}.filename_tmpl', src['filename_tmpl']),
                                               f'{p}.filename_tmpl', OptionError)
    src['max_pixels'] = 0 if src['max_pixels'] is None else ck.integer(f'{p}.max_pixels', src['max_pixels'], lo=0)
    ck.string(f'{p}.meta_info_file', src['meta_info_file'], allow_none=True)
    src['scale'] = ck.integer(f'{p}.scale', src['scale'], lo=1)
    src['crop_size'] = _int_or(f'{p}.crop_size', src['crop_size'], ('auto',), 0)
    if src['crop_step'] is not None:
        src['crop_step'] = ck.integer(f'{p}.crop_step', src['crop_step'], lo=1)
        if src['crop_size'] in (0, 'auto'):
            what = '0 (whole images)' if src['crop_size'] == 0 else 'auto'
            raise OptionError(f'{p}.crop_step is set but {p}.crop_size is {what}; set crop_size too.')
    for k in ('crop_size', 'crop_step'):
        if src[k] not in (None, 'auto') and src[k] % src['scale']:
            raise OptionError(f'{p}.{k} ({src[k]}) must be a multiple of {p}.scale ({src["scale"]}) so the '
                              f'LQ crop is aligned.')
    if src['crop_size'] != 'auto' and 0 < src['crop_size'] < 8:
        raise OptionError(f'{p}.crop_size must be 0 (whole images) or >= 8; got {src["crop_size"]}.')
    backend = ck.mapping(f'{p}.io_backend', src.get('io_backend')).get('type', 'disk')
    ck.choice(f'{p}.io_backend.type', backend, ('disk', 'lmdb'))
    for root in (src['dataroot_gt'], src['dataroot_lq']):
        root_is_lmdb = is_lmdb(root)
        if os.path.exists(root) and root_is_lmdb != (backend == 'lmdb'):
            want = 'lmdb' if root_is_lmdb else 'disk'
            raise OptionError(f'{p}.io_backend.type is {backend!r} but {root} is '
                              f'{"a BasicSR LMDB" if root_is_lmdb else "a folder"}; set io_backend: {{type: {want}}}.')
    return backend


def _validate_sources(entries):
    """``sources:``: each entry as ``source``, plus a unique task name; the entries must agree on
    what makes one distilled set (scale, storage, crop units)."""
    from tripled_basicsr.distill.tasks import check_task_name
    first, ref, ref_backend = {}, entries[0], None
    for i, src in enumerate(entries):
        p = f'sources[{i}]'
        name = check_task_name(f'{p}.task', src.get('task'))
        backend = _validate_source(src, p)
        ref_backend = ref_backend or backend  # sources[0]'s
        if name in first:
            raise OptionError(f'{p}.task {name!r} repeats sources[{first[name]}].task: each task appears once. '
                              f'Rename one, or put both sets in one folder (or one meta_info_file) under one task.')
        first[name] = i
        if src['scale'] != ref['scale']:
            raise OptionError(f'{p}.scale ({src["scale"]}) differs from sources[0].scale ({ref["scale"]}): the tasks '
                              f'of one distillation share the scale (one distilled set has one). Distil them '
                              f'separately, or bring them to one scale.')
        if backend != ref_backend:
            raise OptionError(f'{p}.io_backend.type ({backend}) differs from sources[0].io_backend.type '
                              f'({ref_backend}): use one storage for every task (e.g. pack the folders to LMDBs with '
                              f'python -m tripled_basicsr.pack, or keep all as folders).')
        for k in ('crop_size', 'crop_step'):
            if src[k] != ref[k]:
                raise OptionError(f'{p}.{k} ({src[k]}) differs from sources[0].{k} ({ref[k]}): the selection units '
                                  f'must be the same for every task; set the same {k} on every source.')


def _int_or(path, v, words, lo):
    return v if v in words else ck.integer(path, v, lo=lo)


def _validate_output(out):
    if not out.get('path'):
        raise OptionError('output.path is required (the distilled dir to create).')
    ck.string('output.path', out['path'])
    out['tile_size'] = ck.integer('output.tile_size', out['tile_size'], lo=0)
    out['compress_level'] = ck.integer('output.compress_level', out['compress_level'], lo=0, hi=9)
    ck.boolean('output.overwrite', out['overwrite'])
    ck.choice('output.codec', out['codec'], ('auto', 'png', 'raw'))


def _validate_features(f):
    ck.string('features.backbone', f['backbone'])
    ck.boolean('features.pretrained', f['pretrained'])
    ck.string('features.checkpoint', f['checkpoint'], allow_none=True)
    ck.mapping('features.model_kwargs', f['model_kwargs'])
    f['input_size'] = ck.integer('features.input_size', f['input_size'], lo=16)
    ck.choice('features.image', f['image'], ('gt', 'lq', 'both'))
    f['local_views'] = ck.integer('features.local_views', f['local_views'], lo=0)
    f['decode_size'] = _int_or('features.decode_size', f['decode_size'], ('auto',), 16)
    if f['decode_size'] == 'auto':
        f['decode_size'] = f['input_size'] * (4 if f['local_views'] else 2)
    if f['decode_size'] < f['input_size']:
        raise OptionError(f'features.decode_size ({f["decode_size"]}) must be >= input_size ({f["input_size"]}).')
    f['batch_size'] = ck.integer('features.batch_size', f['batch_size'], lo=1)
    f['num_workers'] = ck.integer('features.num_workers', f['num_workers'], lo=0)
    ck.string('features.device', f['device'])
    if f['amp'] != 'auto':
        ck.boolean('features.amp', f['amp'])
    f['seed'] = ck.integer('features.seed', f['seed'])
    f['hub_timeout'] = ck.number('features.hub_timeout', f['hub_timeout'], lo=0, lo_open=True)


def _validate_selection(sel, opt):
    """The fixed keys of ``selection`` (the strategy's own keys are checked by its registry)."""
    if sel.get('num') is None and sel.get('ratio') is None:
        raise OptionError('selection: set ratio (fraction of pairs) or num (number of pairs).')
    if sel.get('num') is not None:
        sel['num'] = ck.integer('selection.num', sel['num'], lo=1)
    if sel.get('ratio') is not None:
        sel['ratio'] = ck.ratio('selection.ratio', sel['ratio'])
    sel['seed'] = ck.integer('selection.seed', sel['seed'])
    sel['clusters'] = _int_or('selection.clusters', sel['clusters'], ('auto',), 1)
    sel['kmeans_iters'] = ck.integer('selection.kmeans_iters', sel['kmeans_iters'], lo=1)
    if is_multi(opt):
        from tripled_basicsr.distill.tasks import check_task_quota
        sel['task_quota'] = check_task_quota(sel.get('task_quota', TASK_QUOTA_DEFAULT),
                                             [s['task'] for s in opt['sources']])


def _validate_calibration(c):
    ck.boolean('calibration.enabled', c['enabled'])
    ck.choice('calibration.mode', c['mode'], ('weights', 'pixels'))
    wr = c['weight_range']
    if not isinstance(wr, (list, tuple)) or len(wr) != 2:
        raise OptionError(f'calibration.weight_range must be a list [low, high] with 0 < low <= 1 <= high; got {wr!r}.')
    wr = [ck.number('calibration.weight_range[0]', wr[0], lo=0, lo_open=True, hi=1),
          ck.number('calibration.weight_range[1]', wr[1], lo=1)]
    c['weight_range'] = wr
    if c['residual_tolerance'] is not None:
        c['residual_tolerance'] = ck.number('calibration.residual_tolerance', c['residual_tolerance'], lo=0)
    net = ck.mapping('calibration.network', c['network'])
    if not net.get('type'):
        raise OptionError('calibration.network.type is required (e.g. TripleDCalibrator).')
    c['iters'] = ck.integer('calibration.iters', c['iters'], lo=0)
    c['lr'] = ck.number('calibration.lr', c['lr'], lo=0, lo_open=True)
    for k in ('batch_size', 'bank_batch', 'bank_size', 'max_images'):
        c[k] = ck.integer(f'calibration.{k}', c[k], lo=1)
    for k in ('mmd_weight', 'kl_weight', 'fidelity_weight'):
        c[k] = ck.number(f'calibration.{k}', c[k], lo=0)
    ck.boolean('calibration.keep_best', c['keep_best'])
    if c['eval_every'] is not None:
        c['eval_every'] = ck.integer('calibration.eval_every', c['eval_every'], lo=1)
    ck.choice('calibration.on_worse', c['on_worse'], ('raise', 'keep', 'skip'))


def _validate_report(r):
    r['mmd_samples'] = ck.integer('report.mmd_samples', r['mmd_samples'], lo=2)
    r['random_repeats'] = ck.integer('report.random_repeats', r['random_repeats'], lo=1)
    ck.boolean('report.plot', r['plot'])
    ck.boolean('report.scores_csv', r['scores_csv'])


def validate(opt):
    """Value checks of the fixed sections (types, ranges, choices, combinations); normalises in place."""
    opt['name'] = ck.string('name', opt['name'])
    opt['work_dir'] = ck.string('work_dir', opt['work_dir'], allow_none=True)
    if is_multi(opt):
        _validate_sources(opt['sources'])
    else:
        _validate_source(opt['source'], 'source')
        if 'task_quota' in opt['selection']:
            raise OptionError('selection.task_quota applies to several tasks (sources:); with one source: remove it.')
    _validate_output(opt['output'])
    _validate_features(opt['features'])
    _validate_selection(opt['selection'], opt)
    cq = opt['curriculum']
    cq['easy_quantile'] = ck.number('curriculum.easy_quantile', cq['easy_quantile'], lo=0, hi=1, lo_open=True)
    _validate_calibration(opt['calibration'])
    _validate_report(opt['report'])


def units_for(ratio, total, unit=1):
    """The one budget rule: ``ratio`` of ``total`` (pairs, or GT pixels with ``unit`` = pixels of a
    crop) in whole units, rounded up (float slack: 0.01 * 3600 is 36, not 37). The distiller, the
    study's random arms and the demo all count with it, so "the same budget" is the same number."""
    return math.ceil(float(ratio) * float(total) / float(unit) - 1e-9)


def resolve_budget(sel, total):
    """-> n from selection.num or ceil(ratio * N), with clear errors."""
    if sel.get('num') is not None:
        n = int(sel['num'])
        if not 1 <= n <= total:
            raise OptionError(f'selection.num = {n} must be between 1 and the number of usable pairs ({total}).')
        return n
    ratio = float(sel['ratio'])
    if ratio * total < 1 - 1e-9:  # the same rule as crop units (crops.pixel_budget): under one unit is refused
        raise OptionError(f'selection.ratio {ratio:g} of {total} pairs is {ratio * total:.3g} < 1 pair: the subset '
                          f'would be empty. Raise the ratio to at least {ck.at_least(1 / total)} or set '
                          f'selection.num.')
    return min(total, units_for(ratio, total))


def _source_dependencies(src):
    dep = {k: src.get(k) for k in FEATURE_KEYS['source']}
    for k in ('dataroot_gt', 'dataroot_lq', 'meta_info_file'):
        if dep[k]:
            dep[k] = os.path.abspath(os.path.expanduser(dep[k]))
    if not dep['crop_size']:  # whole images: same dependencies as before crop units existed
        del dep['crop_size'], dep['crop_step']
    return dep


def feature_dependencies(opt, keys_hash, weights_id):
    dep = {'features': {k: opt['features'].get(k) for k in FEATURE_KEYS['features']}}
    if is_multi(opt):  # several tasks: each entry (task name included: it prefixes the keys)
        dep['sources'] = [dict(_source_dependencies(s), task=s['task']) for s in opt['sources']]
        dep['sources_keys_sha256'] = keys_hash
    else:
        dep['source'] = _source_dependencies(opt['source'])
        dep['source']['keys_sha256'] = keys_hash
    dep['features']['weights'] = weights_id
    return dep


def work_dir_of(opt):
    return os.path.abspath(os.path.expanduser(opt['work_dir'] or (opt['output']['path'].rstrip('/') + '.work')))
