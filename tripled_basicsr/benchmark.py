"""``python -m tripled_basicsr.benchmark -opt options/benchmark_*.yml``: trained models side by
side on standard test sets, with the protocol papers use, in one table.

Protocols (written into the table header):

* ``sr`` (Set5, Set14, BSD100, Urban100, Manga109): GT mod-cropped to the scale; LQ from the
  set's ``LRbicx{s}``/``LR_bicubic/X{s}``/``image_SRF_{s}`` files, else made from GT with
  MATLAB-style bicubic (BasicSR's ``imresize``) and rounded to 8 bit; PSNR/SSIM on the Y
  channel (ITU-R BT.601, BasicSR's ``calculate_psnr``/``calculate_ssim``) with ``scale``
  pixels cropped from each border. ``y_channel: false`` gives RGB.
* ``denoise`` (BSD68/CBSD68, Set12, Kodak24, McMaster): LQ = GT/255 + N(0, (sigma/255)^2),
  float, not clipped, not rounded (the DnCNN/KAIR protocol); noise drawn with
  ``np.random.RandomState(noise_seed + image index)`` so every model sees the same noise;
  PSNR/SSIM on RGB (grey sets: the grey channel) without border crop, one row per sigma.
* ``paired`` (Rain100L/H, SOTS, GoPro, LOL, UHD sets, any LQ/GT folders): RGB PSNR/SSIM, no
  crop; no-reference PIQE (and BRISQUE with a user-supplied LIVE model) on the outputs.

Every model is run with :func:`tripled_basicsr.utils.tiled.tiled_forward` when ``tile.size``
> 0, so 4K frames fit a consumer GPU. Missing sets are skipped with a message that says
where the files go (docs/benchmark.md lists where to get each set).

Every option is checked before any image or model is read (unknown keys with the closest
valid one, values and ranges), and every model's checkpoint is loaded into its network
before the first evaluation: a wrong architecture fails in seconds, naming the file. A GT
whose size differs from LQ x scale by more than the mod-crop (scale - 1 px), and a GT
without LQ or an LQ without GT, are errors naming the files (``on_unpaired: skip`` scores
the pairs found instead and lists the others in the table and JSON).
"""
import argparse
import contextlib
import copy
import csv
import datetime
import difflib
import io
import json
import os
import re
import sys
import time

import cv2
import numpy as np

from tripled_basicsr.data.paired_source import IMG_EXTENSIONS, _relative_files
from tripled_basicsr.options import OptionError, check_keys
from tripled_basicsr.utils.cli import run_command
from tripled_basicsr.utils.device import resolve_device
from tripled_basicsr.utils.img import to_bgr_uint8
from tripled_basicsr.utils.io import load_yaml_safe
from tripled_basicsr.utils.log import note, warn
from tripled_basicsr.utils.ownership import AtomicOutputDir


# name -> task, grey, where to get it and how its folder looks
KNOWN_SETS = {
    'Set5': ('sr', False, 'BasicSR test sets (docs/DatasetPreparation.md of BasicSR: Set5/GTmod12 + LRbicx{s})'),
    'Set14': ('sr', False, 'BasicSR test sets (Set14/GTmod12 + LRbicx{s})'),
    'BSD100': ('sr', False, 'BasicSR test sets (BSDS100) or the SelfExSR data (BSD100/image_SRF_{s})'),
    'Urban100': ('sr', False, 'BasicSR test sets or the SelfExSR data (Urban100/image_SRF_{s})'),
    'Manga109': ('sr', False, 'Manga109 (manga109.org, academic use); BasicSR test sets layout'),
    'BSD68': ('denoise', True, 'DnCNN repository, testsets/BSD68 (grey PNGs)'),
    'CBSD68': ('denoise', False, 'CBSD68 (colour BSD68), e.g. the KAIR / DnCNN test sets'),
    'Set12': ('denoise', True, 'DnCNN repository, testsets/Set12'),
    'Kodak24': ('denoise', False, 'Kodak PhotoCD set (r0k.us/graphics/kodak), 24 PNGs'),
    'McMaster': ('denoise', False, 'McMaster colour set (18 images), e.g. the KAIR test sets'),
    'Rain100L': ('paired', False, 'Rain100L test split (e.g. PReNet/MPRNet data): rainy/ + norain/ or input/ + target/'),
    'Rain100H': ('paired', False, 'Rain100H test split: rainy/ + norain/ or input/ + target/'),
    'SOTS': ('paired', False, 'RESIDE SOTS (outdoor or indoor): hazy/ + gt/ (hazy names start with the GT id)'),
    'GoPro': ('paired', False, 'GoPro_Large test split: test/<sequence>/{blur,sharp} or input/ + target/'),
    'LOL': ('paired', False, 'LOL: eval15/{low,high} (LOL-v2: Test/{Low,Normal})'),
    'UHD-LL': ('paired', False, 'UHD-LL test split: input/ + gt/ (4K)'),
    'UHD-Haze': ('paired', False, 'UHD-Haze test split: input/ + gt/ (4K)'),
    'UHD-Blur': ('paired', False, 'UHD-Blur test split: input/ + gt/ (4K)'),
    'UHD-Rain': ('paired', False, '4K-Rain13k test split: input/ + gt/ (4K)'),
}
ALIASES = {'B100': 'BSD100', 'BSDS100': 'BSD100', 'Kodak': 'Kodak24', 'Rain100': 'Rain100L'}

