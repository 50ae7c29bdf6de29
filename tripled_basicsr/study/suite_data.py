"""The task suite's data: ``python -m tripled_basicsr.study.suite prepare --src DIR``
(also ``python benchmarks/prepare_suite.py --src DIR``).

Builds every task's paired pool ``OUT/<pool>/{gt,lq}`` and its test sets from local copies of
public repositories (``git clone`` folders, or folders extracted from them, one per repository
under ``--src``). Nothing is downloaded unless ``--clone`` is given; a missing repository is
reported with the exact ``git clone`` command. Every degradation is deterministic:

* AWGN: ``add_noise(gt, sigma, 1000 + i)`` (``tripled_basicsr.benchmark``, i = the image's
  index in name order), clipped and rounded to 8 bit: the protocol of the existing
  ``dn25_train400`` pool (docs/study.md, "Real-data study"), so its numbers stay comparable;
* x4 bicubic: GT mod-cropped to 4, LQ = ``benchmark.bicubic_down`` (BasicSR's MATLAB-style
  ``imresize``, rounded to 8 bit), the function the benchmark uses for test sets without LR files;
* JPEG: OpenCV's encoder (IJG tables) at the given quality, grey images as one-channel JPEGs.

Test sets scored with the benchmark's own degradation (denoising: its AWGN; SR: its bicubic of
the GT) are copied unchanged (SR sets: the ``_HR`` files only); JPEG test sets are stored as
``gt``/``lq`` pairs (the benchmark's ``paired`` protocol). docs/study.md, "Task suite".
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np

from tripled_basicsr.utils.log import note

DOC = 'docs/study.md ("Task suite")'
TOOL = 'suite_prepare'
VERSION = 1  # bump when a product's degradation or layout changes: earlier outputs are then rebuilt (--overwrite)
INFO = 'suite_prepare.json'
NOISE_SEED = 1000  # + image index: the dn25_train400 rule of docs/study.md

# folder name (git clone's default) -> GitHub owner/name
REPOS = {
    'DnCNN': 'cszn/DnCNN',
    'SelfExSR': 'jbhuang0604/SelfExSR',
    'SRCNN-Tensorflow': 'tegg89/SRCNN-Tensorflow',
    'ssn_pytorch': 'Sisso16/ssn_pytorch',
    'FFDNet': 'cszn/FFDNet',
}

_BSDS = 'BSR/BSDS500/data/images'
# raw image collections: name -> (repository folder, folders inside it, file name endings, expected count)
COLLECTIONS = {
    'Train400': ('DnCNN', ['TrainingCodes/DnCNN_TrainingCodes_v1.0/data/Train400'], ('.png',), 400),
    'Set12': ('DnCNN', ['testsets/Set12'], ('.png',), 12),
    'BSD68': ('DnCNN', ['testsets/BSD68'], ('.png',), 68),
    'classic5': ('DnCNN', ['testsets/classic5'], ('.bmp',), 5),
    'LIVE1': ('DnCNN', ['testsets/LIVE1'], ('.bmp',), 29),
    'T91': ('SRCNN-Tensorflow', ['Train'], ('.bmp',), 91),
    'BSD200': ('ssn_pytorch', [f'{_BSDS}/train'], ('.jpg',), 200),
    'BSDS500': ('ssn_pytorch', [f'{_BSDS}/train', f'{_BSDS}/val', f'{_BSDS}/test'], ('.jpg',), 500),
    'Set5': ('SelfExSR', ['data/Set5/image_SRF_4'], ('_hr.png',), 5),
    'Set14': ('SelfExSR', ['data/Set14/image_SRF_4'], ('_hr.png',), 14),
    'BSD100': ('SelfExSR', ['data/BSD100/image_SRF_4'], ('_hr.png',), 100),
    'Urban100': ('SelfExSR', ['data/Urban100/image_SRF_4'], ('_hr.png',), 100),
    'CBSD68': ('FFDNet', ['testsets/CBSD68'], ('.png',), 68),
    'Kodak24': ('FFDNet', ['testsets/Kodak24'], ('.png',), 24),
    'McMaster': ('FFDNet', ['testsets/McMaster'], ('.tif',), 18),
}


# ----------------------------------------------------------------------------- degradations
def noisy_uint8(gt, sigma, seed):
    """The pool's noisy LQ: ``add_noise`` (the benchmark's AWGN), clipped and rounded to 8 bit."""
    from tripled_basicsr.benchmark import add_noise
    return np.clip(np.round(add_noise(gt, sigma, seed) * 255), 0, 255).astype(np.uint8)


def jpeg_uint8(img, quality):
    """Encode with OpenCV's JPEG encoder at ``quality`` and decode again (grey stays grey)."""
    ok, buf = cv2.imencode('.jpg', img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError('OpenCV could not encode a JPEG')
    out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out if img.ndim == 3 else out.reshape(img.shape[:2])


def mod_crop(img, scale):
    h, w = img.shape[:2]
    return img[:h - h % scale, :w - w % scale]


def bicubic_uint8(gt, scale):
    from tripled_basicsr.benchmark import bicubic_down
    return bicubic_down(gt, scale)


def _read(path, flag=cv2.IMREAD_UNCHANGED):
    img = cv2.imread(path, flag)
    if img is None:
        raise ValueError(f'{path}: not a readable image.')
    if img.dtype != np.uint8:
        raise ValueError(f'{path}: expected an 8-bit image, got {img.dtype}.')
    return img


def _stem(path):
    return os.path.splitext(os.path.basename(path))[0]


# ----------------------------------------------------------------------------- products
class Product:
    """One output folder under ``--out``: a pool (``gt/`` + ``lq/``) or a test set.

    ``make(files)`` (files: {collection: [paths]}) -> list of (source label, fn); fn() returns
    {relative output path: ndarray to write as PNG, or ('copy', source path)}."""

    def __init__(self, name, kind, needs, about, make):
        self.name, self.kind, self.needs, self.about, self.make = name, kind, tuple(needs), about, make


def _noise_pool(sigma, coll='Train400', flag=cv2.IMREAD_UNCHANGED):
    def make(files):
        def one(i, p):
            def fn():
                gt = _read(p, flag)
                name = _stem(p) + '.png'
                return {f'gt/{name}': gt, f'lq/{name}': noisy_uint8(gt, sigma, NOISE_SEED + i)}
            return fn
        return [(p, one(i, p)) for i, p in enumerate(files[coll])]
    return make


def _cbsd432(files):
    test = {_stem(p) for p in files['CBSD68']}
    lost = sorted(test - {_stem(p) for p in files['BSDS500']})
    if lost:  # CBSD68 is part of BSDS500 (its val split): 500 - 68 = 432
        raise ValueError(f'CBSD68 images {", ".join(lost[:3])} are not in the BSDS500 copy; CBSD432 = BSDS500 '
                         f'without CBSD68 cannot be made (another BSDS500 or CBSD68 than the suite expects?).')
    pool = sorted((p for p in files['BSDS500'] if _stem(p) not in test), key=lambda p: _stem(p) + '.png')

    def one(i, p):
        def fn():
            gt = _read(p, cv2.IMREAD_COLOR)
            name = _stem(p) + '.png'
            return {f'gt/{name}': gt, f'lq/{name}': noisy_uint8(gt, 25, NOISE_SEED + i)}
        return fn
    return [(p, one(i, p)) for i, p in enumerate(pool)]


def _sr_pool(scale, colls):
    def make(files):
        paths = [p for c in colls for p in files[c]]
        names = [_stem(p) + '.png' for p in paths]
        if len(set(names)) != len(names):
            raise ValueError(f'{"+".join(colls)}: two images share a name; cannot pool them.')

        def one(p, name):
            def fn():
                gt = mod_crop(_read(p, cv2.IMREAD_COLOR), scale)
                return {f'gt/{name}': gt, f'lq/{name}': bicubic_uint8(gt, scale)}
            return fn
        return [(p, one(p, n)) for p, n in sorted(zip(paths, names), key=lambda t: t[1])]
    return make


def _jpeg_pairs(quality, coll):
    def make(files):
        def one(p):
            def fn():
                gt = _read(p, cv2.IMREAD_GRAYSCALE)  # colour sets (LIVE1) -> grey: BT.601 luma, cv2's rule
                name = _stem(p) + '.png'
                return {f'gt/{name}': gt, f'lq/{name}': jpeg_uint8(gt, quality)}
            return fn
        return [(p, one(p)) for p in files[coll]]
    return make


def _copy(coll, strip=''):
    def make(files):
        def one(p):
            name = os.path.basename(p)
            if strip:  # SelfExSR: img_001_SRF_4_HR.png -> img_001.png
                stem, ext = os.path.splitext(name)
                name = (stem[:-len(strip)] if stem.lower().endswith(strip.lower()) else stem) + ext
            return lambda: {name: ('copy', p)}
        return [(p, one(p)) for p in files[coll]]
    return make


PRODUCTS = {p.name: p for p in [
    Product('dn25_train400', 'pool', ['Train400'], 'Train400 (400 grey 180x180 BSD crops), LQ = GT + AWGN sigma 25 '
            '(add_noise(gt, 25, 1000 + i), clipped, rounded)', _noise_pool(25)),
    Product('dn50_train400', 'pool', ['Train400'], 'Train400, LQ = GT + AWGN sigma 50 (add_noise(gt, 50, 1000 + i), '
            'clipped, rounded)', _noise_pool(50)),
    Product('jpeg10_train400', 'pool', ['Train400'], 'Train400, LQ = grey JPEG quality 10 (OpenCV)',
            _jpeg_pairs(10, 'Train400')),
    Product('sr4_t91bsd200', 'pool', ['T91', 'BSD200'], 'T91 (91) + BSD200 (the BSDS500 train split): the 291 images '
            'of VDSR; GT mod-cropped to 4, LQ = MATLAB-style bicubic x1/4 (BasicSR imresize), rounded',
            _sr_pool(4, ('T91', 'BSD200'))),
    Product('cdn25_cbsd432', 'pool', ['BSDS500', 'CBSD68'], 'CBSD432 (the 500 BSDS500 images without CBSD68, '
            'colour), LQ = GT + AWGN sigma 25 per channel (add_noise(gt, 25, 1000 + i), clipped, rounded)', _cbsd432),
    Product('Set12', 'test', ['Set12'], 'Set12 (grey), unchanged', _copy('Set12')),
    Product('BSD68', 'test', ['BSD68'], 'BSD68 (grey), unchanged', _copy('BSD68')),
    Product('Set5', 'test', ['Set5'], 'Set5 HR (SelfExSR), unchanged', _copy('Set5', '_SRF_4_HR')),
    Product('Set14', 'test', ['Set14'], 'Set14 HR (SelfExSR), unchanged', _copy('Set14', '_SRF_4_HR')),
    Product('BSD100', 'test', ['BSD100'], 'BSD100 HR (SelfExSR), unchanged', _copy('BSD100', '_SRF_4_HR')),
    Product('Urban100', 'test', ['Urban100'], 'Urban100 HR (SelfExSR), unchanged', _copy('Urban100', '_SRF_4_HR')),
    Product('CBSD68', 'test', ['CBSD68'], 'CBSD68 (colour), unchanged', _copy('CBSD68')),
    Product('Kodak24', 'test', ['Kodak24'], 'Kodak24 (colour), unchanged', _copy('Kodak24')),
    Product('McMaster', 'test', ['McMaster'], 'McMaster (colour, 18), unchanged', _copy('McMaster')),
    Product('jpeg10_classic5', 'test', ['classic5'], 'classic5 (grey), LQ = JPEG quality 10 (OpenCV)',
            _jpeg_pairs(10, 'classic5')),
    Product('jpeg10_LIVE1', 'test', ['LIVE1'], 'LIVE1 as grey (BT.601 luma), LQ = JPEG quality 10 (OpenCV)',
            _jpeg_pairs(10, 'LIVE1')),
]}

# task -> (what it is, products: the pool first, then its test sets)
TASKS = {
    'dn25_train400': ('grey denoising, AWGN sigma 25: Train400 -> Set12, BSD68', ['dn25_train400', 'Set12', 'BSD68']),
    'dn50_train400': ('grey denoising, AWGN sigma 50: Train400 -> Set12, BSD68', ['dn50_train400', 'Set12', 'BSD68']),
    'sr4_t91bsd200': ('x4 bicubic super-resolution: T91 + BSD200 (291 images) -> Set5, Set14, BSD100, Urban100 '
                      '(Y channel, 4-px border)', ['sr4_t91bsd200', 'Set5', 'Set14', 'BSD100', 'Urban100']),
    'jpeg10_train400': ('grey JPEG artifact removal, quality 10: Train400 -> classic5, LIVE1 (grey)',
                        ['jpeg10_train400', 'jpeg10_classic5', 'jpeg10_LIVE1']),
    'cdn25_cbsd432': ('colour denoising, AWGN sigma 25: CBSD432 -> CBSD68, Kodak24, McMaster',
                      ['cdn25_cbsd432', 'CBSD68', 'Kodak24', 'McMaster']),
}


def prepare_command(tasks=None, src='DIR'):
    """The command that prepares ``tasks`` (all when None), for messages."""
    only = f' --tasks {",".join(tasks)}' if tasks else ''
    return f'python -m tripled_basicsr.study.suite prepare --src {src}{only}'


# ----------------------------------------------------------------------------- sources
class SourceMissing(ValueError):
    pass


def clone_commands(src, names):
    return [f'git clone --depth 1 https://github.com/{REPOS[n]} {os.path.join(src, n)}' for n in names]


def repo_dir(src, name):
    """The folder of repository ``name`` under ``src``: ``src/<name>`` (git clone's default) or
    ``src/<owner>+<name>``; None when neither exists."""
    owner = REPOS[name].split('/')[0]
    for d in (os.path.join(src, name), os.path.join(src, f'{owner}+{name}')):
        if os.path.isdir(d):
            return d
    return None


def _is_bare(d):
    return os.path.isfile(os.path.join(d, 'HEAD')) and os.path.isdir(os.path.join(d, 'objects'))


def collect(src, colls):
    """{collection: sorted image paths} for the collections ``colls``, or SourceMissing listing
    the repositories to clone (with the exact commands) and any folder that is not as expected."""
    need = sorted({COLLECTIONS[c][0] for c in colls})
    missing = [n for n in need if repo_dir(src, n) is None]
    if missing:
        uses = {n: sorted(c for c in colls if COLLECTIONS[c][0] == n) for n in missing}
        lines = [f'  {REPOS[n]} ({", ".join(uses[n])}) -> {os.path.join(src, n)}' for n in missing]
        raise SourceMissing(
            f'the suite needs these public repositories under --src {src} (one folder each, named as git clone names '
            f'it):\n' + '\n'.join(lines) + '\nClone them (nothing else is downloaded), then run this command again:\n'
            f'  mkdir -p {src}\n' + '\n'.join(f'  {c}' for c in clone_commands(src, missing))
            + '\nor add --clone to let this command run those git clone commands.')
    out, problems = {}, []
    for c in colls:
        repo, folders, endings, count = COLLECTIONS[c]
        root = repo_dir(src, repo)
        paths = []
        for f in folders:
            d = os.path.join(root, f)
            if not os.path.isdir(d):
                hint = (f' ({root} is a bare git directory: extract its files, e.g. mkdir -p {src}/{repo}.files && '
                        f'git --git-dir={root} archive HEAD {f} | tar -x -C {src}/{repo}.files, and point --src at '
                        f'a folder holding it as {repo})' if _is_bare(root) else '')
                problems.append(f'{c}: folder {d} is missing from the copy of {REPOS[repo]}{hint}')
                break
            paths += [os.path.join(d, n) for n in os.listdir(d)
                      if n.lower().endswith(endings) and not n.startswith('.') and os.path.isfile(os.path.join(d, n))]
        else:
            paths.sort(key=lambda p: os.path.basename(p))
            if len(paths) != count:
                problems.append(f'{c}: {len(paths)} images ({"/".join(endings)}) in {", ".join(folders)} of {root}, '
                                f'expected {count} (an incomplete clone, Git LFS pointers, or another version of '
                                f'{REPOS[repo]}?)')
            out[c] = paths
    if problems:
        raise SourceMissing('the repository copies are not as expected:\n  ' + '\n  '.join(problems))
    return out


def run_clones(src, colls, run=subprocess.run):
    need = sorted({COLLECTIONS[c][0] for c in colls})
    missing = [n for n in need if repo_dir(src, n) is None]
    if missing:
        os.makedirs(src, exist_ok=True)
    for n in missing:
        cmd = ['git', 'clone', '--depth', '1', f'https://github.com/{REPOS[n]}', os.path.join(src, n)]
        note('+ ' + ' '.join(cmd))
        if run(cmd).returncode != 0:
            raise SourceMissing(f'git clone of {REPOS[n]} failed (see above); clone it yourself into '
                                f'{os.path.join(src, n)} and run this command again without --clone.')
    return missing


# ----------------------------------------------------------------------------- writing
def _spec(product, items):
    """What a product's folder holds, as a fingerprint: rebuilt when the recipe changes."""
    srcs = [os.path.basename(label) for label, _ in items]
    return {'product': product.name, 'version': VERSION, 'about': product.about, 'n': len(items),
            'sources': hashlib.sha256('\n'.join(srcs).encode()).hexdigest()[:16]}


def _as_bgr(img):
    from tripled_basicsr.utils.img import to_bgr_uint8
    return to_bgr_uint8(img)


def _image_files(root):
    from tripled_basicsr.data.paired_source import IMG_EXTENSIONS
    out = []
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith('.')]
        out += [os.path.relpath(os.path.join(d, n), root).replace(os.sep, '/') for n in names
                if n.lower().endswith(IMG_EXTENSIONS) and not n.startswith('.')]
    return sorted(out)


