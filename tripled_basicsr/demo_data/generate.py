"""In-memory pairs: GT from :mod:`.sources`, LQ by the :mod:`.degradations` chain."""
from tripled_basicsr.demo_data.degradations import apply_chain
from tripled_basicsr.demo_data.options import resolve
from tripled_basicsr.demo_data.sources import generate_gt, require_photos


def name_width(num):
    """Zero-padded name width: at least 4 digits, enough for ``num - 1``."""
    return max(4, len(str(num - 1)))


def iter_pairs(req):
    """Yield ``(name, gt, lq, origin)`` for a checked :class:`~.options.Request`."""
    w, h = req.size
    width = name_width(req.num)
    for i in range(req.num):
        gt, kind = generate_gt(i, (w, h), seed=req.seed, source=req.source)
        yield f'{i:0{width}d}', gt, apply_chain(gt, req.tasks, req.params, req.scale, req.seed, i), kind


def generate_pairs(task, num, size, seed=0, scale=None, source='mixed', **task_kwargs):
    """Lazily yield ``num`` pairs ``(name, gt_bgr_uint8, lq_bgr_uint8)``.

    Args:
        task: a task name (see ``tasks()``) or a comma-separated chain / list (applied in order).
        num: number of pairs (>= 1).
        size: ``256`` (square), ``'WxH'`` or ``(W, H)`` -- the GT size.
        seed: non-negative integer; image ``i`` depends only on ``(seed, i)``.
        scale: SR factor (task ``sr`` only; default 4). LQ is ``(H/scale, W/scale)``.
        source: ``'photos'``, ``'procedural'`` or ``'mixed'``.
        **task_kwargs: per-task parameters (``task_defaults()``); a number or a ``(lo, hi)``
            range sampled per image.

    Arguments are validated eagerly (before the first image is produced).
    """
    req = resolve(task, num, size, seed, scale, source, task_kwargs)
    require_photos(source)
    return ((name, gt, lq) for name, gt, lq, _ in iter_pairs(req))


def degrade(gt, tasks, params=None, rng=None, scale=None, seed=0, index=0):
    """Apply the degradation chain ``tasks`` (name, list or 'a,b') to a uint8 BGR ``gt``.

    ``params`` maps parameter names to numbers / ``(lo, hi)`` ranges (missing ones take the
    defaults). Randomness comes from ``rng`` if given, else from ``(seed, index, task)``.
    Returns the uint8 BGR low-quality image.
    """
    h, w = gt.shape[:2]
    req = resolve(tasks, 1, (w, h), seed, scale, 'mixed', dict(params or {}))
    return apply_chain(gt, req.tasks, req.params, req.scale, seed, index, rng)