# folder names of degraded / clean images in the usual layouts (lower case)
LQ_DIRS = ('input', 'lq', 'lr', 'rainy', 'rain', 'hazy', 'blur', 'low', 'data', 'noisy')
GT_DIRS = ('target', 'gt', 'hr', 'norain', 'clear', 'sharp', 'high', 'normal', 'label', 'groundtruth', 'gtmod12',
           'original', 'clean')
_TOKENS = re.compile(r'^(norain|rainy|rain|low|normal|high|hazy|clear|blur|sharp)[-_]?(?=\d)|'
                     r'(_srf_\d+)?[-_]?(hr|lr|gt|lq)$|[-_]?x\d$')

TASKS = ('sr', 'denoise', 'paired')
PROTOCOL_VERSION = 2  # bump when loading or scoring changes, so cached study scores are recomputed

DOC = 'docs/benchmark.md'
REF = 'docs/reference/benchmark.md'  # where every key is documented
# every key of the options file (docs/reference/benchmark.md); anything else is a typo
OPTION_KEYS = ('name', 'datasets_root', 'sets', 'models', 'scale', 'sigmas', 'noise_seed', 'y_channel', 'max_images',
               'on_unpaired', 'device', 'tile', 'no_reference', 'output')
SET_DEFAULT_KEYS = ('scale', 'sigmas', 'noise_seed', 'y_channel', 'max_images', 'on_unpaired')  # top level -> sets
SET_KEYS = ('name', 'root', 'task', 'grey', 'datasets_root', 'dataroot_gt', 'dataroot_lq', 'scale', 'sigmas', 'sigma',
            'noise_seed', 'y_channel', 'crop_border', 'max_images', 'no_reference', 'on_unpaired')
MODEL_KEYS = ('name', 'type', 'network_g', 'opt', 'weights', 'param_key')
TILE_KEYS = ('size', 'overlap', 'blend', 'blend_width', 'pad_multiple')
OUTPUT_KEYS = ('path', 'overwrite')
ON_UNPAIRED = ('error', 'skip')


class BenchmarkError(OptionError):
    pass


def _check(kind, path, v, **kw):
    """The distiller's value checks (``tripled_basicsr.options``), as a BenchmarkError."""
    from tripled_basicsr import options as ck
    try:
        return getattr(ck, kind)(path, v, **kw)
    except ck.OptionError as exc:
        raise BenchmarkError(str(exc)) from None


def check_tile(tile, path='tile'):
    """``tile:`` -> {size, overlap, blend, blend_width, pad_multiple}, every value checked.

    size 0 or null: whole images; else > 0 with 0 <= overlap <= size (more context than the
    tile itself is more than 9x the work of whole-image inference: use a larger tile),
    0 <= blend_width <= min(overlap, size / 2), pad_multiple >= 1."""
    from tripled_basicsr.utils.tiled import BLENDS
    tile = _check('mapping', path, tile)
    check_keys(tile, TILE_KEYS, f'{path}.', REF, BenchmarkError)
    size = tile.get('size')
    out = {'size': 0 if size is None else _check('integer', f'{path}.size', size, lo=0),
           'overlap': _check('integer', f'{path}.overlap', tile.get('overlap', 32), lo=0),
           'blend': _check('choice', f'{path}.blend', tile.get('blend', 'none'), choices=BLENDS),
           'blend_width': None if tile.get('blend_width') is None else
           _check('integer', f'{path}.blend_width', tile['blend_width'], lo=0),
           'pad_multiple': _check('integer', f'{path}.pad_multiple', tile.get('pad_multiple', 1), lo=1)}
    if out['size']:
        if out['overlap'] > out['size']:
            raise BenchmarkError(f'{path}.overlap ({out["overlap"]}) must be <= {path}.size ({out["size"]}): the '
                                 f'overlap is context added on each side of a tile; raise size or lower overlap.')
        band = out['overlap'] // 2 if out['blend_width'] is None else out['blend_width']
        if out['blend'] != 'none' and (band > out['overlap'] or 2 * band > out['size']):
            raise BenchmarkError(f'{path}.blend_width ({band}) must be <= min(overlap, size / 2) = '
                                 f'{min(out["overlap"], out["size"] // 2)}.')
    return out


def check_options(opt, path='<options>'):
    """Every top-level key and value of a benchmark options dict (sets and models are checked
    by :func:`set_spec` and :func:`model_specs`); raises BenchmarkError naming the key."""
    check_keys(opt, OPTION_KEYS, '', REF, BenchmarkError)
    for k in ('name', 'datasets_root', 'device'):
        if k in opt:
            _check('string', k, opt[k])
    for k in ('sets', 'models'):
        if not isinstance(opt.get(k), list) or not opt[k]:
            what = ('test sets (e.g. [Set5, Set14, BSD100, Urban100])' if k == 'sets' else
                    'the trained models (name, network_g or opt, weights)')
            raise BenchmarkError(f'{path}: {k}: must be a non-empty list of {what}; got {opt.get(k)!r}.')
    check_tile(opt.get('tile'))
    for i, m in enumerate(opt.get('no_reference') or []):
        if isinstance(m, dict):
            check_keys(m, ('brisque',), f'no_reference[{i}].', REF, BenchmarkError)
            _check('string', f'no_reference[{i}].brisque', m.get('brisque'))
        else:
            _check('choice', f'no_reference[{i}]', m, choices=('piqe', 'brisque'))
    out = _check('mapping', 'output', opt.get('output'))
    check_keys(out, OUTPUT_KEYS, 'output.', REF, BenchmarkError)
    _check('string', 'output.path', out.get('path'), allow_none=True)
    _check('boolean', 'output.overwrite', out.get('overwrite', True))


