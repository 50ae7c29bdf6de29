"""Crop-level selection units (``source.crop_size`` / ``source.crop_step``; docs/distill.md).

At 1-2 % a whole-image subset is a handful of scenes; the same pixel budget spread over many
crops from many images covers the source far better (restoration trains on patches anyway).
``CropSource`` wraps a ``PairedSource`` so that every stage of the distiller sees crops as
its units: unit i is the GT box (top, left, crop, crop) of image ``image_index[i]`` and the
LQ box (top/scale, left/scale, crop/scale, crop/scale), aligned by the scale. Features are
computed on the crop itself. The crop list is three int arrays (O(units) memory, no pixels);
an image is decoded once for all its consecutive crops (a one-image cache per process).
"""
import math
import os

import cv2
import numpy as np

from tripled_basicsr.data.paired_source import check_pair_shapes
from tripled_basicsr.utils.log import warn


def crop_grid(h, w, crop, step):
    """Top-left corners (tops, lefts) of the crop x crop boxes of an h x w image, every ``step``
    pixels; the last row/column is shifted to the border so the whole image is covered.
    An image smaller than the crop has no box."""
    if h < crop or w < crop:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)

    def starts(n):
        s = list(range(0, n - crop + 1, step))
        if s[-1] != n - crop:
            s.append(n - crop)
        return s

    ys, xs = np.meshgrid(starts(h), starts(w), indexing='ij')
    return ys.ravel().astype(np.int64), xs.ravel().astype(np.int64)


def image_shapes(source, strict=True):
    """(h, w) of every GT image from the headers, without decoding (LMDB: meta_info.txt), after
    every pair was checked from its headers (``PairedSource.header_check``): both images
    readable regular files, within ``source.max_pixels``, LQ exactly GT / scale. This runs
    before any crop unit is enumerated, so a header claiming 100000 x 100000 costs nothing.
    ``strict``: the first pair that cannot be used raises SourceError naming its file(s);
    ``strict=False``: None for such a pair (``source.header_check()[1]`` says why)."""
    from tripled_basicsr.data.paired_source import SourceError
    shapes, problems = source.header_check()
    if strict and problems:
        first = min(problems)
        raise SourceError(problems[first])
    return list(shapes)


AUTO_CROP_RANGE = (48, 480)  # BasicSR cuts DIV2K into 480-px sub-images (extract_subimages.py)


