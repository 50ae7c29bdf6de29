"""Options of ``python -m tripled_basicsr.distill``: defaults, merging, validation.

Every key is documented in docs/distill.md. Sections ``complexity``, ``uncertainty`` and
the strategy part of ``selection`` are passed to registered strategies, so their extra
keys are not checked here (the strategy rejects unknown ones).
"""
import copy
import difflib
import os

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
    },
    'output': {'path': None, 'tile_size': 0, 'compress_level': 1, 'overwrite': False},
    'features': {
        'backbone': 'vit_small_patch16_224',
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
    'complexity': {'type': 'vit_entropy'},
    'uncertainty': {'type': 'knn_rarity', 'k': 10},
    'selection': {
        'type': 'tripled',
        'ratio': 0.02,
        'num': None,
        'clusters': 'auto',
        'seed': 0,
        'kmeans_iters': 50,
    },
    # defaults of the `tripled` strategy (merged only when selection.type == tripled)
    '_tripled_selection': {'complexity_weight': 1.0, 'uncertainty_weight': 1.0, 'temperature': 2.0},
    'curriculum': {'easy_quantile': 0.5},
    'calibration': {
        'enabled': True,
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
    'source': ('dataroot_gt', 'dataroot_lq', 'filename_tmpl', 'meta_info_file', 'scale'),
    'features': ('backbone', 'pretrained', 'checkpoint', 'model_kwargs', 'input_size', 'image', 'local_views',
                 'decode_size', 'seed'),
}
_OPEN_SECTIONS = ('complexity', 'uncertainty', 'selection')


class OptionError(ValueError):
    pass


def _merge(base, over, path, check):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if check and k not in base:
            close = difflib.get_close_matches(k, list(base), n=3)
            hint = f' Did you mean {", ".join(close)}?' if close else ''
            raise OptionError(f'Unknown option {path}{k}.{hint} See docs/distill.md for every key.')
        if isinstance(base.get(k), dict) and isinstance(v, dict) and k not in ('model_kwargs', 'network',
                                                                               'io_backend'):
            out[k] = _merge(base[k], v, f'{path}{k}.', check and k not in _OPEN_SECTIONS)
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_options(user):
    """User options (dict from YAML) on top of DEFAULTS, with checks; returns a new dict."""
    user = dict(user or {})
    base = {k: v for k, v in DEFAULTS.items() if not k.startswith('_')}
    opt = _merge(base, user, '', True)
    sel = opt['selection']
    if sel.get('type', 'tripled') == 'tripled':
        for k, v in DEFAULTS['_tripled_selection'].items():
            sel.setdefault(k, v)
    for sec in ('complexity', 'uncertainty'):
        if 'type' not in opt[sec]:
            raise OptionError(f'{sec}.type is required.')
    validate(opt)
    return opt


def validate(opt):
    src, out, f, sel = opt['source'], opt['output'], opt['features'], opt['selection']
    for k in ('dataroot_gt', 'dataroot_lq'):
        if not src.get(k):
            raise OptionError(f'source.{k} is required (a folder or a BasicSR .lmdb).')
    if not out.get('path'):
        raise OptionError('output.path is required (the distilled dir to create).')
    if src['on_error'] not in ('raise', 'skip'):
        raise OptionError(f'source.on_error must be raise or skip; got {src["on_error"]!r}.')
    backend = (src.get('io_backend') or {}).get('type', 'disk')
    if backend not in ('disk', 'lmdb'):
        raise OptionError(f'source.io_backend.type must be disk or lmdb; got {backend!r}.')
    for root in (src['dataroot_gt'], src['dataroot_lq']):
        is_lmdb = os.path.isdir(root) and (str(root).rstrip('/').endswith('.lmdb')
                                           or os.path.isfile(os.path.join(root, 'data.mdb')))
        if os.path.exists(root) and is_lmdb != (backend == 'lmdb'):
            want = 'lmdb' if is_lmdb else 'disk'
            raise OptionError(f'source.io_backend.type is {backend!r} but {root} is '
                              f'{"a BasicSR LMDB" if is_lmdb else "a folder"}; set io_backend: {{type: {want}}}.')
    if f['image'] not in ('gt', 'lq', 'both'):
        raise OptionError(f'features.image must be gt, lq or both; got {f["image"]!r}.')
    if int(f['input_size']) < 16:
        raise OptionError(f'features.input_size must be >= 16; got {f["input_size"]}.')
    if int(f['local_views']) < 0:
        raise OptionError('features.local_views must be >= 0.')
    if f['decode_size'] == 'auto':
        f['decode_size'] = int(f['input_size']) * (4 if int(f['local_views']) else 2)
    if int(f['decode_size']) < int(f['input_size']):
        raise OptionError(f'features.decode_size ({f["decode_size"]}) must be >= input_size ({f["input_size"]}).')
    if int(f['batch_size']) < 1:
        raise OptionError('features.batch_size must be >= 1.')
    if sel.get('num') is None and sel.get('ratio') is None:
        raise OptionError('selection: set ratio (fraction of pairs) or num (number of pairs).')
    if sel.get('num') is None and not 0 < float(sel['ratio']) <= 1:
        raise OptionError(f'selection.ratio must be in (0, 1]; got {sel["ratio"]}.')
    if opt['calibration']['on_worse'] not in ('raise', 'keep', 'skip'):
        raise OptionError('calibration.on_worse must be raise, keep or skip.')
    cq = opt['curriculum']['easy_quantile']
    if not 0 < float(cq) <= 1:
        raise OptionError(f'curriculum.easy_quantile must be in (0, 1]; got {cq}.')


def resolve_budget(sel, total):
    """-> n from selection.num or ceil(ratio * N), with clear errors."""
    import math
    if sel.get('num') is not None:
        n = int(sel['num'])
        if not 1 <= n <= total:
            raise OptionError(f'selection.num = {n} must be between 1 and the number of usable pairs ({total}).')
        return n
    ratio = float(sel['ratio'])
    if ratio * total < 1:
        raise OptionError(f'selection.ratio {ratio} of {total} pairs is {ratio * total:.3g} < 1 pair: the subset '
                          f'would be empty. Raise the ratio to at least {1 / total:.3g} or set selection.num.')
    return min(total, math.ceil(ratio * total - 1e-9))


def feature_dependencies(opt, keys_hash, weights_id):
    dep = {sec: {k: opt[sec].get(k) for k in keys} for sec, keys in FEATURE_KEYS.items()}
    for k in ('dataroot_gt', 'dataroot_lq', 'meta_info_file'):
        if dep['source'][k]:
            dep['source'][k] = os.path.abspath(os.path.expanduser(dep['source'][k]))
    dep['source']['keys_sha256'] = keys_hash
    dep['features']['weights'] = weights_id
    return dep


def work_dir_of(opt):
    return os.path.abspath(os.path.expanduser(opt['work_dir'] or (opt['output']['path'].rstrip('/') + '.work')))