# ----------------------------------------------------------------------------- layouts
def _images(folder):
    """Image files under ``folder`` (relative, sorted), hidden entries such as .DS_Store left out."""
    return sorted(r for r in _relative_files(folder) if r.lower().endswith(IMG_EXTENSIONS))


def pair_key(rel):
    """Name shared by an LQ file and its GT in the usual layouts ('rain-001' ~ 'norain-001',
    'low00690' ~ 'normal00690', 'baby_GT' ~ 'babyx4' ~ 'baby', 'img_001_SRF_4_HR' ~ '..._LR')."""
    d, stem = os.path.split(os.path.splitext(rel)[0])
    stem = stem.lower()
    for _ in range(2):
        stem = _TOKENS.sub('', stem)
    return os.path.join(d.lower(), stem)


def _child(folder, names):
    """First child folder of ``folder`` whose lower-case name is in ``names`` (in that order)."""
    try:
        kids = {k.lower(): k for k in os.listdir(folder) if os.path.isdir(os.path.join(folder, k))}
    except OSError:
        return None
    for n in names:
        if n in kids:
            return os.path.join(folder, kids[n])
    return None


def _strictly_inside(path, folder):
    a, b = os.path.abspath(path), os.path.abspath(folder)
    return a != b and os.path.commonpath([a, b]) == b


def _relative_images(folder, skip=None):
    """Images under ``folder``, without those under ``skip`` when it is a subfolder of ``folder``."""
    inner = skip if skip and _strictly_inside(skip, folder) else None
    return [r for r in _images(folder) if not (inner and _strictly_inside(os.path.join(folder, r), inner))]


def pair_files(lq_dir, gt_dir, unpaired=None):
    """-> [(key, gt_path, lq_path)] matched by :func:`pair_key`; SOTS-style LQ names
    ('0001_0.8_0.2') fall back to the part before the first '_'. ``unpaired`` (a list) gets
    ``(missing, path, folder)`` for every GT without LQ (missing 'LQ') and LQ without GT."""
    gts = {pair_key(r): os.path.join(gt_dir, r) for r in _relative_images(gt_dir, lq_dir)}
    out, used = [], set()
    for r in _relative_images(lq_dir, gt_dir):
        k = pair_key(r)
        if k not in gts:
            d, s = os.path.split(k)
            k = os.path.join(d, s.split('_')[0])
        if k in gts:
            out.append((k, gts[k], os.path.join(lq_dir, r)))
            used.add(k)
        elif unpaired is not None:
            unpaired.append(('GT', os.path.join(lq_dir, r), gt_dir))
    if unpaired is not None:
        unpaired += [('LQ', gts[k], lq_dir) for k in sorted(gts) if k not in used]
    return out


def find_sr_layout(root, scale, unpaired=None):
    """-> (gt_dir, lq_dir | None, pairs) for the SR layouts (BasicSR, EDSR benchmark, SelfExSR);
    ``unpaired`` as in :func:`pair_files`."""
    srf = _child(root, (f'image_srf_{scale}',))
    if srf:  # SelfExSR: image_SRF_4/img_001_SRF_4_HR.png + _LR.png in one folder
        files = _images(srf)
        hr = {pair_key(f): os.path.join(srf, f) for f in files if '_hr' in f.lower()}
        lr = {pair_key(f): os.path.join(srf, f) for f in files if '_lr' in f.lower()}
        if unpaired is not None:
            unpaired += [('LQ', hr[k], srf) for k in sorted(hr) if k not in lr]
            unpaired += [('GT', lr[k], srf) for k in sorted(lr) if k not in hr]
        return srf, srf, [(k, hr[k], lr[k]) for k in sorted(hr) if k in lr]
    gt_dir = _child(root, ('gtmod12', 'hr', 'gt', 'original')) or root
    lq_dir = _child(root, (f'lrbicx{scale}', f'x{scale}'))
    if lq_dir is None:
        lr = _child(root, ('lr_bicubic', 'lr'))
        lq_dir = _child(lr, (f'x{scale}',)) if lr else None
    if lq_dir:
        return gt_dir, lq_dir, pair_files(lq_dir, gt_dir, unpaired)
    return gt_dir, None, [(pair_key(r), os.path.join(gt_dir, r), None) for r in _images(gt_dir)
                          if os.path.dirname(r) == '']


def find_paired_layout(root, depth=3, unpaired=None):
    """-> [(key, gt, lq)] from the first folder under ``root`` (breadth first, ``depth``
    levels) that holds an LQ folder and a GT folder of the usual names; GoPro's per-sequence
    ``blur``/``sharp`` folders are gathered from every sequence. ``unpaired`` as in
    :func:`pair_files`."""
    level = [root]
    for _ in range(depth + 1):
        found, nxt = [], []
        for d in level:
            lq, gt = _child(d, LQ_DIRS), _child(d, GT_DIRS)
            if lq and gt:
                found += [(os.path.join(os.path.relpath(d, root), k), g, q)
                          for k, g, q in pair_files(lq, gt, unpaired)]
            else:
                try:
                    nxt += sorted(os.path.join(d, k) for k in os.listdir(d) if os.path.isdir(os.path.join(d, k)))
                except OSError:
                    pass
        if found:
            return found
        level = nxt
    return []


