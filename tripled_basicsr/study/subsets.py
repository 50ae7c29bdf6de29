"""The study's baseline subsets, written in the distilled-LMDB format like TripleD's.

* ``random``: ``ceil(ratio * N)`` whole pairs drawn uniformly (the distiller's budget rule).
* ``random_crops``: random GT crops (LQ crops aligned by the scale) holding ``ratio`` of the
  source's GT pixels: a naive baseline that on real pools beats image-level subsets because
  it covers many scenes.
"""
import os

import numpy as np

from tripled_basicsr.data.distilled_format import DistilledWriter
from tripled_basicsr.data.paired_source import PairedSource, read_lmdb_meta_info
from tripled_basicsr.study.stats import crop_count
from tripled_basicsr.utils.io import read_json, write_json_atomic


def open_source(src):
    return PairedSource(src['dataroot_gt'], src['dataroot_lq'], src.get('filename_tmpl') or '{}',
                        src.get('meta_info_file'), int(src.get('scale', 1)), on_missing='skip')


def _sources(source):
    return [('source.dataroot_gt', source.dataroot_gt), ('source.dataroot_lq', source.dataroot_lq)]


def gt_shapes(source, cache=None):
    """(h, w) of every GT image, from LMDB meta_info or image headers (no full decode);
    cached in ``cache`` (a JSON file) because a large pool takes a while to list."""
    data = read_json(cache, {}) if cache else {}
    if data.get('keys') == source.keys:
        return [tuple(s) for s in data['shapes']]
    if source.kind == 'lmdb':
        meta = dict(read_lmdb_meta_info(source.dataroot_gt))
        shapes = [tuple(meta[k][:2]) if meta.get(k) else source.read(i, 'gt').shape[:2]
                  for i, k in enumerate(source.keys)]
    else:
        from PIL import Image
        shapes = []
        for i in range(len(source)):
            try:
                with Image.open(source.refs[i][0]) as im:
                    shapes.append((im.height, im.width))
            except Exception:  # formats PIL does not read: decode
                shapes.append(tuple(source.read(i, 'gt').shape[:2]))
    if cache:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        write_json_atomic(cache, {'keys': source.keys, 'shapes': [list(s) for s in shapes]})
    return shapes


def random_indices(n_total, n, seed):
    return sorted(int(i) for i in np.random.default_rng(seed).choice(n_total, n, replace=False))


def crop_boxes(shapes, ratio, crop, scale, seed):
    """-> sorted [(image index, top, left)] of crop x crop GT boxes, ``ratio`` of all GT pixels.

    Positions are uniform over every valid (scale-aligned) box in the pool: an image is drawn
    with probability proportional to its number of boxes, then a box inside it. Images
    smaller than the crop are never drawn.
    """
    if crop % scale:
        raise ValueError(f'random_crops.crop_size {crop} must be a multiple of the scale {scale}.')
    total = sum(h * w for h, w in shapes)
    n = crop_count(total, ratio, crop)
    rows = np.array([max(0, (h - crop) // scale + 1) for h, w in shapes], dtype=np.int64)
    cols = np.array([max(0, (w - crop) // scale + 1) for h, w in shapes], dtype=np.int64)
    weight = (rows * cols).astype(np.float64)
    if weight.sum() == 0:
        raise ValueError(f'random_crops.crop_size {crop} is larger than every source image; lower it.')
    rng = np.random.default_rng(seed)
    img = rng.choice(len(shapes), size=n, p=weight / weight.sum())
    tops = rng.integers(0, rows[img]) * scale
    lefts = rng.integers(0, cols[img]) * scale
    return sorted(zip(img.tolist(), tops.tolist(), lefts.tolist()))


def write_random(src_opt, out, ratio, seed, num=None):
    from tripled_basicsr.distill.options import resolve_budget
    source = open_source(src_opt)
    n = resolve_budget({'ratio': ratio, 'num': num}, len(source))
    idx = random_indices(len(source), n, seed)
    with DistilledWriter(out, scale=source.scale, tool='study-random', sources=_sources(source),
                         provenance={'source': source.describe(), 'ratio': ratio, 'seed': seed}) as w:
        for i in idx:
            gt, lq = source.read_pair(i)
            w.add(source.keys[i], gt, lq, gt_path=source.source_path(i, 'gt'), lq_path=source.source_path(i, 'lq'),
                  source_index=i)
        w.set_summary({'arm': 'random', 'n': n, 'N': len(source), 'ratio': ratio, 'seed': seed})
    return {'units': n, 'images': n}


def write_random_crops(src_opt, out, ratio, seed, crop, shapes_cache=None):
    source = open_source(src_opt)
    s = source.scale
    boxes = crop_boxes(gt_shapes(source, shapes_cache), ratio, crop, s, seed)
    with DistilledWriter(out, scale=s, tool='study-random-crops', sources=_sources(source),
                         provenance={'source': source.describe(), 'ratio': ratio, 'seed': seed,
                                     'crop_size': crop}) as w:
        cur, pair = None, None
        for j, (i, top, left) in enumerate(boxes):
            if i != cur:
                cur, pair = i, source.read_pair(i)
            gt, lq = pair
            g = np.ascontiguousarray(gt[top:top + crop, left:left + crop])
            q = np.ascontiguousarray(lq[top // s:(top + crop) // s, left // s:(left + crop) // s])
            w.add(f'{source.keys[i]}_crop{j:05d}', g, q, gt_path=source.source_path(i, 'gt'),
                  lq_path=source.source_path(i, 'lq'), source_index=i, box=[top, left, crop, crop])
        w.set_summary({'arm': 'random_crops', 'n': len(boxes), 'ratio': ratio, 'seed': seed, 'crop_size': crop,
                       'images': len({b[0] for b in boxes})})
    return {'units': len(boxes), 'images': len({b[0] for b in boxes}), 'crops': True}
