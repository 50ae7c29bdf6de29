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
import contextlib
import datetime
import json
import logging
import os
import socket

import cv2
import numpy as np

from tripled_basicsr.utils import ownership
from tripled_basicsr.utils.io import package_version, write_json_atomic
from tripled_basicsr.utils.ownership import AtomicOutputDir, suggest_output

logger = logging.getLogger('tripled_basicsr.output')

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
    """``encode_raw``'s inverse -> HxWxC uint8 array (a read-only view of ``buf``: bytes, or a buffer
    into an LMDB map that is valid only while its transaction lives)."""
    h, w, c = np.frombuffer(buf, '<u4', 3).tolist()
    return np.frombuffer(buf, np.uint8, h * w * c, RAW_HEADER).reshape(h, w, c)


def encode_png(img, compress_level):
    ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, int(compress_level)])
    if not ok:
        raise RuntimeError('PNG encoding failed')
    return buf.tobytes()


# A write transaction is committed after this many pairs or this many encoded bytes, whichever
# comes first (after whole pairs only). A failed or interrupted pack keeps what was committed.
COMMIT_PAIRS = 256
COMMIT_BYTES = 64 << 20
# Address space reserved for a new output LMDB; grown (doubled) whenever the data needs more, so
# a writer needs about twice its data in address space, not a fixed 1 TiB map (``ulimit -v``).
LMDB_INITIAL_MAP = 64 << 20
_MAX_GROWTH = 64  # attempts to grow one transaction's map before giving up (never reached in practice)