def find_gt_only(root):
    gt_dir = _child(root, ('gt', 'original', 'hr', 'clean')) or root
    return [(pair_key(r), os.path.join(gt_dir, r), None) for r in _images(gt_dir) if os.path.dirname(r) == '']


# ----------------------------------------------------------------------------- loading
def set_spec(spec, defaults=None, path=None):
    """Complete one test-set entry: name, root, task and the task's parameters, every key and
    value checked (``path``: how the entry is named in messages, e.g. ``'sets[0].'``)."""
    spec = {**(defaults or {}), **(spec if isinstance(spec, dict) else {'name': spec})}
    name = ALIASES.get(spec.get('name'), spec.get('name'))
    if not name:
        raise BenchmarkError(f'test set entry {spec!r} has no name.')
    name = _check('string', f'{path or ""}name', name)
    path = path or f'{name}.'
    check_keys(spec, SET_KEYS, path, REF, BenchmarkError)
    known = KNOWN_SETS.get(name)
    task = spec.get('task') or (known[0] if known else None)
    if spec.get('dataroot_gt') and spec.get('dataroot_lq') and not spec.get('task'):
        task = 'paired'
    if task not in TASKS:
        raise BenchmarkError(f'test set {name}: task must be one of {TASKS} (unknown set names need task:); '
                             f'got {task!r}.')
    out = {'name': name, 'task': task, 'root': spec.get('root') or os.path.join(spec.get('datasets_root', 'datasets'),
                                                                              name),
           'grey': bool(spec.get('grey', known[1] if known else False)), 'where': known[2] if known else None}
    for k in ('dataroot_gt', 'dataroot_lq', 'scale', 'sigmas', 'sigma', 'noise_seed', 'y_channel', 'crop_border',
              'max_images', 'no_reference', 'on_unpaired'):
        if k in spec:
            out[k] = spec[k]
    for k in ('root', 'dataroot_gt', 'dataroot_lq'):
        if out.get(k) is not None:
            _check('string', f'{path}{k}', out[k])
    for k, lo in (('scale', 1), ('crop_border', 0), ('noise_seed', 0)):
        if k in out:
            out[k] = _check('integer', f'{path}{k}', out[k], lo=lo)
    for k in ('y_channel', 'no_reference', 'grey'):
        if k in out:
            _check('boolean', f'{path}{k}', out[k])
    if out.get('max_images') is not None:
        out['max_images'] = _check('integer', f'{path}max_images', out['max_images'], lo=1)
    if 'on_unpaired' in out:  # only when given: the protocol fingerprint of existing studies stays the same
        _check('choice', f'{path}on_unpaired', out['on_unpaired'], choices=ON_UNPAIRED)
    if task == 'sr':
        out.setdefault('scale', 4)
        out.setdefault('y_channel', True)
        out.setdefault('crop_border', int(out['scale']))
    else:
        out.setdefault('scale', 1)
        out.setdefault('y_channel', False)
        out.setdefault('crop_border', 0)
    if task == 'denoise':
        sig = out.pop('sigma', None)
        sigmas = out.get('sigmas') or ([sig] if sig is not None else [25])
        sigmas = sigmas if isinstance(sigmas, (list, tuple)) else [sigmas]
        out['sigmas'] = [_check('number', f'{path}sigmas[{i}]', s, lo=0, lo_open=True) for i, s in enumerate(sigmas)]
        out.setdefault('noise_seed', 0)
    return out


def missing_message(spec):
    where = f' Get it from: {spec["where"]}.' if spec.get('where') else ''
    layout = {'sr': f'{spec["root"]}/GTmod12/*.png (+ LRbicx{spec["scale"]}/) or {spec["root"]}/HR/ or '
                    f'{spec["root"]}/image_SRF_{spec["scale"]}/ or the images directly in {spec["root"]}',
              'denoise': f'the clean images directly in {spec["root"]}/ (or {spec["root"]}/GT/)',
              'paired': f'{spec["root"]}/input/ + {spec["root"]}/target/ (or rainy/norain, hazy/gt, blur/sharp, '
                        f'low/high, ...)'}[spec['task']]
    return f'skipped {spec["name"]}: no images found under {spec["root"]}; place them as {layout}.{where}'


def _read(path):
    return to_bgr_uint8(cv2.imread(path, cv2.IMREAD_UNCHANGED), path)


def bicubic_down(gt, scale):
    """MATLAB-style bicubic downscale of a uint8 BGR image, rounded to 8 bit (the LRbicx files)."""
    from basicsr.utils.matlab_functions import imresize
    lq = imresize(gt.astype(np.float64) / 255.0, 1.0 / scale)
    return np.clip(np.round(lq * 255.0), 0, 255).astype(np.uint8)


def add_noise(gt, sigma, seed):
    """GT uint8 -> float32 noisy image in [0, 1] units (not clipped, not rounded)."""
    rng = np.random.RandomState(seed)
    return (gt.astype(np.float64) / 255.0 + rng.normal(0, sigma / 255.0, gt.shape)).astype(np.float32)


def _unpaired_text(missing, path, folder):
    have = 'LQ' if missing == 'GT' else 'GT'
    return f'{have} {path} has no {missing} in {folder}'


