"""The distilled-LMDB format: a BasicSR-compatible pair of LMDBs plus per-sample metadata.

Layout of a distilled directory::

    DIR/gt.lmdb/{data.mdb, lock.mdb, meta_info.txt}
    DIR/lq.lmdb/{data.mdb, lock.mdb, meta_info.txt}
    DIR/tripled_meta.json

Values are PNG-encoded images, keys are ASCII without dots, and ``meta_info.txt`` lines
read ``key.png (h,w,c) compress_level`` exactly as BasicSR's ``create_lmdb.py`` writes them.

* ``tile_size == 0`` (whole): one entry per image under the sample key; stock
  ``PairedImageDataset`` with ``io_backend: {type: lmdb}`` reads the two LMDBs directly.
* ``tile_size == T`` (tiled, for UHD): each GT image is cut into a grid of TxT tiles (the
  last row/column may be smaller) stored under ``{key}_tile{r:03d}x{c:03d}``; LQ tiles are
  the aligned (T/scale)-px tiles. A random crop then decodes only the tiles it touches.

``tripled_meta.json``::

    {"format": "tripled-distilled", "format_version": 1, "scale": S, "tile_size": T,
     "compress_level": L, "created": ISO time, "tool": "pack" | "distill",
     "provenance": {...source and options...}, "summary": {...},
     "samples": [{"key", "gt_path", "lq_path", "gt_shape": [h, w, 3], "lq_shape": [...],
                  "complexity", "uncertainty", "cluster", "stage", "calibrated"}, ...]}

``complexity``/``uncertainty`` are in [0, 1] or null, ``cluster`` an int or null,
``stage`` 1 (easy, used in curriculum stage 1) or 2, or null when unknown.
"""
import datetime
import json
import os

import cv2
import numpy as np

from tripled_basicsr.utils.io import package_version

from tripled_basicsr.utils.ownership import AtomicOutputDir, suggest_output

FORMAT_NAME = 'tripled-distilled'
FORMAT_VERSION = 1
META_FILE = 'tripled_meta.json'
SAMPLE_FIELDS = ('complexity', 'uncertainty', 'cluster', 'stage', 'calibrated')


class FormatError(ValueError):
    pass


def tile_key(key, r, c):
    return f'{key}_tile{r:03d}x{c:03d}'


def tile_grid(h, w, tile):
    """Number of tile rows and columns covering an h x w image."""
    return -(-h // tile), -(-w // tile)


RAW_HEADER = 12  # codec raw: uint32 little-endian h, w, c, then the HxWxC uint8 bytes (BGR)


def encode_raw(img):
    """Uncompressed value of the ``raw`` codec: a crop of it is an array slice, no decode."""
    h, w, c = img.shape
    return np.array([h, w, c], '<u4').tobytes() + np.ascontiguousarray(img, np.uint8).tobytes()


def decode_raw(buf):
    """``encode_raw``'s inverse -> HxWxC uint8 array (a read-only view of ``buf``)."""
    h, w, c = (int(v) for v in np.frombuffer(buf, '<u4', 3))
    return np.frombuffer(buf, np.uint8, h * w * c, RAW_HEADER).reshape(h, w, c)


def encode_png(img, compress_level):
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, int(compress_level)])
    if not ok:
        raise RuntimeError('PNG encoding failed')
    return buf.tobytes()


class _LmdbOut:
    """One output LMDB with its meta_info.txt (BasicSR's convention)."""

    def __init__(self, path, compress_level, map_size=1 << 40, commit_every=256, codec='png'):
        import lmdb
        os.makedirs(path, exist_ok=True)
        # meminit=True: LMDB zeroes unused page space; with False it writes whatever heap
        # bytes were there, so equal runs give different data.mdb files (and memory leaks to disk)
        self.env = lmdb.open(path, map_size=map_size, subdir=True, meminit=True, map_async=True)
        self.txn = self.env.begin(write=True)
        self.meta = open(os.path.join(path, 'meta_info.txt'), 'w', encoding='utf-8')
        self.compress_level = compress_level
        self.codec = codec
        self.commit_every = commit_every
        self.count = 0

    def put(self, key, img):
        raw = self.codec == 'raw'
        self.txn.put(key.encode('ascii'), encode_raw(img) if raw else encode_png(img, self.compress_level))
        h, w, c = img.shape
        self.meta.write(f'{key}.{"raw" if raw else "png"} ({h},{w},{c}) {0 if raw else self.compress_level}\n')
        self.count += 1
        if self.count % self.commit_every == 0:
            self.txn.commit()
            self.txn = self.env.begin(write=True)

    def close(self):
        self.txn.commit()
        self.env.sync()
        self.env.close()
        self.meta.close()

    def abort(self):
        try:
            self.txn.abort()
            self.env.close()
            self.meta.close()
        except Exception:
            pass


