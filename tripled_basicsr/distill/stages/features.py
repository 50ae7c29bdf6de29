"""The source (pairs or crop units, one or several tasks), the unit budget, the backbone and
the feature store (``setup_features``), then the embedding itself on every rank (``extract``,
features.py's ``extract_features``)."""
import hashlib
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from tripled_basicsr.distill.dist import on_rank0
from tripled_basicsr.distill.options import feature_dependencies, is_multi, resolve_budget, source_entries
from tripled_basicsr.options import OptionError
from tripled_basicsr.utils.log import note


@dataclass
class FeatureSetup:
    source: object  # PairedSource / CropSource / tasks.MultiSource
    skipped: list  # unpaired / undecodable pairs (dicts)
    n_budget: int  # units of the subset, from the whole listing (re-checked after skipping)
    task_budget: dict  # several tasks: {task: units} of the subset
    model: object
    kinds: tuple
    views_per_kind: int
    store: object  # FeatureStore
    changed: list = field(default_factory=list)  # keys re-embedded because their file changed (rank 0)


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


def _build_model(run):
    """The backbone (``auto`` resolved into the options: the feature cache and meta name the
    model used) and its feature dimension. -> (model, dim)."""
    from tripled_basicsr.distill.backbone import build_backbone, embed, normalization, resolve_auto_backbone
    fopt = run.opt['features']
    if fopt['backbone'] == 'auto':  # on rank 0 only and shared, so ranks that see the hub differently
        # still embed with one model
        fopt['backbone'] = on_rank0(lambda: resolve_auto_backbone(fopt['pretrained'], fopt['checkpoint'],
                                                                  fopt['hub_timeout']), run.rank, run.world,
                                    share=True)
    model = build_backbone(fopt['backbone'], fopt['pretrained'], fopt['checkpoint'], fopt['input_size'],
                           fopt['model_kwargs'], fopt['hub_timeout'], fopt['seed'])
    with torch.no_grad():
        mean, std = normalization(model)
        probe, _ = embed(model, torch.zeros(1, 3, fopt['input_size'], fopt['input_size']), mean, std)
    return model, probe.shape[1]


def setup_features(run, pre):
    """Source listing, budget check, backbone, feature store (created or checked for resume)
    in ``pre.work``. -> FeatureSetup."""
    from tripled_basicsr.distill.features import KINDS, FeatureStore, stale_rows
    from tripled_basicsr.distill.selection import resolve_clusters
    opt, fopt = run.opt, run.opt['features']
    source, skipped = open_source(opt)
    n_total = len(source)
    n_budget = unit_budget(opt, source, n_total)  # fail fast; re-checked after skipping
    budgets = {}
    if is_multi(opt):  # quotas per task, before the backbone
        budgets = task_budget(opt, source, n_budget)
    else:
        resolve_clusters(opt['selection']['clusters'], n_budget)  # strata vs budget, before the backbone
    keys_hash = hashlib.sha256('\n'.join(source.keys).encode()).hexdigest()
    model, dim = _build_model(run)
    kinds = KINDS[fopt['image']]
    views_per_kind = 1 + int(fopt['local_views'])
    deps = feature_dependencies(opt, keys_hash, _weights_id(fopt))
    v = views_per_kind * len(kinds)

    def create():
        store = FeatureStore(pre.work, n_total, v, dim, deps)
        changed = stale_rows(source, store.open('r+'), run.progress)
        if changed:
            note(f'{len(changed)} source pair(s) changed since their features were computed (first: '
                 f'{changed[0]!r}); embedding them again.')
        return store, changed

    res = on_rank0(create, run.rank, run.world)
    if run.rank == 0:
        store, changed = res
    else:
        store, changed = FeatureStore(pre.work, n_total, v, dim, deps, rank=run.rank), []
    return FeatureSetup(source=source, skipped=skipped, n_budget=n_budget, task_budget=budgets, model=model,
                        kinds=kinds, views_per_kind=views_per_kind, store=store, changed=changed)


def extract(run, fs):
    """Embed every unit not in the store yet (all ranks share the work). -> extract_features' info dict."""
    from tripled_basicsr.distill.features import extract_features
    interrupt = os.environ.get('TRIPLED_DISTILL_INTERRUPT_AFTER')  # test hook (resume tests)
    if is_multi(run.opt):  # each task its own on_error
        src = fs.source
        on_error = np.array([p[2]['on_error'] == 'raise' for p in src.parts], bool)[src.task_index]

        def option(row):
            return f'{src.options_of(row)[1]}.on_error'
    else:
        on_error, option = run.opt['source']['on_error'], 'source.on_error'
    return extract_features(fs.source, fs.store, fs.model, run.opt['features'], on_error,
                            run.rank, run.world, run.progress,
                            interrupt_after=int(interrupt) if interrupt else None, on_error_option=option)