def load_pairs(spec, skipped_files=None):
    """-> list of (key, gt uint8 BGR, lq float32 BGR in [0, 1]) for one test set (and sigma for
    denoising: one list per sigma, returned as {label: list}). Empty dict when the set is missing.

    A GT without LQ (or an LQ without GT) is an error naming the file, unless the set has
    ``on_unpaired: skip``: then each is appended to ``skipped_files`` (a list) as a line."""
    unpaired = []
    if spec.get('dataroot_gt'):
        for k in ('dataroot_gt', 'dataroot_lq'):
            if not os.path.isdir(spec.get(k) or ''):
                return {}
        files = pair_files(spec['dataroot_lq'], spec['dataroot_gt'], unpaired)
    elif not os.path.isdir(spec['root']):
        return {}
    elif spec['task'] == 'sr':
        files = find_sr_layout(spec['root'], int(spec['scale']), unpaired)[2]
    elif spec['task'] == 'denoise':
        files = find_gt_only(spec['root'])
    else:
        files = find_paired_layout(spec['root'], unpaired=unpaired)
    if unpaired and files:  # (no pair at all: the set counts as missing, as before)
        lines = [_unpaired_text(*u) for u in unpaired]
        if spec.get('on_unpaired', 'error') != 'skip':
            more = f' (and {len(lines) - 3} more)' if len(lines) > 3 else ''
            raise BenchmarkError(f'{spec["name"]}: {len(files)} pairs found, but {"; ".join(lines[:3])}{more}. '
                                 f'Files are paired by name after removing the usual tokens (_HR/_LR/_GT, x4, '
                                 f'rain-/norain-, ...; {DOC}): rename or remove the odd files, or set on_unpaired: '
                                 f'skip to score the {len(files)} pairs and list the rest in the results.')
        if skipped_files is not None:
            skipped_files += lines
    if spec.get('max_images'):
        files = files[:int(spec['max_images'])]
    if not files:
        return {}
    s = int(spec['scale'])
    if spec['task'] == 'denoise':
        gts = [(k, _read(g)) for k, g, _ in files]

        def noisy(gt, sig, seed):  # a grey set gets grey noise (one channel, replicated), as its models train on
            if spec['grey']:
                return np.repeat(add_noise(gt[:, :, :1], sig, seed), 3, axis=2)
            return add_noise(gt, sig, seed)
        return {f'{spec["name"]} sigma={sig:g}': [(k, gt, noisy(gt, sig, int(spec['noise_seed']) + i))
                                                  for i, (k, gt) in enumerate(gts)] for sig in spec['sigmas']}
    out = []
    for k, g, q in files:
        gt = _read(g)
        if q is None:  # SR from GT only
            gt = gt[:gt.shape[0] - gt.shape[0] % s, :gt.shape[1] - gt.shape[1] % s]
            lq = bicubic_down(gt, s) if s > 1 else gt
        else:
            lq = _read(q)
            h, w = lq.shape[0] * s, lq.shape[1] * s
            if not (0 <= gt.shape[0] - h < s and 0 <= gt.shape[1] - w < s):
                crop = f' (or up to {s - 1} px larger, the mod-crop to the scale)' if s > 1 else ''
                raise BenchmarkError(f'{spec["name"]}: the GT {g} is {gt.shape[1]}x{gt.shape[0]} (WxH) but its LQ {q} '
                                     f'is {lq.shape[1]}x{lq.shape[0]}; at scale {s} the GT must be LQ x {s} = {w}x{h}'
                                     f'{crop}. Check the scale and that the two files are the same image (a GT is '
                                     f'never cropped or resized to fit more than that).')
            gt = gt[:h, :w]  # GT mod-crop to the LQ grid
        out.append((k, gt, lq.astype(np.float32) / 255.0))
    return {spec['name']: out}


# ----------------------------------------------------------------------------- models
def build_arch(network_opt, where='network_g', error=BenchmarkError):
    """Build a registered BasicSR arch from its options, or raise ``error`` naming ``where``
    (the option path): an unregistered type (with the closest registered names) or options
    the arch does not take. Building is cheap, so callers check networks before any work."""
    from basicsr.archs import build_network
    from basicsr.utils.registry import ARCH_REGISTRY

    import tripled_basicsr
    tripled_basicsr.register()  # our archs (e.g. TripleDUNet) in BasicSR's registry
    if not isinstance(network_opt, dict) or not network_opt.get('type'):
        raise error(f'{where} must be a mapping with a type (a BasicSR arch, e.g. {{type: SRVGGNetCompact, '
                    f'num_feat: 64, ...}}); got {network_opt!r}.')
    t = network_opt['type']
    if not isinstance(t, str) or (t not in ARCH_REGISTRY and f'{t}_basicsr' not in ARCH_REGISTRY):
        names = sorted({k[:-len('_basicsr')] if k.endswith('_basicsr') else k for k in ARCH_REGISTRY.keys()})
        close = difflib.get_close_matches(str(t), names, n=3)
        hint = f' Did you mean {", ".join(close)}?' if close else ''
        raise error(f'{where}.type {t!r} is not a registered BasicSR arch.{hint} (Archs are the classes in BasicSR\'s '
                    f'basicsr/archs/*_arch.py and those of registered plugins.)')
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # BasicSR prints 'Name X is not found, use name: X_basicsr!'
            return build_network(copy.deepcopy(network_opt))
    except Exception as exc:  # noqa: BLE001  (the arch's own complaint about its options)
        raise error(f'{where} (type {t}) cannot be built with the given options: {type(exc).__name__}: {exc}') from exc


def _first(keys, n=3):
    keys = list(keys)
    return ', '.join(keys[:n]) + (f', ... ({len(keys)} in all)' if len(keys) > n else '')


