"""The one image-folder writer of the package (demo data, test and benchmark data): pairs in
the folder layout :class:`~tripled_basicsr.data.paired_source.PairedSource` reads. A writer, so
it lives apart from the reader."""
import os

import cv2

from tripled_basicsr.data.distilled_format import encode_png


def write_pair_folders(root, pairs, ext='.png', compress_level=1, params=None, lq_tmpl='{}'):
    """Write ``(name, gt, lq)`` pairs in the folder layout a PairedSource (and BasicSR's
    ``PairedImageDataset``) reads: ``root/gt/NAME.EXT`` and ``root/lq/LQ_TMPL(NAME).EXT``.

    The one image-folder writer of the package (demo data, test and benchmark data). PNGs
    are encoded as in the distilled format (``compress_level``, BasicSR's default 1); other
    extensions with ``cv2.imencode(ext, img, params)``. Returns ``(gt_dir, lq_dir)``.
    """
    gt_dir, lq_dir = os.path.join(root, 'gt'), os.path.join(root, 'lq')
    os.makedirs(gt_dir, exist_ok=True)
    os.makedirs(lq_dir, exist_ok=True)
    for name, gt, lq in pairs:
        for img, path in ((gt, os.path.join(gt_dir, name + ext)),
                          (lq, os.path.join(lq_dir, lq_tmpl.format(name) + ext))):
            if ext.lower() == '.png' and params is None:
                data = encode_png(img, compress_level)
            else:
                ok, buf = cv2.imencode(ext, img, list(params or []))
                if not ok:
                    raise RuntimeError(f'{path}: encoding as {ext} failed')
                data = buf.tobytes()
            with open(path, 'wb') as f:
                f.write(data)
    return gt_dir, lq_dir