def compare_existing(out, items):
    """None when the folder ``out`` (not written by this script) holds exactly the images the
    product would write, pixel for pixel; else a line saying the first difference."""
    have = set(_image_files(out))
    want = set()
    for label, fn in items:
        for rel, val in fn().items():
            want.add(rel)
            path = os.path.join(out, rel)
            if rel not in have:
                return f'{rel} is missing'
            exp = _read(val[1]) if isinstance(val, tuple) else val
            got = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if got is None or got.shape[:2] != exp.shape[:2] or not np.array_equal(_as_bgr(got), _as_bgr(exp)):
                return f'{rel} differs from what the recipe gives (from {label})'
    extra = sorted(have - want)
    return f'it also holds {", ".join(extra[:3])}{" ..." if len(extra) > 3 else ""}' if extra else None


def write_product(product, items, out, sources, overwrite=False):
    """Build ``out`` (atomic) unless it is up to date. -> status word."""
    from tripled_basicsr.utils.ownership import AtomicOutputDir, read_marker
    from tripled_basicsr.utils.io import read_json
    spec = _spec(product, items)
    marker = read_marker(out)
    if os.path.isdir(out) and os.listdir(out):
        if marker is None:  # a user's folder (e.g. the dn25 pool made with the docs' snippet): verify, never touch
            diff = compare_existing(out, items)
            if diff is None:
                return 'present (same pixels; not written by prepare, left as is)'
            raise ValueError(f'{out} exists, was not written by prepare and is not what the suite expects: {diff}. '
                             f'It is never replaced: move it away, or pass another --out.')
        if marker.get('tool') == TOOL and read_json(os.path.join(out, INFO), {}).get('spec') == spec \
                and marker.get('complete'):
            return 'up to date'
        if not overwrite:
            raise ValueError(f'{out} was written by an earlier prepare with another recipe; pass --overwrite to '
                             f'rebuild it.')
    with AtomicOutputDir(out, overwrite=True, option_name='--overwrite', empty_ok=True, sources=sources,
                         tool=TOOL) as tmp:
        n = 0
        for label, fn in items:
            for rel, val in fn().items():
                path = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if isinstance(val, tuple):
                    shutil.copyfile(val[1], path)
                elif not cv2.imwrite(path, val):
                    raise ValueError(f'could not write {path}')
                n += 1
        with open(os.path.join(tmp, INFO), 'w', encoding='utf-8') as f:
            json.dump({'spec': spec, 'kind': product.kind, 'files': n, 'opencv': cv2.__version__,
                       'sources': sorted({os.path.dirname(lb) for lb, _ in items})}, f, indent=1)
    return 'written'