def _shape(v):
    return 'x'.join(map(str, getattr(v, 'shape', ()))) or 'scalar'


def check_state_dict(net, state, weights, network_opt, prefix=''):
    """Raise a BenchmarkError (``prefix`` + message) naming the first missing, unexpected and
    mis-shaped keys when the checkpoint ``state`` does not fit ``net`` (what strict loading refuses)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f'{k} (checkpoint {_shape(state[k])}, network {_shape(own[k])})' for k in own
              if k in state and tuple(getattr(state[k], 'shape', ())) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = ([f'{len(missing)} key(s) of the network are missing from the checkpoint: {_first(missing)}']
             if missing else [])
    parts += [f'{len(unexpected)} key(s) of the checkpoint are not in the network: {_first(unexpected)}'] \
        if unexpected else []
    parts += [f'{len(shapes)} tensor(s) differ in shape: {_first(shapes, 2)}'] if shapes else []
    raise BenchmarkError(
        f'{prefix}the weights {weights} do not fit network_g (type {network_opt.get("type")}): {"; ".join(parts)}. '
        f'They were '
        f'trained with another architecture or other network options: give this model the network_g of the '
        f'training run that wrote them (opt: its train.yml, or experiments/NAME/*.yml), or the weights of this '
        f'network.')


def load_network(network_opt, weights, param_key='auto', device='cpu', name=None):
    """A BasicSR arch from its options and a checkpoint (``params_ema`` preferred by ``auto``).
    Every failure is a BenchmarkError naming the model (``name``), the file and what to do."""
    import torch
    where = f'model {name}: ' if name else ''
    net = build_arch(network_opt, f'{where}network_g')
    if not os.path.isfile(weights or ''):
        raise BenchmarkError(f'{where}weights {weights!r} do not exist (path of a net_g_*.pth checkpoint).')
    try:
        state = torch.load(weights, map_location='cpu', weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises many kinds for a file that is not a checkpoint)
        raise BenchmarkError(f'{where}the weights {weights} cannot be read as a PyTorch checkpoint '
                             f'({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}). Give a '
                             f'net_g_*.pth written by BasicSR.') from None
    if not isinstance(state, dict):
        raise BenchmarkError(f'{where}the weights {weights} hold a {type(state).__name__}, not a state dict.')
    if param_key == 'auto':
        param_key = 'params_ema' if 'params_ema' in state else ('params' if 'params' in state else None)
    if param_key:
        if param_key not in state:
            raise BenchmarkError(f'{where}{weights} has no {param_key!r}; it holds {sorted(state)}. Set param_key.')
        state = state[param_key]
    state = {k[7:] if k.startswith('module.') else k: v for k, v in state.items()}
    check_state_dict(net, state, weights, network_opt, where)
    net.load_state_dict(state, strict=True)
    return net.eval().to(device)


def restore(net, lq, tile=None, in_ch=3, device='cpu'):
    """float32 BGR [0,1] HxWx3 -> uint8 BGR output of ``net`` (tiled when tile.size > 0)."""
    import torch

    from tripled_basicsr.utils.tiled import tiled_forward
    x = lq[:, :, ::-1] if in_ch == 3 else lq[:, :, :1]
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].to(device)
    tile = tile or {}
    with torch.no_grad():
        y = tiled_forward(net, x, tile=int(tile.get('size', 0)), overlap=int(tile.get('overlap', 32)),
                          blend=tile.get('blend', 'none'), blend_width=tile.get('blend_width'),
                          pad_multiple=int(tile.get('pad_multiple', 1)))
    y = y[0].float().clamp_(0, 1).numpy().transpose(1, 2, 0)
    y = np.repeat(y, 3, axis=2) if y.shape[2] == 1 else y[:, :, ::-1]
    return np.round(y * 255.0).astype(np.uint8)


def input_baseline(lq, scale):
    """The 'do nothing' output: LQ itself, or its MATLAB-bicubic upscale for SR."""
    if scale == 1:
        return np.clip(np.round(lq * 255.0), 0, 255).astype(np.uint8)
    from basicsr.utils.matlab_functions import imresize
    return np.clip(np.round(imresize(lq.astype(np.float64), scale) * 255.0), 0, 255).astype(np.uint8)


def score(out, gt, spec, no_reference=()):
    """Metrics of one output image under the set's protocol."""
    from basicsr.metrics import calculate_psnr, calculate_ssim
    cb, y = int(spec['crop_border']), bool(spec['y_channel'])
    if spec['grey']:  # grey sets: score the grey channel (the three channels of a grey GT are equal)
        out, gt, y = out[:, :, :1], gt[:, :, :1], False
    res = {'psnr': float(calculate_psnr(out, gt, crop_border=cb, test_y_channel=y)),
           'ssim': float(calculate_ssim(out, gt, crop_border=cb, test_y_channel=y))}
    if 'piqe' in no_reference:
        from tripled_basicsr.metrics.iqa_metric import calculate_piqe
        res['piqe'] = calculate_piqe(out if out.shape[2] == 3 else np.repeat(out, 3, 2), crop_border=cb)
    if 'brisque' in no_reference:
        from tripled_basicsr.metrics.iqa_metric import calculate_brisque
        res['brisque'] = calculate_brisque(out if out.shape[2] == 3 else np.repeat(out, 3, 2),
                                           model_path=no_reference['brisque'], crop_border=cb)
    return res


