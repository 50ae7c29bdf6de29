"""``python -m tripled_basicsr.slkd_data``: lay out the public sets of the SLKD recipes.

The GPU recipes (options/slkd_{derain,deblur,denoise}.yml and their teachers) read flat paired
folders that BasicSR's ``PairedImageDataset`` takes. The public archives come in other
layouts; this command builds the recipes' layout from the extracted archives **with symbolic
links** (nothing is copied, moved or modified; the output is a new folder of ours) and checks
every pair first:

* ``derain``: Rain13K as distributed with MPRNet / Restormer (``train/Rain13K/{input,target}``)
  and Rain100L (``test/Rain100L/{input,target}``) -> ``OUT/Rain13K/train/{input,target}``,
  ``OUT/Rain100L/{input,target}``;
* ``deblur``: GoPro_Large (``{train,test}/<sequence>/{blur,sharp}/``) ->
  ``OUT/GoPro/{train,test}/{input,target}/<sequence>_<file>`` (sequence names keep the frames
  of different sequences apart);
* ``denoise``: CBSD68 (``--src`` a folder of its clean images) -> ``OUT/CBSD68/gt`` (links) and
  ``OUT/CBSD68/noisy25`` (new PNGs: AWGN sigma 25, seeded per image, rounded and clipped to
  uint8, as a PNG validation set must be). The training set of ``slkd_denoise.yml`` is a
  distilled LMDB (docs/slkd.md, "Recipes").

Where to download: docs/slkd.md ("Data for the GPU recipes").
"""
import argparse
import os
import sys

TASKS = ('derain', 'deblur', 'denoise')
IMAGE_EXT = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')


class DataError(ValueError):
    """A source folder is missing or unpaired; the message names it and what to do."""


def _images(folder):
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXT) and not f.startswith('.'))


def _find(src, *candidates):
    """The first ``src/<candidate>`` folder that exists (candidates are relative paths)."""
    for c in candidates:
        p = os.path.join(src, c)
        if os.path.isdir(p):
            return p
    raise DataError(f'{src}: none of {", ".join(candidates)} exists; point --src at the extracted archive '
                    f'(docs/slkd.md, "Data for the GPU recipes").')


def paired_names(lq_dir, gt_dir):
    """The file names both folders hold; an LQ or GT file without its partner is an error."""
    lq, gt = set(_images(lq_dir)), set(_images(gt_dir))
    if not lq or lq != gt:
        only_lq, only_gt = sorted(lq - gt)[:3], sorted(gt - lq)[:3]
        raise DataError(f'{lq_dir} and {gt_dir} do not pair by file name ({len(lq)} vs {len(gt)} images; only in '
                        f'the first: {only_lq}, only in the second: {only_gt}). Use the archive as distributed.')
    return sorted(lq)


def plan_derain(src):
    """-> [(link path relative to OUT, target)] for Rain13K (train) and Rain100L (test)."""
    out = []
    for name, rel, cands in (('Rain13K', 'Rain13K/train', ('train/Rain13K', 'Rain13K/train', 'Rain13K')),
                             ('Rain100L', 'Rain100L', ('test/Rain100L', 'Rain100L'))):
        root = _find(src, *cands)
        lq, gt = _find(root, 'input'), _find(root, 'target')
        for f in paired_names(lq, gt):
            out += [(os.path.join(rel, 'input', f), os.path.join(lq, f)),
                    (os.path.join(rel, 'target', f), os.path.join(gt, f))]
    return out


def plan_deblur(src):
    """-> links for GoPro_Large: every sequence's blur/sharp frames, named <sequence>_<file>."""
    out = []
    for split in ('train', 'test'):
        root = _find(src, split, os.path.join('GoPro_Large', split))
        seqs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        if not seqs:
            raise DataError(f'{root}: no sequence folders (<sequence>/blur, <sequence>/sharp).')
        for seq in seqs:
            lq, gt = _find(os.path.join(root, seq), 'blur'), _find(os.path.join(root, seq), 'sharp')
            for f in paired_names(lq, gt):
                out += [(os.path.join('GoPro', split, 'input', f'{seq}_{f}'), os.path.join(lq, f)),
                        (os.path.join('GoPro', split, 'target', f'{seq}_{f}'), os.path.join(gt, f))]
    return out