def prepare(src, out='datasets', tasks=None, clone=False, overwrite=False):
    """Build every product of ``tasks`` (default: all) under ``out``, a note a product; -> {product: status}."""
    tasks = list(tasks or TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f'unknown task(s) {", ".join(unknown)}; the suite\'s tasks: {", ".join(TASKS)}.')
    src, out = os.path.abspath(os.path.expanduser(src)), os.path.abspath(os.path.expanduser(out))
    names = list(dict.fromkeys(p for t in tasks for p in TASKS[t][1]))
    colls = sorted({c for p in names for c in PRODUCTS[p].needs})
    if clone:
        run_clones(src, colls)
    files = collect(src, colls)
    sources = [(f'--src {REPOS[r]}', repo_dir(src, r)) for r in sorted({COLLECTIONS[c][0] for c in colls})]
    status = {}
    for name in names:
        product = PRODUCTS[name]
        items = product.make(files)
        dest = os.path.join(out, name)
        status[name] = write_product(product, items, dest, sources, overwrite)
        note(f'{name:18s} {len(items):4d} images  {status[name]:12s} {dest}')
    return status


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m tripled_basicsr.study.suite prepare',
                                description='Build the task suite\'s pools and test sets from local clones of public '
                                            f'repositories ({DOC}).')
    p.add_argument('--src', default=None, help='folder holding the clones (DnCNN, SelfExSR, SRCNN-Tensorflow, '
                                                'ssn_pytorch, FFDNet), as git clone names them')
    p.add_argument('--out', default='datasets', help='where the pools and test sets go (default: datasets, the '
                                                     'folder the suite options read)')
    p.add_argument('--tasks', default=None, help=f'comma-separated subset of: {", ".join(TASKS)}')
    p.add_argument('--clone', action='store_true', help='run the git clone commands for missing repositories')
    p.add_argument('--overwrite', action='store_true', help='rebuild outputs of an earlier prepare made with '
                                                            'another recipe')
    p.add_argument('--list', action='store_true', help='list the tasks, their data and the repositories; exit')
    p.add_argument('--debug', action='store_true', help='full tracebacks')
    args = p.parse_args(argv)
    from tripled_basicsr.utils.cli import run_command

    def body():
        if args.list:
            for t, (about, prods) in TASKS.items():
                print(f'{t}: {about}')
                for name in prods:
                    pr = PRODUCTS[name]
                    repos = sorted({REPOS[COLLECTIONS[c][0]] for c in pr.needs})
                    print(f'  {pr.kind:4s} {name}: {pr.about} [{", ".join(repos)}]')
            return 0
        if not args.src:
            p.error('--src DIR is required: the folder holding (or to hold, with --clone) the clones of '
                    + ', '.join(REPOS.values()))
        tasks = [t.strip() for t in args.tasks.split(',') if t.strip()] if args.tasks else None
        prepare(args.src, args.out, tasks, args.clone, args.overwrite)
        return 0
    return run_command('prepare', body, args.debug, (ValueError, OSError))


if __name__ == '__main__':
    sys.exit(main())