class DistilledWriter:
    """Writes a distilled directory atomically.

    Usage::

        with DistilledWriter(out, scale=1, tile_size=512) as w:
            w.add(key, gt, lq, gt_path=..., lq_path=..., complexity=..., stage=...)
            w.set_summary({...})

    Args:
        out (str): final directory (written to a temporary sibling, renamed at the end).
        scale (int): GT/LQ size ratio.
        tile_size (int): 0 = whole images (stock-BasicSR readable); T > 0 = T-px GT tiles,
            T must be a multiple of ``scale``.
        compress_level (int): PNG compression level 0-9 (BasicSR default 1).
        overwrite (bool): replace an existing ``out`` that tripled_basicsr wrote (never anything else).
        tool (str), provenance (dict): recorded in tripled_meta.json.
        overwrite_option (str): how the user sets ``overwrite``, for the messages.
        sources: input roots (paths, (label, path) pairs or {label: path}) that ``out`` must not
            be, contain or lie inside; checked here, before any work (see ``AtomicOutputDir``).
    """

    def __init__(self, out, scale=1, tile_size=0, compress_level=1, overwrite=False, tool='pack', provenance=None,
                 overwrite_option='--overwrite', sources=(), codec='png'):
        scale, tile_size, compress_level = int(scale), int(tile_size or 0), int(compress_level)
        if codec not in ('png', 'raw'):
            raise ValueError(f"codec must be 'png' or 'raw', got {codec!r}.")
        self.codec = codec
        if scale < 1:
            raise ValueError(f'scale must be >= 1, got {scale}.')
        if tile_size < 0 or (tile_size and tile_size % scale):
            raise ValueError(f'tile_size must be 0 (whole images) or a positive multiple of scale ({scale}); '
                             f'got {tile_size}.')
        if tile_size and tile_size < 32:
            raise ValueError(f'tile_size {tile_size} is too small to be useful; use >= 64 (e.g. 512) or 0.')
        if not 0 <= compress_level <= 9:
            raise ValueError(f'compress_level must be in 0..9, got {compress_level}.')
        self.scale, self.tile_size, self.compress_level = scale, tile_size, compress_level
        self.tool, self.provenance = tool, provenance or {}
        self._atomic = AtomicOutputDir(out, overwrite, overwrite_option, sources=sources, tool=tool)
        self.out = self._atomic.out
        self.samples = []
        self.summary = {}
        self._keys = set()

    @property
    def committed(self):
        """True once the output is complete under its final name."""
        return self._atomic.committed

    def __enter__(self):
        self.tmp = self._atomic.__enter__()
        self._gt = _LmdbOut(os.path.join(self.tmp, 'gt.lmdb'), self.compress_level, codec=self.codec)
        self._lq = _LmdbOut(os.path.join(self.tmp, 'lq.lmdb'), self.compress_level, codec=self.codec)
        return self

    def add(self, key, gt, lq, gt_path='', lq_path='', **fields):
        """Store one pair. ``gt``/``lq`` are HxWx3 uint8 BGR; LQ must be exactly GT/scale."""
        from tripled_basicsr.data.paired_source import check_pair_shapes
        if key in self._keys:
            raise ValueError(f'Duplicate key {key!r}.')
        if '.' in key or not key.isascii() or not key:
            raise ValueError(f'Key {key!r} must be non-empty ASCII without dots (BasicSR LMDB convention).')
        for name, img in (('gt', gt), ('lq', lq)):
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f'{key} {name}: expected HxWx3 uint8, got {img.dtype} {img.shape}.')
        check_pair_shapes(gt, lq, self.scale, key, gt_path)
        if self.tile_size:
            t, tl = self.tile_size, self.tile_size // self.scale
            rows, cols = tile_grid(gt.shape[0], gt.shape[1], t)
            for r in range(rows):
                for c in range(cols):
                    k = tile_key(key, r, c)
                    self._gt.put(k, np.ascontiguousarray(gt[r * t:(r + 1) * t, c * t:(c + 1) * t]))
                    self._lq.put(k, np.ascontiguousarray(lq[r * tl:(r + 1) * tl, c * tl:(c + 1) * tl]))
        else:
            self._gt.put(key, gt)
            self._lq.put(key, lq)
        rec = {'key': key, 'gt_path': str(gt_path), 'lq_path': str(lq_path), 'gt_shape': list(gt.shape),
               'lq_shape': list(lq.shape)}
        for f in SAMPLE_FIELDS:
            rec[f] = fields.pop(f, False if f == 'calibrated' else None)
        rec.update(fields)
        self.samples.append(_jsonable(rec))
        self._keys.add(key)

    def set_summary(self, summary):
        self.summary = _jsonable(summary)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self._gt.close()
                self._lq.close()
                if not self.samples:
                    raise ValueError('No samples were written; refusing to create an empty distilled dir.')
                meta = {
                    'format': FORMAT_NAME,
                    'format_version': FORMAT_VERSION,
                    'created': datetime.datetime.now().isoformat(timespec='seconds'),
                    'tool': self.tool,
                    'tripled_basicsr_version': package_version(),
                    'scale': self.scale,
                    'tile_size': self.tile_size,
                    'compress_level': self.compress_level,
                    'codec': self.codec,
                    'num_samples': len(self.samples),
                    'provenance': _jsonable(self.provenance),
                    'summary': self.summary,
                    'samples': self.samples,
                }
                with open(os.path.join(self.tmp, META_FILE), 'w', encoding='utf-8') as f:
                    json.dump(meta, f, indent=1)
            except BaseException as err:
                self._atomic.__exit__(type(err), err, err.__traceback__)
                raise
        else:
            self._gt.abort()
            self._lq.abort()
        return self._atomic.__exit__(exc_type, exc, tb)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def read_meta(root):
    """Load and validate ``tripled_meta.json`` of a distilled dir."""
    path = os.path.join(root, META_FILE)
    if not os.path.isdir(root):
        raise FormatError(f'Distilled dir {root} does not exist. Create one with '
                          f'`python -m tripled_basicsr.pack` or `python -m tripled_basicsr.distill`.')
    if not os.path.isfile(path):
        # the packed copy goes next to the folder, never into it: ``--out`` inside a source is refused
        gt, lq = ('GT_DIR', 'LQ_DIR')
        if os.path.isdir(os.path.join(root, 'gt')) and os.path.isdir(os.path.join(root, 'lq')):
            gt, lq = os.path.join(root, 'gt'), os.path.join(root, 'lq')
        raise FormatError(f'{root} has no {META_FILE}, so it is not a distilled dir. If it holds your images, pack '
                          f'them into a new directory next to it: `python -m tripled_basicsr.pack --gt {gt} --lq '
                          f'{lq} --out {suggest_output(root, [root], "_packed")}` and point dataroot there (or '
                          f'point dataroot_gt/dataroot_lq of a PairedImageDataset at plain LMDBs).')
    try:
        with open(path, encoding='utf-8') as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise FormatError(f'{path} is unreadable or not valid JSON ({exc}); re-create the distilled dir.') from exc
    if meta.get('format') != FORMAT_NAME:
        raise FormatError(f'{path}: "format" is {meta.get("format")!r}, expected {FORMAT_NAME!r}.')
    version = meta.get('format_version')
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FormatError(f'{path}: format_version {version!r} is newer than this tripled_basicsr supports '
                          f'({FORMAT_VERSION}). Upgrade tripled_basicsr (pip install -U tripled-basicsr).')
    for key in ('scale', 'tile_size', 'samples'):
        if key not in meta:
            raise FormatError(f'{path}: required field {key!r} is missing; re-create the distilled dir.')
    for sub in ('gt.lmdb', 'lq.lmdb'):
        if not os.path.isdir(os.path.join(root, sub)):
            raise FormatError(f'{root}: {sub} is missing; the distilled dir is incomplete, re-create it.')
    return meta