def _round_map(n):
    return -(-int(n) // (1 << 20)) * (1 << 20)  # whole MiB (a multiple of every page size)


class _LmdbOut:
    """One output LMDB with its meta_info.txt (BasicSR's convention).

    The map starts at ``map_size`` (default :data:`LMDB_INITIAL_MAP`, at least twice an
    existing file) and grows on demand: when a put or a commit hits ``MapFullError`` the
    transaction is aborted, the map enlarged with ``env.set_mapsize`` (doubled; only what the
    data needs when the address space is short) and the puts since the last commit replayed.
    A map that cannot be reserved at all raises ``LmdbMapError`` (``utils/lmdb_io.map_error``).

    ``auto_commit``: commit every ``commit_every`` entries or :data:`COMMIT_BYTES` by itself
    (else the owner calls :meth:`commit`, e.g. after whole pairs). ``meta_info.txt`` is written
    by :meth:`close`: the lines of the puts in order (``record_lines``), or the ``lines`` the
    owner passes.
    """

    def __init__(self, path, compress_level, map_size=None, commit_every=256, codec='png', auto_commit=True,
                 record_lines=True):
        import lmdb
        self._lmdb = lmdb
        os.makedirs(path, exist_ok=True)
        self.path = path
        data = os.path.join(path, 'data.mdb')
        existing = os.path.getsize(data) if os.path.isfile(data) else 0
        self.map_size = _round_map(max(int(map_size or LMDB_INITIAL_MAP), 2 * existing))
        self.env = None
        self._open(self.map_size, fallback=_round_map(existing + (16 << 20)) if existing else None)
        self.txn = self.env.begin(write=True)
        self.pending = []  # (key, value) put since the last commit: replayed after the map grew
        self.pending_bytes = 0
        self.grown = 0  # times the map was enlarged (for tests)
        self.lines = [] if record_lines else None
        self.compress_level = compress_level
        self.codec = codec
        self.commit_every = commit_every
        self.auto_commit = auto_commit
        self.count = 0

    # -- the map
    def _open(self, size, fallback=None):
        """(Re)open the environment with a map of ``size`` bytes (or ``fallback`` when that cannot be reserved)."""
        from tripled_basicsr.utils.lmdb_io import map_error
        lmdb = self._lmdb
        for attempt in (size, fallback):
            if attempt is None:
                continue
            try:
                # meminit=True: LMDB zeroes unused page space; with False it writes whatever heap bytes
                # were there, so equal runs give different data.mdb files (and memory leaks to disk)
                self.env = lmdb.open(self.path, map_size=attempt, subdir=True, meminit=True, map_async=True)
                self.map_size = attempt
                return
            except lmdb.MemoryError as exc:
                err = exc
        raise map_error(self.path, fallback or size, err) from err

    def _committed_bytes(self):
        return (int(self.env.info()['last_pgno']) + 1) * int(self.env.stat()['psize'])

    def _grow(self):
        """Abort the transaction, enlarge the map, start again and replay the puts since the last commit."""
        lmdb = self._lmdb
        for _ in range(_MAX_GROWTH):
            try:
                self.txn.abort()
            except lmdb.Error:  # a failed commit has already ended it
                pass
            used = self._committed_bytes()
            need = _round_map(max(used + 2 * self.pending_bytes + (16 << 20),
                                  self.map_size + max(2 * self.pending_bytes, 16 << 20)))
            want = max(2 * self.map_size, need)
            try:
                self.env.set_mapsize(want)
                self.map_size = want
            except lmdb.MemoryError:
                # the environment lost its map: open it again, with only what the data needs
                try:
                    self.env.close()
                except lmdb.Error:
                    pass
                self._open(need)
            self.grown += 1
            self.txn = self.env.begin(write=True)
            try:
                for k, v in self.pending:
                    self.txn.put(k, v)
                return
            except lmdb.MapFullError:
                continue
        raise RuntimeError(f'{self.path}: the LMDB map could not be grown enough for the data')

    def _put(self, k, v):
        for _ in range(_MAX_GROWTH):
            try:
                self.txn.put(k, v)
                break
            except self._lmdb.MapFullError:
                self._grow()
        else:
            raise RuntimeError(f'{self.path}: the LMDB map could not be grown enough for the data')
        self.pending.append((k, v))
        self.pending_bytes += len(k) + len(v)

    # -- writing
    def line(self, key, shape):
        """The meta_info.txt line of one entry (BasicSR's create_lmdb.py format)."""
        h, w, c = shape
        raw = self.codec == 'raw'
        return f'{key}.{"raw" if raw else "png"} ({h},{w},{c}) {0 if raw else self.compress_level}\n'

    def put(self, key, img):
        raw = self.codec == 'raw'
        self._put(key.encode('ascii'), encode_raw(img) if raw else encode_png(img, self.compress_level))
        if self.lines is not None:
            self.lines.append(self.line(key, img.shape))
        self.count += 1
        if self.auto_commit and (len(self.pending) >= self.commit_every or self.pending_bytes >= COMMIT_BYTES):
            self.commit()

    def commit(self):
        """Make the puts so far durable (growing the map when the commit needs more room)."""
        for _ in range(_MAX_GROWTH):
            try:
                self.txn.commit()
                break
            except self._lmdb.MapFullError:
                self._grow()
        else:
            raise RuntimeError(f'{self.path}: the LMDB map could not be grown enough for the data')
        self.txn = self.env.begin(write=True)
        self.pending = []
        self.pending_bytes = 0

    def keep_only(self, keys):
        """Delete every entry whose key is not in ``keys`` (bytes); return the keys present."""
        present, extra = set(), []
        for k in self.txn.cursor().iternext(keys=True, values=False):
            if k in keys:
                present.add(k)
            else:
                extra.append(k)
        for k in extra:
            self.txn.delete(k)
        self.commit()
        return present

    def entries(self):
        return int(self.env.stat()['entries'])

    def close(self, lines=None):
        self.commit()
        self.env.sync()
        self.env.close()
        with open(os.path.join(self.path, 'meta_info.txt'), 'w', encoding='utf-8') as f:
            f.writelines(self.lines if lines is None else lines)

    def abort(self):
        """Drop the uncommitted puts and close (what was committed stays in the file)."""
        try:
            self.txn.abort()
        except Exception:  # noqa: BLE001 - already ended
            pass
        try:
            self.env.close()
        except Exception:  # noqa: BLE001
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
        resume (dict | None): make the output resumable (pack): the options that identify the
            run (sources, ...). Pairs are committed in batches (:data:`COMMIT_PAIRS` pairs or
            :data:`COMMIT_BYTES`); when the run fails, is interrupted or killed, the committed
            pairs are kept in ``.NAME.partial`` and the next writer with equal ``resume`` options
            continues from them (:attr:`resumed_keys`); other options are refused before any
            work unless ``restart`` (which discards the partial output).
        restart_option (str): how the user sets ``restart``, for the messages.
    """

    def __init__(self, out, scale=1, tile_size=0, compress_level=1, overwrite=False, tool='pack', provenance=None,
                 overwrite_option='--overwrite', sources=(), codec='png', resume=None, restart=False,
                 restart_option='--restart'):
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
        if resume is None:
            self._atomic = AtomicOutputDir(out, overwrite, overwrite_option, sources=sources, tool=tool)
        else:
            identity = _jsonable(dict(resume, scale=scale, tile_size=tile_size, compress_level=compress_level,
                                      codec=codec, format_version=FORMAT_VERSION))
            self._atomic = _ResumableOutputDir(out, overwrite, overwrite_option, sources, tool, identity, restart,
                                               restart_option)
        self.out = self._atomic.out
        self.samples = []
        self.skipped = []  # pairs left out by the caller (``skip``), listed in its summary
        self.summary = {}
        self._keys = set()
        self._pending = []  # records of the pairs added since the last commit
        self._journal = None
        self.committed_pairs = 0
        self.resumed = 0  # pairs taken over from an interrupted run
        # resumable outputs: key -> what the pair was read from now (e.g. file sizes and mtimes),
        # set by the caller before ``with``; a pair whose stamp changed since it was written is
        # dropped from the taken-over ones and written again, so a resume never keeps stale pairs
        self.stamp_of = None
        self._stamps = {}

    @property
    def committed(self):
        """True once the output is complete under its final name."""
        return self._atomic.committed

    @property
    def resumed_keys(self):
        """Keys of the pairs an interrupted run wrote (taken over, not to be read again)."""
        return {r['key'] for r in self.samples[:self.resumed]}

    @property
    def resumed_from(self):
        """The partial output of an interrupted run this writer continues (``.NAME.partial``), else None."""
        return getattr(self._atomic, 'resumed_from', None)

    @property
    def partial_dir(self):
        """Where a failed resumable run left its progress (``.NAME.partial``), else None."""
        return getattr(self._atomic, 'kept', None)

    def __enter__(self):
        self.tmp = self._atomic.__enter__()
        try:
            resumable = isinstance(self._atomic, _ResumableOutputDir)
            recs = _read_journal(self.tmp) if resumable and self._atomic.resumed_from else []
            # committed after whole pairs (``commit``); meta_info.txt is written from the samples at the end
            self._gt = _LmdbOut(os.path.join(self.tmp, 'gt.lmdb'), self.compress_level, codec=self.codec,
                                auto_commit=False, record_lines=False)
            self._lq = _LmdbOut(os.path.join(self.tmp, 'lq.lmdb'), self.compress_level, codec=self.codec,
                                auto_commit=False, record_lines=False)
            if recs:
                recs = self._take_over(recs)
            if resumable:
                if not os.path.isfile(os.path.join(self.tmp, PARTIAL_INFO)):
                    write_json_atomic(os.path.join(self.tmp, PARTIAL_INFO),
                                      {'format': PARTIAL_FORMAT, 'tool': self.tool, 'out': self.out,
                                       'tripled_basicsr_version': package_version(),
                                       'identity': self._atomic.identity})
                _write_journal(self.tmp, [dict(r, _stamp=self._stamps.get(r['key'])) for r in recs])
                self._journal = open(os.path.join(self.tmp, PARTIAL_SAMPLES), 'a', encoding='utf-8')
        except BaseException as err:
            for o in ('_gt', '_lq'):
                if hasattr(self, o):
                    getattr(self, o).abort()
            self._close_journal(remove=False)
            if isinstance(self._atomic, _ResumableOutputDir):  # a taken-over partial output is kept as it was
                self._atomic.keep = bool(self._atomic.resumed_from)
            self._atomic.__exit__(type(err), err, err.__traceback__)
            raise
        return self

    def _entry_keys(self, rec):
        """The LMDB keys one sample record was stored under (its tiles when tiled)."""
        if not self.tile_size:
            return [rec['key']]
        rows, cols = tile_grid(rec['gt_shape'][0], rec['gt_shape'][1], self.tile_size)
        return [tile_key(rec['key'], r, c) for r in range(rows) for c in range(cols)]

    def _take_over(self, recs):
        """Adopt the committed pairs of an interrupted run: drop entries of a batch it did not
        record as complete, records whose entries are not all there, and pairs whose source
        changed since (:attr:`stamp_of`): they are written again."""
        if self.stamp_of is not None:
            recs = [r for r in recs if r.get('_stamp') == _jsonable(self.stamp_of(r['key']))]
        while True:
            want = {k.encode('ascii') for r in recs for k in self._entry_keys(r)}
            present = want
            for out in (self._gt, self._lq):
                if out.entries() != len(want):
                    present = present & out.keep_only(want)
            good = [r for r in recs if all(k.encode('ascii') in present for k in self._entry_keys(r))]
            if len(good) == len(recs):
                break
            recs = good
        self._stamps = {r['key']: r.pop('_stamp', None) for r in recs}
        self.samples = list(recs)
        self._keys = {r['key'] for r in recs}
        self.resumed = self.committed_pairs = len(recs)
        return recs

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
        rec = _jsonable(rec)
        self.samples.append(rec)
        self._keys.add(key)
        self._pending.append(rec)
        if len(self._pending) >= COMMIT_PAIRS or self._gt.pending_bytes + self._lq.pending_bytes >= COMMIT_BYTES:
            self.commit()

    def commit(self):
        """Make the pairs added so far durable; a resumable output also records them as complete."""
        self._gt.commit()
        self._lq.commit()
        if self._journal is not None and self._pending:
            stamp = (lambda k: _jsonable(self.stamp_of(k))) if self.stamp_of is not None else (lambda k: None)
            self._journal.write(''.join(json.dumps(dict(r, _stamp=stamp(r['key']))) + '\n' for r in self._pending))
            self._journal.flush()
            os.fsync(self._journal.fileno())
        self.committed_pairs += len(self._pending)
        self._pending = []

    def skip(self, key, reason, **fields):
        """Record a pair the caller leaves out (e.g. an unreadable file with ``on_error: skip``)."""
        self.skipped.append(_jsonable(dict(key=key, **fields, reason=str(reason))))

    def sort_samples(self, keys):
        """Order the samples as ``keys`` (the source order): a resumed run may have written a pair
        that an earlier run skipped after the others."""
        order = {k: i for i, k in enumerate(keys)}
        self.samples.sort(key=lambda r: order.get(r['key'], len(order)))

    def set_summary(self, summary):
        self.summary = _jsonable(summary)

    def _meta_lines(self, out, which):
        """meta_info.txt of one LMDB, from the sample records (in their final order)."""
        lines = []
        for rec in self.samples:
            h, w, c = rec[f'{which}_shape']
            if not self.tile_size:
                lines.append(out.line(rec['key'], (h, w, c)))
                continue
            t = self.tile_size if which == 'gt' else self.tile_size // self.scale
            rows, cols = tile_grid(h, w, t)
            lines += [out.line(tile_key(rec['key'], r, cc), (min(t, h - r * t), min(t, w - cc * t), c))
                      for r in range(rows) for cc in range(cols)]
        return lines

    def _close_journal(self, remove):
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if remove:
            for name in (PARTIAL_INFO, PARTIAL_SAMPLES):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.tmp, name))

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.commit()
                self._gt.close(self._meta_lines(self._gt, 'gt'))
                self._lq.close(self._meta_lines(self._lq, 'lq'))
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
                self._close_journal(remove=True)  # complete: the output holds no trace of the resume records
            except BaseException as err:
                self._close_journal(remove=False)
                if isinstance(self._atomic, _ResumableOutputDir):  # e.g. a full disk at the very end
                    self._atomic.keep = self.committed_pairs > 0
                self._atomic.__exit__(type(err), err, err.__traceback__)
                raise
        else:
            # what was committed stays in the files; a resumable output keeps it when there is any
            self._gt.abort()
            self._lq.abort()
            self._close_journal(remove=False)
            if isinstance(self._atomic, _ResumableOutputDir):
                self._atomic.keep = self.committed_pairs > 0
        return self._atomic.__exit__(exc_type, exc, tb)


# ----------------------------------------------------------------------------- resumable output (pack)
PARTIAL_INFO = 'partial.json'  # {"format": "tripled-partial", "tool", "out", "identity": {...options...}}
PARTIAL_SAMPLES = 'partial_samples.jsonl'  # one sample record per committed pair
PARTIAL_FORMAT = 'tripled-partial'


def _read_journal(directory):
    """The committed sample records in ``directory`` (a torn last line, from a kill, is dropped)."""
    recs = []
    try:
        with open(os.path.join(directory, PARTIAL_SAMPLES), encoding='utf-8') as f:
            for line in f:
                if not line.endswith('\n'):
                    break
                try:
                    rec = json.loads(line)
                except ValueError:
                    break
                if not isinstance(rec, dict) or 'key' not in rec:
                    break
                recs.append(rec)
    except OSError:
        return []
    return recs


def _write_journal(directory, recs):
    path = os.path.join(directory, PARTIAL_SAMPLES)
    tmp = path + '.part'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(''.join(json.dumps(r) + '\n' for r in recs))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _partial_info(path, tool):
    """``partial.json`` of ``path`` when it is a partial output of ``tool`` (our marker inside), else None."""
    marker = ownership.read_marker(path)
    if marker is None or marker.get('tool') != tool or marker.get('complete') is not False:
        return None
    try:
        with open(os.path.join(path, PARTIAL_INFO), encoding='utf-8') as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get('format') != PARTIAL_FORMAT or not isinstance(info.get('identity'), dict):
        return None
    return info


class _ResumableOutputDir(AtomicOutputDir):
    """``AtomicOutputDir`` that keeps the progress of a failed run for the next one.

    On failure with committed pairs (``keep``, set by the writer) the temporary directory,
    marker and all, is renamed to ``.NAME.partial`` instead of deleted; a temporary directory
    left by a killed run (SIGKILL, power loss: provably ours, its process gone) with committed
    pairs is renamed so too, before the usual cleanup of leftovers. The next run with the same
    ``identity`` renames it back to its own temporary directory and continues; with another it
    is refused before any work, unless ``restart`` (which deletes it). ``NAME`` itself still
    appears only when complete."""

    def __init__(self, out, overwrite, option_name, sources, tool, identity, restart, restart_option):
        self.identity, self.restart, self.restart_option = identity, bool(restart), restart_option
        self.keep = False
        self.kept = None  # the partial dir this run left behind
        self.resumed_from = None  # the partial dir this run continues
        self._resume = False
        super().__init__(out, overwrite, option_name, sources=sources, tool=tool)
        self._check_partial()

    @property
    def partial(self):
        parent, name = os.path.split(self.out)
        return os.path.join(parent, f'.{name}.partial')

    # -- before any work
    def clean_stale(self):
        self._adopt_killed_run()
        super().clean_stale()

    def _adopt_killed_run(self):
        if os.path.lexists(self.partial):
            return
        parent = os.path.dirname(self.out)
        try:
            names = sorted(os.listdir(parent))
        except OSError:
            return
        pattern, host, found = self._stale_pattern(), socket.gethostname(), []
        for name in names:
            m = pattern.match(name)
            path = os.path.join(parent, name)
            if not m or m.group(1) != 'tmp' or os.path.islink(path) or not os.path.isdir(path):
                continue
            marker = ownership.read_marker(path)
            if _partial_info(path, self.tool) is None or marker.get('host', host) != host:
                continue
            pid = int(m.group(2))
            alive = ownership._pid_alive(pid, path)
            if alive and marker.get('pid_start') is not None and pid != os.getpid():
                start = ownership._proc_start(pid)  # the pid may be in use by another process by now
                alive = start is None or start == marker['pid_start']
            n = len(_read_journal(path))
            if not alive and n:
                found.append((n, path, pid))
        if not found:
            return
        n, path, pid = max(found)
        with ownership.defer_sigint():
            os.rename(path, self.partial)
        logger.warning('%s: kept the %d pairs written by an interrupted run (pid %d) to %s: moved %s to %s, to '
                       'continue from.', self.tool, n, pid, self.out, path, self.partial)

    def _check_partial(self):
        p = self.partial
        if not os.path.lexists(p):
            return
        info = _partial_info(p, self.tool)
        if info is None:
            logger.warning('%s: %s is not a partial output of this tool (no %s marker or %s); left alone. Until it '
                           'is removed, a failed run to %s cannot keep its progress.', self.tool, p,
                           ownership.MARKER_FILE, PARTIAL_INFO, self.out)
            return
        n = len(_read_journal(p))
        if self.restart:
            with ownership.defer_sigint():
                err = ownership.remove_tree(p)
            if err is not None:
                raise ownership.OutputExistsError(f'{self.restart_option}: could not delete {p}, the partial '
                                                  f'output of an interrupted run: {err}. Remove it yourself.')
            logger.warning('%s: %s: deleted %s (%d pairs of an interrupted run); starting over.', self.tool,
                           self.restart_option, p, n)
            return
        then = info['identity']
        diffs = [f'{k} {then.get(k)!r} then, {self.identity.get(k)!r} now'
                 for k in sorted(set(then) | set(self.identity)) if then.get(k) != self.identity.get(k)]
        if diffs:
            raise ownership.OutputExistsError(
                f'{p} holds an interrupted {self.tool} run to {self.out} ({n} pairs written) with other options '
                f'({"; ".join(diffs)}). Run the earlier command again to continue it, or pass {self.restart_option} '
                f'to delete it and start over with these options.')
        self._resume = True

    # -- writing
    def __enter__(self):
        if not self._resume:
            return super().__enter__()
        self.check()
        self.tmp = self._sibling('tmp')
        ownership._IN_USE.add(self.tmp)
        taken = False
        with ownership.defer_sigint():
            try:
                os.rename(self.partial, self.tmp)
                taken = True
                ownership._write_marker(self.tmp, self._marker(False))  # this run is its writer now
            except FileNotFoundError:  # a concurrent run took it first
                ownership._IN_USE.discard(self.tmp)
        if not taken:
            self._resume = False
            return super().__enter__()
        self.resumed_from = self.partial
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and self.keep and self.tmp and os.path.isdir(self.tmp) \
                and not os.path.lexists(self.partial):
            try:
                with ownership.defer_sigint():
                    os.rename(self.tmp, self.partial)
                self.kept = self.partial
            except OSError as err:
                logger.warning('%s: could not keep the progress in %s: %s', self.tool, self.partial, err)
            if self.kept:
                ownership._IN_USE.discard(self.tmp)
                return False
        return super().__exit__(exc_type, exc, tb)


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