def evaluate(run, pairs, spec, no_reference=()):
    """Mean metrics of ``run(lq) -> uint8 output`` over ``pairs``; also per-image values."""
    per = []
    for key, gt, lq in pairs:
        out = run(lq)
        if out.shape != gt.shape:
            raise BenchmarkError(f'{spec["name"]}/{key}: output {out.shape} differs from GT {gt.shape}; '
                                 f'check the model scale ({spec["scale"]}).')
        per.append({'key': key, **score(out, gt, spec, no_reference)})
    mean = {m: float(np.mean([p[m] for p in per])) for m in per[0] if m != 'key'}
    return mean, per


def protocol_fingerprint(spec):
    """Changes whenever the images or numbers of a set would change (cached scores are then dropped)."""
    import hashlib
    return hashlib.sha256(json.dumps([PROTOCOL_VERSION, spec], sort_keys=True, default=str).encode()).hexdigest()[:12]


def protocol_line(spec):
    if spec['task'] == 'sr':
        ch = 'Y (BT.601)' if spec['y_channel'] else 'RGB'
        return (f'x{spec["scale"]} SR, LQ = set files or MATLAB bicubic of mod-cropped GT; PSNR/SSIM on {ch}, '
                f'border {spec["crop_border"]} px cropped')
    if spec['task'] == 'denoise':
        return (f'AWGN sigma {", ".join(f"{s:g}" for s in spec["sigmas"])} (float, unclipped, '
                f'RandomState(noise_seed={spec["noise_seed"]} + image index)); PSNR/SSIM on '
                f'{"grey" if spec["grey"] else "RGB"}, no crop')
    return f'paired LQ/GT, PSNR/SSIM on {"Y" if spec["y_channel"] else "RGB"}, border {spec["crop_border"]} px'


# ----------------------------------------------------------------------------- command
def model_specs(opt, path):
    models = opt.get('models') or []
    if not models:
        raise BenchmarkError(f'{path}: models: is empty; list the trained models (name, network_g or opt, weights).')
    out = []
    for i, m in enumerate(models):
        m = dict(_check('mapping', f'models[{i}]', m))
        check_keys(m, MODEL_KEYS, f'models[{i}].', REF, BenchmarkError)
        name = _check('string', f'models[{i}].name', m['name']) if 'name' in m else f'model{i}'
        if any(o['name'] == name for o in out):
            raise BenchmarkError(f'{path}: two models are named {name!r}; the names label the table\'s columns, '
                                 f'give each model its own.')
        if 'type' in m:
            _check('choice', f'models[{i}].type', m['type'], choices=('input',))
            out.append({'name': name, 'type': 'input'})
            continue
        net = m.get('network_g')
        if net is None and m.get('opt'):
            net = load_yaml_safe(_check('string', f'models[{i}].opt', m['opt'])).get('network_g')
        if not net:
            raise BenchmarkError(f'{path}: model {name}: give network_g (the arch options) or opt (its training YAML).')
        if not m.get('weights'):
            raise BenchmarkError(f'{path}: model {name}: weights is required (a net_g_*.pth checkpoint).')
        _check('string', f'models[{i}].weights', m['weights'])
        param_key = _check('string', f'models[{i}].param_key', m.get('param_key', 'auto'))
        out.append({'name': name, 'network_g': net, 'weights': m['weights'], 'param_key': param_key})
    return out


def run_benchmark(opt, path='<options>', check_output=None):
    """Evaluate every model on every present set (a note a result, a warning a skipped set or
    file); returns (rows, skipped, specs).

    ``check_output(specs)``, when given, runs once the present sets are known and before any
    model is loaded (main() checks the output path there, so a bad one fails before the work).
    Every option is checked first; every model is built and its checkpoint loaded before the
    first evaluation, so a wrong key, value or checkpoint fails before any model runs."""
    check_options(opt, path)
    defaults = {'datasets_root': opt.get('datasets_root', 'datasets')}
    for k in SET_DEFAULT_KEYS:
        if k in opt:
            defaults[k] = opt[k]
    specs = [set_spec(s, defaults, f'sets[{i}].') for i, s in enumerate(opt.get('sets') or [])]
    if not specs:
        raise BenchmarkError(f'{path}: sets: is empty; list test sets (e.g. [Set5, Set14, BSD100, Urban100]).')
    models = model_specs(opt, path)
    from tripled_basicsr.utils.netinfo import input_channels
    device = resolve_device(opt.get('device', 'auto'))
    tile = check_tile(opt.get('tile'))
    nr = {}
    for m in opt.get('no_reference') or []:
        if isinstance(m, dict):
            nr.update(m)
        else:
            nr[m] = None
    rows, skipped = [], []
    loaded = {}
    for spec in specs:
        left_out = []  # files without a partner, with on_unpaired: skip
        groups = load_pairs(spec, left_out)
        if not groups:
            msg = missing_message(spec)
            warn(msg)
            skipped.append(msg)
            continue
        loaded[spec['name']] = (spec, groups, left_out)
        for label, pairs in groups.items():
            if left_out:
                msg = (f'{label}: scored {len(pairs)} of {len(pairs) + len(left_out)} images (on_unpaired: skip), '
                       f'skipped: {"; ".join(left_out)}')
                warn(msg)
                skipped.append(msg)
    if check_output is not None:
        check_output([s for s, _, _ in loaded.values()])
    # every checkpoint against its network before the first evaluation (on the CPU; moved when its turn comes)
    nets = {m['name']: load_network(m['network_g'], m['weights'], m['param_key'], 'cpu', m['name'])
            for m in models if m.get('type') != 'input'}
    for m in models:
        net = nets.pop(m['name'], None)
        if net is not None:
            net = net.to(device)
            in_ch = input_channels(net, m['network_g'])
        for name, (spec, groups, left_out) in loaded.items():
            for label, pairs in groups.items():
                t = time.time()
                if net is None:
                    run = (lambda s: lambda lq: input_baseline(lq, s))(int(spec['scale']))
                else:
                    run = (lambda n, c: lambda lq: restore(n, lq, tile, c, device))(net, in_ch)
                snr = dict(nr) if spec['task'] == 'paired' or spec.get('no_reference') else {}
                mean, _ = evaluate(run, pairs, spec, snr)
                extra = {'of': len(pairs) + len(left_out), 'skipped_files': list(left_out)} if left_out else {}
                rows.append({'model': m['name'], 'set': label, 'images': len(pairs), **extra, **mean,
                             'seconds': round(time.time() - t, 2), 'protocol': protocol_line(spec)})
                note(f'{m["name"]:<20} {label:<22} ' + ' '.join(f'{k} {v:.4f}' for k, v in mean.items()))
        del net
    return rows, skipped, [s for s, _, _ in loaded.values()]


