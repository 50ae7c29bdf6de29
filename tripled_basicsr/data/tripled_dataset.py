"""TripleDDataset: BasicSR paired dataset over a distilled (or packed) directory."""
import os
import random

import cv2
import numpy as np
import torch
from basicsr.data.transforms import augment
from basicsr.utils import img2tensor
from basicsr.utils.color_util import bgr2ycbcr
from basicsr.utils.registry import DATASET_REGISTRY
from torch.utils import data as data

from tripled_basicsr.data.distilled_format import decode_raw, read_meta, tile_key
from tripled_basicsr.utils.lmdb_io import LmdbReader, check_lmdb, close_lmdb


@DATASET_REGISTRY.register()
class TripleDDataset(data.Dataset):
    """Paired LQ/GT dataset reading a distilled directory (see ``distilled_format``).

    Options mirror BasicSR's ``PairedImageDataset``:
        dataroot (str): the distilled dir (holds gt.lmdb, lq.lmdb, tripled_meta.json).
        io_backend (dict): ``{type: lmdb}`` (the only backend; extra keys go to ``lmdb.open``).
        gt_size (int): GT crop size for training (must be a multiple of ``scale``).
        use_hflip (bool), use_rot (bool): augmentation, as BasicSR's ``augment``.
        scale (int): set by BasicSR from the top-level ``scale``; must equal the stored scale.
        phase (str): 'train' -> random crops; otherwise whole images (stitched from tiles).
        color (str | None): 'y' to return the Y channel only, as PairedImageDataset.
        mean, std (list | None): optional normalisation.

    Each item: ``lq`` (3|1, h, w) and ``gt`` (3|1, H, W) float32 RGB tensors in [0, 1],
    ``lq_path``/``gt_path`` (the sample key), ``key``, ``index`` (int), and per-sample
    metadata ``complexity``/``uncertainty`` (float, NaN when unknown), ``stage`` (int,
    0 when unknown), ``cluster`` (int, -1 when unknown) and ``task`` (str, '' when unknown;
    BasicSR's default collate turns it into a list of str per batch).

    Multi-task sets (``python -m tripled_basicsr.distill`` with ``sources:``) label every
    sample with its task: ``task`` (array of str, '' unknown), ``task_names`` (sorted unique
    labels, [] for a single-task or packed set) and ``task_quota`` ({task: share} recorded by
    the distiller in ``summary.tasks[*].quota``, or None). The curriculum sampler's
    ``task_balance`` reads them.

    Random crops decode only the tiles they overlap (``tiles_decoded`` counts decodes in
    this process, for tests and benchmarks). LMDBs are opened lazily, once in each worker process
    (``utils/lmdb_io.LmdbReader``: one shared handle per file per process, the path resolved and
    the file checked at that open, not at every read); both are also checked when the dataset is
    built, so a truncated ``data.mdb`` fails here with its name, not with a Bus error in a worker.

    Reads are zero-copy where that is safe: a value is read through a buffer into the LMDB map
    (valid only while its read transaction lives), and only the crop is copied out of it (raw
    codec: the LQ and GT crops are slices of the stored arrays; PNG: the decoder reads the map
    directly). The patch is cut before augmentation and conversion to float (a rotated uint8 patch
    is made contiguous first), and the random numbers are drawn as BasicSR's ``paired_random_crop``
    and ``augment`` draw them (``random``: LQ top, LQ left, then the flips and rotation), so a seed
    gives the tensors of those functions.
    """

    def __init__(self, opt):
        super().__init__()
        self.opt = opt
        if 'dataroot' not in opt:
            hint = ' (dataroot_gt/dataroot_lq are for PairedImageDataset)' if 'dataroot_gt' in opt else ''
            raise KeyError(f'TripleDDataset needs option "dataroot": a distilled dir{hint}.')
        self.root = os.path.expanduser(opt['dataroot'])
        self.meta = read_meta(self.root)
        self.samples = self.meta['samples']
        if not self.samples:
            raise ValueError(f'{self.root}: tripled_meta.json lists no samples.')
        self.stored_scale = int(self.meta['scale'])
        self.scale = int(opt.get('scale', self.stored_scale))
        if self.scale != self.stored_scale:
            raise ValueError(f'{self.root} was written with scale {self.stored_scale} but the options say scale '
                             f'{self.scale}; set `scale: {self.stored_scale}` in the YAML.')
        self.tile_size = int(self.meta['tile_size'])
        self.codec = self.meta.get('codec', 'png')  # raw: uncompressed values (output.codec: raw)
        io_opt = dict(opt.get('io_backend') or {'type': 'lmdb'})
        backend = io_opt.pop('type', 'lmdb')
        if backend != 'lmdb':
            raise ValueError(f'TripleDDataset reads LMDB only; io_backend.type is {backend!r}. Use `type: lmdb`.')
        self.lmdb_kwargs = io_opt
        for which in ('gt', 'lq'):  # a truncated data.mdb would kill the first worker that reads it (SIGBUS)
            check_lmdb(os.path.join(self.root, f'{which}.lmdb'), **io_opt)
        # per-process handles, opened at the first read of each process (never pickled to workers)
        self._readers = {w: LmdbReader(os.path.join(self.root, f'{w}.lmdb'), **io_opt) for w in ('gt', 'lq')}
        self.phase = opt.get('phase', 'train')
        self.gt_size = opt.get('gt_size')
        if self.phase == 'train':
            if not self.gt_size:
                raise KeyError('TripleDDataset: option "gt_size" is required in the train phase.')
            if self.gt_size % self.scale:
                raise ValueError(f'gt_size {self.gt_size} must be a multiple of scale {self.scale}.')
            self._check_patch_fits()
        self.keys = [s['key'] for s in self.samples]
        # (h, w, c) per sample, looked up twice per training read (None: not recorded, image_shape says so)
        self._shapes = {w: [tuple(s[f'{w}_shape']) if s.get(f'{w}_shape') else None for s in self.samples]
                        for w in ('gt', 'lq')}
        self.complexity = self._field('complexity', float, np.nan)
        self.uncertainty = self._field('uncertainty', float, np.nan)
        self.stage = self._field('stage', int, 0).astype(np.int64)
        self.cluster = self._field('cluster', int, -1).astype(np.int64)
        # calibration.mode: weights -> per-sample weights (mean 1) used by the curriculum sampler; 1 when absent
        self.weight = self._field('weight', float, 1.0)
        # multi-task sets: one task label per sample ('' = unknown; single-source sets have none)
        self.task = np.array([str(s.get('task') or '') for s in self.samples], dtype=object)
        self.task_names = sorted({t for t in self.task if t})
        self.task_quota = self._recorded_quota()
        self.mean, self.std = opt.get('mean'), opt.get('std')
        self.tiles_decoded = 0

    def _check_patch_fits(self):
        """Every stored GT image must hold a gt_size patch: say so before training, naming the
        smallest sample and, for crop units, the distiller option that sets their size."""
        sides = [min(s['gt_shape'][:2]) for s in self.samples if s.get('gt_shape')]
        if not sides or min(sides) >= int(self.gt_size):
            return
        i = int(np.argmin(sides))
        crops = 'box' in self.samples[i]
        hint = (f'the distilled units are {sides[i]}-px crops: lower gt_size to <= {sides[i]}, or distil again with '
                f'source.crop_size >= {self.gt_size} (gt_size + 25 % leaves the patch room to move)') if crops else \
            f'lower gt_size to <= {sides[i]} or leave the small images out'
        raise ValueError(f'{self.root}: {sum(x < int(self.gt_size) for x in sides)} of {len(sides)} samples are '
                         f'smaller than gt_size {self.gt_size} (e.g. {self.samples[i]["key"]!r}, GT '
                         f'{sides[i]} px on its short side); {hint}.')

    def _field(self, name, cast, default):
        return np.array([cast(s[name]) if s.get(name) is not None else default for s in self.samples],
                        dtype=np.float64)

    def _recorded_quota(self):
        """{task: share} from ``summary.tasks[*].quota`` (None when the distiller recorded none)."""
        tasks = (self.meta.get('summary') or {}).get('tasks')
        if not isinstance(tasks, dict) or not tasks:
            return None
        quota = {}
        for name, rec in tasks.items():
            q = rec.get('quota') if isinstance(rec, dict) else None
            if q is None:
                return None
            quota[str(name)] = float(q)
        return quota

    def has_metadata(self, *names):
        """True when every sample carries all the named fields (e.g. 'complexity', 'stage')."""
        arrays = {'complexity': ~np.isnan(self.complexity), 'uncertainty': ~np.isnan(self.uncertainty),
                  'stage': self.stage > 0, 'cluster': self.cluster >= 0}
        return all(bool(arrays[n].all()) for n in names)

    def __len__(self):
        return len(self.samples)

    # ------------------------------------------------------------------ reading
    def _env(self, which):
        """This process's environment of ``which`` (opened and checked at the first call of a process)."""
        return self._readers[which].env()

    def _txn(self, which):
        """A read transaction whose ``get`` returns buffers into the map (valid until it ends)."""
        return self._env(which).begin(write=False, buffers=True)

    def close(self):
        """Release this process's LMDB handles of this dir (e.g. before another reader opens it)."""
        for which in ('gt', 'lq'):
            close_lmdb(os.path.join(self.root, f'{which}.lmdb'))
            self._readers[which].forget()

    def _image(self, txn, which, key):
        """The stored image ``key`` read in ``txn``. Raw codec: a read-only view of the map, valid only
        while ``txn`` lives (copy what you keep); PNG: a decoded array of its own."""
        buf = txn.get(key.encode('ascii'))
        if buf is None:
            raise KeyError(f'{self.root}/{which}.lmdb: entry {key!r} is missing; the distilled dir is damaged, '
                           f're-create it.')
        if self.codec == 'raw':  # uncompressed array: no decode (a crop is a slice of it)
            img = decode_raw(buf)
        else:
            img = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f'{self.root}/{which}.lmdb: entry {key!r} cannot be decoded; re-create the dir.')
        self.tiles_decoded += 1
        return img

    def image_shape(self, index, which='gt'):
        return self._shapes[which][index] or tuple(self.samples[index][f'{which}_shape'])

    def read_region(self, index, which, top, left, height, width):
        """Decode the region [top:top+height, left:left+width] of one stored image.

        Coordinates are in the image's own pixels (LQ pixels for ``which='lq'``). Only the
        tiles that overlap the region are decoded. Returns HxWx3 uint8 BGR.
        """
        h, w = self.image_shape(index, which)[:2]
        if top < 0 or left < 0 or top + height > h or left + width > w:
            raise ValueError(f'Region ({top},{left},{height},{width}) outside {which} image {self.keys[index]} '
                             f'of size {w}x{h}.')
        key = self.keys[index]
        with self._txn(which) as txn:
            if not self.tile_size:
                region = self._image(txn, which, key)[top:top + height, left:left + width]
                # raw: copy the crop only, while the map is valid (writable for augment); PNG: a decoded array
                return region.copy() if self.codec == 'raw' else region
            t = self.tile_size if which == 'gt' else self.tile_size // self.scale
            out = np.empty((height, width, 3), np.uint8)
            for r in range(top // t, (top + height - 1) // t + 1):
                for c in range(left // t, (left + width - 1) // t + 1):
                    tile = self._image(txn, which, tile_key(key, r, c))
                    y0, x0 = max(top, r * t), max(left, c * t)
                    y1, x1 = min(top + height, r * t + tile.shape[0]), min(left + width, c * t + tile.shape[1])
                    out[y0 - top:y1 - top, x0 - left:x1 - left] = tile[y0 - r * t:y1 - r * t,
                                                                       x0 - c * t:x1 - c * t]
        return out

    def read_image(self, index, which='gt'):
        """Whole image (stitched from tiles when tiled) as HxWx3 uint8 BGR."""
        h, w = self.image_shape(index, which)[:2]
        if not self.tile_size:
            with self._txn(which) as txn:
                img = self._image(txn, which, self.keys[index])
                return img.copy() if self.codec == 'raw' else img
        return self.read_region(index, which, 0, 0, h, w)

    # ------------------------------------------------------------------ items
    def __getitem__(self, index):
        index = int(index)
        key = self.keys[index]
        scale = self.scale
        if self.phase == 'train':
            gt_size = int(self.gt_size)
            lq_size = gt_size // scale
            h_lq, w_lq = self.image_shape(index, 'lq')[:2]
            if h_lq < lq_size or w_lq < lq_size:
                raise ValueError(f'Sample {key!r} in {self.root}: LQ is {w_lq}x{h_lq}, smaller than the LQ patch '
                                 f'{lq_size}x{lq_size} (gt_size {gt_size} / scale {scale}). Lower gt_size or '
                                 f'drop small images.')
            top, left = random.randint(0, h_lq - lq_size), random.randint(0, w_lq - lq_size)
            img_lq = self.read_region(index, 'lq', top, left, lq_size, lq_size)
            img_gt = self.read_region(index, 'gt', top * scale, left * scale, gt_size, gt_size)
            (img_gt, img_lq), (_, _, rot90) = augment([img_gt, img_lq], self.opt.get('use_hflip', False),
                                                      self.opt.get('use_rot', False), return_status=True)
            if rot90 and self.opt.get('color') != 'y':
                # BasicSR rotates by a transposed view; converting that view to float reads it strided (3x the
                # cost of the whole conversion at 256 px): transpose the uint8 patch itself (same pixels)
                img_gt, img_lq = cv2.transpose(img_gt.transpose(1, 0, 2)), cv2.transpose(img_lq.transpose(1, 0, 2))
        else:
            img_gt, img_lq = self.read_image(index, 'gt'), self.read_image(index, 'lq')
        img_gt = img_gt.astype(np.float32) / 255.
        img_lq = img_lq.astype(np.float32) / 255.
        if self.opt.get('color') == 'y':
            img_gt = bgr2ycbcr(img_gt, y_only=True)[..., None]
            img_lq = bgr2ycbcr(img_lq, y_only=True)[..., None]
        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            from torchvision.transforms.functional import normalize
            normalize(img_lq, self.mean, self.std, inplace=True)
            normalize(img_gt, self.mean, self.std, inplace=True)
        return {
            'lq': img_lq, 'gt': img_gt, 'lq_path': key, 'gt_path': key, 'key': key, 'index': index,
            'complexity': torch.scalar_tensor(float(self.complexity[index]), dtype=torch.float32),
            'uncertainty': torch.scalar_tensor(float(self.uncertainty[index]), dtype=torch.float32),
            'stage': int(self.stage[index]), 'cluster': int(self.cluster[index]), 'task': self.task[index]
        }
