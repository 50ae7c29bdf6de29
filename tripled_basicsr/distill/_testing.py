"""Small synthetic paired data and tiny-backbone options for tests and benchmarks (no network)."""
import cv2
import numpy as np

TINY_MODEL_KWARGS = {'depth': 2, 'embed_dim': 64, 'num_heads': 2}


def synthetic_image(rng, size, kind):
    """HxWx3 uint8 BGR: kind 0 smooth gradient, 1 stripes, 2 blobs, 3 fine noise texture."""
    h = w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / size
    base = rng.uniform(0.2, 0.8, 3).astype(np.float32)
    if kind == 0:
        a = rng.uniform(-0.3, 0.3, 3).astype(np.float32)
        img = base + a * (xx[..., None] + yy[..., None]) / 2
    elif kind == 1:
        f = rng.uniform(3, 8)
        ang = rng.uniform(0, np.pi)
        s = np.sin(2 * np.pi * f * (np.cos(ang) * xx + np.sin(ang) * yy))[..., None]
        img = base + 0.3 * s * rng.uniform(0.5, 1, 3).astype(np.float32)
    elif kind == 2:
        img = np.tile(base, (h, w, 1))
        for _ in range(6):
            cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
            m = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)[..., None]
            img = np.where(m, rng.uniform(0, 1, 3).astype(np.float32), img)
    else:
        img = base + rng.normal(0, 0.25, (h, w, 3)).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_pairs(root, num=48, size=48, seed=0, sigma=10, scale=1, kinds=(0, 1, 2, 3), ext='.png'):
    """Write ``root/gt`` and ``root/lq`` (LQ = GT/scale + Gaussian noise). Returns (gt_dir, lq_dir)."""
    from tripled_basicsr.data.pair_folders import write_pair_folders
    rng = np.random.default_rng(seed)

    def pairs():
        for i in range(num):
            gt = synthetic_image(rng, size, kinds[i % len(kinds)])
            lq = gt if scale == 1 else cv2.resize(gt, (size // scale, size // scale), interpolation=cv2.INTER_AREA)
            lq = np.clip(lq.astype(np.float32) + rng.normal(0, sigma, lq.shape), 0, 255).astype(np.uint8)
            yield f'img{i:04d}', gt, lq

    return write_pair_folders(root, pairs(), ext=ext)


def tiny_options(gt, lq, out, **over):
    """Options for a fast CPU run with a 2-block, 64-dim ViT at 32 px (random init)."""
    opt = {
        'name': 'test',
        # whole images, PNG values and the stratified draw pinned (not the crops / raw / kcenter defaults): the tests built on this
        # check pair-level behaviour; tests of the defaults set their own options
        'source': {'dataroot_gt': gt, 'dataroot_lq': lq, 'crop_size': 0},
        'output': {'path': out, 'codec': 'png'},
        'features': {'backbone': 'vit_tiny_patch16_224', 'pretrained': False, 'model_kwargs': dict(TINY_MODEL_KWARGS),
                     'input_size': 32, 'batch_size': 8, 'num_workers': 0, 'device': 'cpu'},
        'selection': {'type': 'tripled', 'ratio': 0.25, 'seed': 0},
        'calibration': {'enabled': False, 'iters': 5, 'batch_size': 8},
        'report': {'plot': False, 'random_repeats': 2},
    }
    return with_overrides(opt, over)


def with_overrides(opt, over):
    """``opt`` with each section of ``over`` merged in (a mapping updates the section, anything else replaces it)."""
    for sec, vals in over.items():
        if isinstance(vals, dict) and isinstance(opt.get(sec), dict):
            opt[sec].update(vals)
        else:
            opt[sec] = vals
    return opt