def markdown_table(rows, skipped=(), title='Benchmark'):
    sets = list(dict.fromkeys(r['set'] for r in rows))
    models = list(dict.fromkeys(r['model'] for r in rows))
    metrics = [m for m in ('psnr', 'ssim', 'piqe', 'brisque') if any(m in r for r in rows)]
    by = {(r['model'], r['set']): r for r in rows}
    lines = [f'# {title}', '', 'Protocol:']
    for p in dict.fromkeys(r['protocol'] for r in rows):
        lines.append(f'* {", ".join(s for s in sets if any(r["set"] == s and r["protocol"] == p for r in rows))}: {p}')
    lines += ['', 'PSNR (dB) / SSIM' + (' / ' + ' / '.join(m.upper() for m in metrics[2:]) if metrics[2:] else '')
              + ' (PIQE, BRISQUE: lower is better)' * bool(metrics[2:]), '',
              '| set | ' + ' | '.join(models) + ' |', '|---|' + '---|' * len(models)]
    for s in sets:
        cells = []
        for m in models:
            r = by.get((m, s))
            cells.append(' / '.join(f'{r[k]:.2f}' if k != 'ssim' else f'{r[k]:.4f}' for k in metrics if k in r)
                         if r else '-')
        first = by.get((models[0], s))
        n = '?' if first is None else (f'{first["images"]} of {first["of"]}' if 'of' in first else first['images'])
        lines.append(f'| {s} ({n} images) | ' + ' | '.join(cells) + ' |')
    if skipped:
        lines += [''] + [f'* {m}' for m in skipped]
    return '\n'.join(lines) + '\n'


def write_outputs(out_dir, rows, skipped, opt, overwrite=True, sources=()):
    with AtomicOutputDir(out_dir, overwrite=overwrite, option_name='output.overwrite: true', sources=sources,
                         tool='benchmark') as tmp:
        with open(os.path.join(tmp, 'results.md'), 'w', encoding='utf-8') as f:
            f.write(markdown_table(rows, skipped, opt.get('name', 'Benchmark')))
        with open(os.path.join(tmp, 'results.json'), 'w', encoding='utf-8') as f:
            json.dump({'created': datetime.datetime.now().isoformat(timespec='seconds'), 'rows': rows,
                       'skipped': skipped, 'options': opt}, f, indent=1)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(os.path.join(tmp, 'results.csv'), 'w', newline='', encoding='utf-8') as f:
            w = csv.DictWriter(f, keys)
            w.writeheader()
            w.writerows(rows)


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m tripled_basicsr.benchmark', description=__doc__.split('\n\n')[0])
    p.add_argument('-opt', required=True, help='benchmark YAML (options/benchmark_*.yml)')
    p.add_argument('--debug', action='store_true', help='full tracebacks')
    args = p.parse_args(argv)

    def body():
        opt = load_yaml_safe(args.opt)
        check_options(opt, args.opt)  # every key and value, before any image or model is read
        out = (opt.get('output') or {}).get('path') or os.path.join('results', f'benchmark_{opt.get("name", "run")}')
        overwrite = (opt.get('output') or {}).get('overwrite', True)

        def sources(specs):  # every folder a test set reads from
            return [(f"{s['name']}.{k}", s[k]) for s in specs for k in ('root', 'dataroot_gt', 'dataroot_lq')
                    if s.get(k)]

        def check_output(specs):  # the output policy, before any model runs
            AtomicOutputDir(out, overwrite=overwrite, option_name='output.overwrite: true', sources=sources(specs),
                            tool='benchmark')

        rows, skipped, specs = run_benchmark(opt, args.opt, check_output=check_output)
        if not rows:
            raise BenchmarkError('no test set was found; nothing to report (see the skipped lines above).')
        write_outputs(out, rows, skipped, opt, overwrite=overwrite, sources=sources(specs))
        print(markdown_table(rows, skipped, opt.get('name', 'Benchmark')))
        print(f'written: {out}/results.md, results.csv, results.json')

    return run_command('benchmark', body, args.debug, (BenchmarkError, FileNotFoundError, ValueError, OSError))


if __name__ == '__main__':
    sys.exit(main())