def noisy_copy(gt, sigma, seed):
    """uint8 AWGN image: round(clip(gt + N(0, sigma), 0, 255)), RandomState(seed)."""
    import numpy as np
    rng = np.random.RandomState(seed)
    return np.clip(np.round(gt.astype(np.float64) + rng.normal(0, sigma, gt.shape)), 0, 255).astype(np.uint8)


def prepare(task, src, out, sigma=25, seed=0):
    """Build the task's sets under ``out`` (each set a new folder, written atomically: an existing
    one is refused, never replaced); -> {folder: image count}."""
    import cv2

    from tripled_basicsr.utils.ownership import AtomicOutputDir
    src = os.path.abspath(src)
    if not os.path.isdir(src):
        raise DataError(f'--src {src} is not a folder (the extracted archive).')
    if task == 'derain':
        links, noisy = plan_derain(src), []
    elif task == 'deblur':
        links, noisy = plan_deblur(src), []
    else:
        gt_dir = _find(src, 'gt', 'original_png', '.')
        names = _images(gt_dir)
        if not names:
            raise DataError(f'{gt_dir}: no images (the clean CBSD68 PNGs).')
        links = [(os.path.join('CBSD68', 'gt', f), os.path.join(gt_dir, f)) for f in names]
        noisy = [(os.path.join('CBSD68', f'noisy{sigma:g}', os.path.splitext(f)[0] + '.png'), os.path.join(gt_dir, f),
                  seed + i) for i, f in enumerate(names)]
    counts = {}
    jobs = [(rel, target, None) for rel, target in links] + noisy
    tops = sorted({rel.split(os.sep)[0] for rel, _, _ in jobs})
    there = [os.path.join(out, t) for t in tops if os.path.lexists(os.path.join(out, t))]
    if there:  # checked for every set before any is written
        raise DataError(f'{", ".join(there)} already exist(s); a set is never replaced: move it away or choose '
                        f'another --out.')
    for top in tops:  # each set a new folder of ours
        with AtomicOutputDir(os.path.join(out, top), sources=[('--src', src)], tool='slkd_data') as tmp:
            for rel, target, s in jobs:
                if rel.split(os.sep)[0] != top:
                    continue
                dst = os.path.join(tmp, os.path.relpath(rel, top))
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                if s is None:
                    os.symlink(target, dst)
                else:
                    gt = cv2.imread(target, cv2.IMREAD_UNCHANGED)
                    if gt is None:
                        raise DataError(f'{target}: cannot decode it as an image.')
                    if not cv2.imwrite(dst, noisy_copy(gt, sigma, s)):
                        raise OSError(f'{dst}: could not write it.')
                counts[os.path.dirname(rel)] = counts.get(os.path.dirname(rel), 0) + 1
    return counts


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m tripled_basicsr.slkd_data', description=__doc__.split('\n')[0])
    p.add_argument('--task', required=True, choices=TASKS)
    p.add_argument('--src', required=True, help='the extracted public archive (never modified)')
    p.add_argument('--out', default='datasets', help='where the sets go (default: datasets); each set (Rain13K, '
                                                     'GoPro, ...) is a new folder there: an existing one is refused')
    p.add_argument('--sigma', type=float, default=25, help='denoise: noise level of the validation set (default 25)')
    p.add_argument('--seed', type=int, default=0, help='denoise: seed of the first image\'s noise (default 0)')
    args = p.parse_args(argv)
    from tripled_basicsr.utils.cli import run_command

    def body():
        counts = prepare(args.task, args.src, args.out, args.sigma, args.seed)
        for folder, n in sorted(counts.items()):
            print(f'{os.path.join(args.out, folder)}: {n} images')
        return 0
    return run_command('slkd_data', body, False, (DataError, ValueError, OSError))


if __name__ == '__main__':
    sys.exit(main())
