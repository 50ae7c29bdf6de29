"""A feature model trained without labels on the source itself (offline selection features).

    python -m tripled_basicsr.distill.selfsup --gt datasets/X/gt --out weights/x_selfsup.pth
        [--arch test_convnext] [--input-size 64] [--crop auto] [--iters 600] [--batch 64] [--seed 0]

then distil with ``features: {backbone: test_convnext, checkpoint: weights/x_selfsup.pth,
input_size: 64}``. Without downloadable weights a random-init network's features are a poor
guide; this trains a small timm CNN (default ``test_convnext``: 0.2 M parameters, about 0.4 s
per step of batch 64 on one CPU core) on the GT images it will select from, with SimCLR's contrastive
objective (NT-Xent): two views of the same region (a random sub-box of 70-100 % of its side,
a random flip / 90-degree rotation, resized to ``input_size``) must be nearer to each other than
to the views of the other regions in the batch. Regions have the crop units' size
(``--crop auto``: the distiller's ``source.crop_size: auto`` rule). Geometry is what the views
vary, so the features keep content, texture and intensity and drop position and orientation.

The checkpoint holds the backbone's state_dict (no projection head) and a ``tripled_selfsup``
record (arch, input size, crop, iterations, final loss, source); it loads through the
distiller's normal local-checkpoint path. Measured against the hand-crafted statistics in
docs/method.md ("Offline features").
"""
import argparse
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from tripled_basicsr.utils.log import note


@dataclass
class SelfsupOptions:
    """What the training does (the command's flags of the same names)."""
    arch: str = 'test_convnext'  # timm model name
    input_size: int = 64  # view side in px
    crop: object = 'auto'  # region side in GT px, or 'auto' (the distiller's crop_size: auto rule)
    iters: int = 600
    batch: int = 64  # regions per step (two views each)
    lr: float = 2e-3
    temperature: float = 0.2  # NT-Xent temperature
    images_per_step: int = 16  # GT images decoded per step
    seed: int = 0

    def check(self):
        for name, v, lo in (('--iters', self.iters, 1), ('--batch', self.batch, 2),
                            ('--input-size', self.input_size, 16), ('--images-per-step', self.images_per_step, 1)):
            if int(v) < lo:
                raise ValueError(f'{name} must be at least {lo}, got {v}.')
        if not float(self.temperature) > 0 or not float(self.lr) > 0:
            raise ValueError('--temperature and --lr must be positive.')


DEFAULTS = asdict(SelfsupOptions())