def auto_crop_size(shapes, scale=1):
    """``source.crop_size: auto``: a third of the median short side of the GT images, clipped to
    [48, 480] and rounded down to a multiple of 4 * scale (at least 4 * scale), so an image
    gives about nine crops and a 2K image BasicSR's usual 480-px sub-images.
    None when the images are too small for crop units (median short side below 96 px)."""
    if not shapes:
        return None
    short = float(np.median([min(h, w) for h, w in shapes]))
    if short < 2 * AUTO_CROP_RANGE[0]:
        return None
    lo, hi = AUTO_CROP_RANGE
    c = int(min(hi, max(lo, short // 3)))
    m = 4 * int(scale)
    return max(m, c // m * m)


class CropSource:
    """A PairedSource seen as crops. Same reading interface as PairedSource (keys, kind, scale,
    dataroot_gt/lq, refs, read_bytes, read, read_pair, source_path, describe) plus
    ``box(i)`` / ``provenance(i)`` and ``total_pixels`` (GT pixels of the whole images)."""

    def __init__(self, source, crop_size, crop_step=None, shapes=None, skip_unreadable=False):
        crop, step = int(crop_size), int(crop_step or crop_size)
        if crop % source.scale:
            raise ValueError(f'source.crop_size {crop} must be a multiple of source.scale {source.scale}.')
        if step % source.scale:
            raise ValueError(f'source.crop_step {step} must be a multiple of source.scale {source.scale}.')
        self.base, self.crop, self.step = source, crop, step
        self.kind, self.scale = source.kind, source.scale
        self.dataroot_gt, self.dataroot_lq = source.dataroot_gt, source.dataroot_lq
        self.skipped = list(source.skipped)
        if shapes is None:
            shapes = image_shapes(source, strict=not skip_unreadable)
        if skip_unreadable:  # on_error: skip - a pair that cannot be used gives no crop at all
            problems = source.header_check()[1] if hasattr(source, 'header_check') else {}
            left_out = [{'key': source.keys[i], 'gt_path': source.source_path(i, 'gt'),
                         'lq_path': source.source_path(i, 'lq'), 'reason': problems.get(i, 'unreadable GT image')}
                        for i, hw in enumerate(shapes) if hw is None]
            self.skipped += left_out
            if left_out and int(os.environ.get('RANK', 0)) == 0:
                warn(f'{len(left_out)} source pair(s) left out before the feature stage (on_error: skip), '
                     f'none of their crops is used; first: {left_out[0]["reason"]}')
        shapes = [hw or (0, 0) for hw in shapes]
        self.total_pixels = int(sum(h * w for h, w in shapes))
        img, tops, lefts = [], [], []
        for i, (h, w) in enumerate(shapes):
            t, left = crop_grid(h, w, crop, step)
            img.append(np.full(len(t), i, np.int64))
            tops.append(t)
            lefts.append(left)
        self.image_index = np.concatenate(img) if img else np.zeros(0, np.int64)
        self.top, self.left = np.concatenate(tops), np.concatenate(lefts)
        if len(self.image_index) == 0:
            raise ValueError(f'source.crop_size {crop} is larger than every source image; lower it.')
        self.small_images = [source.keys[i] for i, (h, w) in enumerate(shapes) if 0 < h < crop or 0 < w < crop]
        self.keys = [f'{source.keys[i]}_y{t}_x{x}' for i, t, x in zip(self.image_index, self.top, self.left)]
        self.refs = [source.refs[i] for i in self.image_index]
        self._cache = {}

    def __len__(self):
        return len(self.keys)

    def box(self, index, which='gt'):
        """(top, left, height, width) of unit ``index`` in GT pixels, or in LQ pixels for 'lq'."""
        t, x, c = int(self.top[index]), int(self.left[index]), self.crop
        if which == 'lq':
            s = self.scale
            return t // s, x // s, c // s, c // s
        return t, x, c, c

    def provenance(self, index):
        i = int(self.image_index[index])
        return {'image_key': self.base.keys[i], 'image_index': i, 'box': list(self.box(index))}

    def source_path(self, index, which='gt'):
        return self.base.source_path(int(self.image_index[index]), which)

    def _cached(self, index, key, make):
        """One-image cache per (kind of read): consecutive crops of an image share one read."""
        i = int(self.image_index[index])
        hit = self._cache.get(key)
        if hit is None or hit[0] != i:
            hit = (i, make(i))
            self._cache[key] = hit
        return hit[1]

    def _image(self, index, which):
        return self._cached(index, which, lambda i: self.base.read(i, which))

    def image_bytes(self, index, which='gt'):
        """The encoded bytes of the whole image unit ``index`` is cut from (cached)."""
        return self._cached(index, ('bytes', which), lambda i: self.base.read_bytes(i, which))

    def check_box(self, index, which):
        """Decodes the image (once for all its crops) and raises ValueError naming the file
        when it cannot be read or is too small for unit ``index``'s box."""
        self._check_box(index, which, self._image(index, which).shape[:2], self.box(index, which))

    def _check_box(self, index, which, hw, box):
        t, x, h, w = box
        if hw[0] < t + h or hw[1] < x + w:
            raise ValueError(f'{self.source_path(index, which)}: {which.upper()} is {hw[1]}x{hw[0]}, '
                             f'too small for the crop box {(t, x, h, w)} (LQ must be GT / scale).')

    def read_reduced(self, index, which, target_short):
        """Crop ``index`` for the feature stage, short side ~= ``target_short`` (never upscaled).

        The whole image is decoded once for all its crops at the largest JPEG DCT reduction
        (1/2, 1/4, 1/8) that keeps the crop's short side >= ``target_short`` (other formats:
        full decode), the crop's full-resolution box is mapped into that decode, and the slice
        is shrunk with INTER_AREA. For a non-JPEG image the result is exactly the full-resolution
        crop shrunk the same way (what decoding ``read_bytes`` at reduced size gives), without
        encoding and decoding every crop; for a 4K JPEG it skips most of the decode work."""
        from tripled_basicsr.data.paired_source import decode_image
        from tripled_basicsr.distill.features import image_size, is_jpeg, jpeg_reduction, shrink_to_short
        box = self.box(index, which)
        t, x, h, w = box
        buf = self.image_bytes(index, which)
        factor, full_hw = 1, image_size(buf) if is_jpeg(buf) else None
        if full_hw is not None:
            factor, flag = jpeg_reduction(min(h, w), target_short)
        if factor == 1:
            img = self._image(index, which)
            self._check_box(index, which, img.shape[:2], box)
            crop = img[t:t + h, x:x + w]
        else:
            img = self._cached(index, ('reduced', which, factor),
                               lambda i: decode_image(buf, self.source_path(index, which), flag))
            self._check_box(index, which, full_hw, box)
            fy, fx = full_hw[0] / img.shape[0], full_hw[1] / img.shape[1]  # the decoder rounds sizes up
            y0, x0 = int(round(t / fy)), int(round(x / fx))
            y1, x1 = max(y0 + 1, int(round((t + h) / fy))), max(x0 + 1, int(round((x + w) / fx)))
            crop = img[y0:y1, x0:x1]
        return np.ascontiguousarray(shrink_to_short(crop, target_short))

    def read(self, index, which='gt', flags=None):
        box = self.box(index, which)
        t, x, h, w = box
        img = self._image(index, which)
        self._check_box(index, which, img.shape[:2], box)
        return np.ascontiguousarray(img[t:t + h, x:x + w])

    def read_bytes(self, index, which='gt'):
        """The crop as lossless PNG bytes (level 0: the feature stage decodes what it is given)."""
        ok, buf = cv2.imencode('.png', self.read(index, which), [cv2.IMWRITE_PNG_COMPRESSION, 0])
        if not ok:
            raise ValueError(f'{self.keys[index]}: cannot encode the crop.')
        return buf.tobytes()

    def read_pair(self, index):
        gt, lq = self.read(index, 'gt'), self.read(index, 'lq')
        check_pair_shapes(gt, lq, self.scale, self.keys[index], self.source_path(index, 'gt'))
        return gt, lq

    def describe(self):
        d = self.base.describe()
        d.update({'units': 'crops', 'crop_size': self.crop, 'crop_step': self.step, 'num_units': len(self),
                  'total_pixels': self.total_pixels, 'images_smaller_than_crop': len(self.small_images)})
        return d


def pixel_budget(sel, total_pixels, crop, n_units):
    """Units to pick for ``selection.ratio`` as a share of the source's GT pixels (crop units),
    or ``selection.num`` units. Raises OptionError naming the key."""
    from tripled_basicsr.options import OptionError
    if sel.get('num') is not None:
        n = int(sel['num'])
        if not 1 <= n <= n_units:
            raise OptionError(f'selection.num = {n} must be between 1 and the number of crops ({n_units}).')
        return n
    from tripled_basicsr.options import at_least
    ratio = float(sel['ratio'])
    units = ratio * total_pixels / float(crop * crop)
    if units < 1 - 1e-9:  # as for whole images: a ratio whose budget is under one unit selects nothing
        need = crop * crop / total_pixels if total_pixels else math.inf
        fix = (f'raise it to at least {at_least(need)}, lower source.crop_size or set selection.num' if need <= 1
               else 'lower source.crop_size or set selection.num')
        raise OptionError(f'selection.ratio {ratio:g} of the {total_pixels} source pixels is {units:.3g} '
                          f'{crop}x{crop} crop(s) < 1 crop: the subset would be empty. {fix[0].upper()}{fix[1:]}.')
    from tripled_basicsr.distill.options import units_for
    return min(units_for(ratio, total_pixels, crop * crop), n_units)