def nt_xent(z1, z2, temperature):
    """SimCLR's NT-Xent loss of B positive pairs (z1[i], z2[i]); the other 2B - 2 views of the
    batch are the negatives. z1, z2: (B, D), any scale (L2-normalised here)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    n = z1.shape[0]
    sim.fill_diagonal_(float('-inf'))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def random_view(region, size, rng):
    """A view of ``region`` (HxWx3 uint8): a random square sub-box of 70-100 % of the short
    side, a random flip / rot90, resized to size x size (INTER_AREA when shrinking)."""
    h, w = region.shape[:2]
    side = max(1, int(round(min(h, w) * rng.uniform(0.7, 1.0))))
    t, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    v = region[t:t + side, x:x + side]
    v = np.rot90(v, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        v = v[:, ::-1]
    interp = cv2.INTER_AREA if side >= size else cv2.INTER_CUBIC
    return cv2.resize(np.ascontiguousarray(v), (size, size), interpolation=interp)


def to_input(views, mean, std):
    """(B, S, S, 3) uint8 BGR -> normalised (B, 3, S, S) float RGB, as the feature stage feeds it."""
    x = torch.from_numpy(np.stack(views)[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
    return (x - mean) / std


class RegionSampler:
    """Random crop-sized regions of the GT images, ``images_per_step`` images decoded per step."""

    def __init__(self, source, shapes, crop, rng):
        self.source, self.crop, self.rng = source, int(crop), rng
        self.usable = [i for i, (h, w) in enumerate(shapes) if min(h, w) >= self.crop]
        if not self.usable:
            raise ValueError(f'--crop {self.crop} is larger than every GT image in {source.dataroot_gt}; lower it.')

    def regions(self, n, images_per_step):
        picks = self.rng.choice(self.usable, size=min(len(self.usable), images_per_step), replace=False)
        imgs = [self.source.read(int(i), 'gt') for i in picks]
        out = []
        for k in range(n):
            img = imgs[k % len(imgs)]
            h, w = img.shape[:2]
            t, x = int(self.rng.integers(0, h - self.crop + 1)), int(self.rng.integers(0, w - self.crop + 1))
            out.append(img[t:t + self.crop, x:x + self.crop])
        return out


def resolve_crop(shapes, crop):
    """``--crop`` in GT pixels from the GT image ``shapes`` ((h, w) each) for 'auto'."""
    if crop not in ('auto', None, 0, '0'):
        c = int(crop)
        if c < 8:
            raise ValueError(f'--crop must be auto or at least 8 px, got {crop}.')
        return c
    from tripled_basicsr.distill.crops import auto_crop_size
    c = auto_crop_size(shapes)
    if c is None:  # small images: whole images are the units; their short side is the region
        c = int(min(min(hw) for hw in shapes))
    return c


def is_selfsup_checkpoint(path):
    """True when ``path`` is a checkpoint this command wrote (it carries a ``tripled_selfsup``
    record); read with ``weights_only``, so a hostile file cannot run code."""
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # noqa: BLE001  (not a torch file, truncated, unsafe pickle: not ours)
        return False
    return isinstance(ckpt, dict) and isinstance(ckpt.get('tripled_selfsup'), dict)


def _contrastive_loop(model, head, sampler, o):
    """``o.iters`` NT-Xent steps of ``model`` + projection ``head`` on two views of each sampled
    region. -> (EMA of the loss, seconds)."""
    from tripled_basicsr.distill.backbone import normalization
    mean, std = normalization(model)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=float(o.lr), weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / int(o.iters))))
    model.train()
    head.train()
    t0, ema, rng = time.time(), None, sampler.rng
    for it in range(1, int(o.iters) + 1):
        regions = sampler.regions(int(o.batch), int(o.images_per_step))
        v1 = to_input([random_view(r, int(o.input_size), rng) for r in regions], mean, std)
        v2 = to_input([random_view(r, int(o.input_size), rng) for r in regions], mean, std)
        loss = nt_xent(head(model(v1)), head(model(v2)), float(o.temperature))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if it % max(1, int(o.iters) // 10) == 0 or it == int(o.iters):
            note(f'  iter {it}/{o.iters}  loss {ema:.3f}  ({time.time() - t0:.0f} s)')
    return ema, time.time() - t0


def train_selfsup(gt, out, opts=None, overwrite=False):
    """Train ``opts.arch`` (a SelfsupOptions; default: its defaults) on the GT images under ``gt``
    (folder or BasicSR LMDB) and write its state_dict to ``out`` (atomically). Returns the
    ``tripled_selfsup`` record."""
    import timm

    from tripled_basicsr.data.paired_source import PairedSource
    from tripled_basicsr.distill.backbone import check_model_name
    from tripled_basicsr.distill.crops import image_shapes
    from tripled_basicsr.utils.ownership import check_file_output
    o = opts or SelfsupOptions()
    out = check_file_output(out, {'--gt': gt}, '--out', overwrite, is_selfsup_checkpoint, 'self-supervised checkpoint',
                            example=f'{o.arch}.pth')
    o.check()
    check_model_name(o.arch)
    source = PairedSource(gt, gt)  # GT only: paired with itself, so folders and LMDBs read alike
    shapes = image_shapes(source)  # headers only, read once
    crop = resolve_crop(shapes, o.crop)
    rng = np.random.default_rng(int(o.seed))
    torch.manual_seed(int(o.seed))
    sampler = RegionSampler(source, shapes, crop, rng)
    model = timm.create_model(o.arch, pretrained=False, num_classes=0)
    d = model.num_features
    head = torch.nn.Sequential(torch.nn.Linear(d, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))
    note(f'selfsup: {o.arch} on {len(sampler.usable)} GT images of {gt}, {crop}-px regions, {o.input_size}-px views, '
        f'{o.iters} iterations of batch {o.batch}')
    ema, seconds = _contrastive_loop(model, head, sampler, o)
    record = {'arch': o.arch, 'input_size': int(o.input_size), 'crop': int(crop), 'iters': int(o.iters),
              'batch': int(o.batch), 'seed': int(o.seed), 'final_loss': float(ema),
              'chance_loss': math.log(2 * o.batch - 1), 'source': source.dataroot_gt, 'seconds': round(seconds, 1)}
    tmp = f'{out}.tmp{os.getpid()}'
    torch.save({'state_dict': model.eval().state_dict(), 'tripled_selfsup': record}, tmp)
    os.replace(tmp, out)
    note(f'selfsup: wrote {out} (loss {ema:.3f}, chance {record["chance_loss"]:.3f}); distil with features: '
        f'{{backbone: {o.arch}, checkpoint: {out}, input_size: {o.input_size}}}')
    return record


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m tripled_basicsr.distill.selfsup',
                                description='Train a feature model without labels on a source\'s GT images '
                                            '(for features.checkpoint; docs/distill.md).')
    p.add_argument('--gt', required=True, help='GT folder or BasicSR LMDB of the source to distil')
    p.add_argument('--out', required=True, help='checkpoint file to write (.pth)')
    p.add_argument('--arch', default=DEFAULTS['arch'], help='timm model name (default %(default)s)')
    p.add_argument('--input-size', type=int, default=DEFAULTS['input_size'])
    p.add_argument('--crop', default=DEFAULTS['crop'], help="region size in GT pixels, or 'auto' (default)")
    p.add_argument('--iters', type=int, default=DEFAULTS['iters'])
    p.add_argument('--batch', type=int, default=DEFAULTS['batch'])
    p.add_argument('--lr', type=float, default=DEFAULTS['lr'])
    p.add_argument('--temperature', type=float, default=DEFAULTS['temperature'])
    p.add_argument('--images-per-step', type=int, default=DEFAULTS['images_per_step'])
    p.add_argument('--seed', type=int, default=DEFAULTS['seed'])
    p.add_argument('--overwrite', action='store_true', help='replace an existing --out file')
    p.add_argument('--debug', action='store_true', help='full tracebacks')
    a = p.parse_args(argv)
    from tripled_basicsr.utils.cli import run_command

    def body():
        opts = SelfsupOptions(**{k: getattr(a, k) for k in DEFAULTS})
        train_selfsup(a.gt, a.out, opts, a.overwrite)

    return run_command('selfsup', body, a.debug, (ValueError, OSError))  # SourceError is a ValueError


if __name__ == '__main__':
    sys.exit(main())
