"""The feature stage: decode at reduced size, embed with the frozen ViT, store float16 features on disk.

The work dir (``{output.path}.work`` unless ``work_dir`` is set) holds::

    state.json     what the features depend on (options, source keys), checked on resume; and
                   a crc32 of every array, recorded when the feature stage ends and verified on
                   resume (FeatureStore: a damaged store is refused, never zero-filled)
    features.f16   np.memmap float16 (N, V, D): V views per pair (image kinds x (1 + local_views))
    stats.f32      np.memmap float32 (N, 3): entropy, gradient, token_var of each pair
    done.u8        np.memmap uint8 (N,): 0 to do, 1 embedded, 2 skipped (on_error: skip)
    fingerprints.i64  np.memmap int64 (N, 2): what each row was computed from (GT, LQ): a hash
                   of size + mtime_ns for files, of the value bytes for LMDB entries
    source_stat.json  size + mtime_ns of LMDB data files (skips re-hashing unchanged LMDBs)
    errors.json    {index: message} of skipped pairs
    .lock          held while a run uses the work dir (utils/lock.py)

A pair whose file changed since its row was computed (same name, new content) is
re-embedded on the next run (``stale_rows``), so a resume never mixes stale features in.

Rows are flushed before the done-mask that marks them, so after a kill (Ctrl-C, SIGKILL)
a restart embeds exactly the pairs not yet marked. The remaining indices are cut into batches
of ``batch_size`` consecutive indices; rank r embeds the r-th contiguous block of them (crops of
one image stay on one rank and one decode worker: ``assign_batches``), one batch per round, and
each round's results are gathered (``all_gather_object``) to rank 0, which writes them. A single
process runs the same loop with world_size 1, and batch composition does not depend on the
world size.
"""
import hashlib
import json
import os
import time
import zlib

import cv2
import numpy as np
import torch

from tripled_basicsr.data.paired_source import buffer_size, decode_image, image_size  # noqa: F401 (re-exported)
from tripled_basicsr.utils.device import resolve_device
from tripled_basicsr.utils.io import write_json_atomic

STATE_FILE = 'state.json'
STATE_VERSION = 2  # 2: per-row source fingerprints
KINDS = {'gt': ('gt',), 'lq': ('lq',), 'both': ('gt', 'lq')}


class WorkDirMismatch(RuntimeError):
    pass


class FeatureError(RuntimeError):
    pass


# ---------------------------------------------------------------- decoding
def is_jpeg(buf):
    return len(buf) > 3 and bytes(buf[:2]) == b'\xff\xd8'


JPEG_REDUCTIONS = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def jpeg_reduction(short, target_short):
    """(factor, cv2 flag) of the largest libjpeg DCT reduction that keeps a side of ``short``
    pixels at least ``target_short``; (1, IMREAD_COLOR) when none does."""
    for f, flag in JPEG_REDUCTIONS:
        if short // f >= target_short:
            return f, flag
    return 1, cv2.IMREAD_COLOR


def shrink_to_short(img, target_short):
    """Shrink with INTER_AREA so the short side is ``target_short`` (never upscaled)."""
    h, w = img.shape[:2]
    if min(h, w) > target_short:
        s = target_short / min(h, w)
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return img


def decode_reduced(buf, target_short, name='image'):
    """Decode to HxWx3 uint8 BGR with short side ~= ``target_short`` (never upscaled).

    JPEGs use libjpeg's DCT-domain reduction (cv2.IMREAD_REDUCED_COLOR_2/4/8), which is
    several times faster than a full decode of a 4K frame; other formats are decoded fully
    and shrunk with INTER_AREA.
    """
    flag = cv2.IMREAD_UNCHANGED
    if is_jpeg(buf):
        hw = image_size(buf)
        flag = jpeg_reduction(min(hw), target_short)[1] if hw is not None else cv2.IMREAD_COLOR
    return shrink_to_short(decode_image(buf, name, flag), target_short)


def make_views(img, input_size, local_views, rng):
    """Global view (whole image resized to S x S) + ``local_views`` random S x S crops.

    Returns (1 + local_views, S, S, 3) uint8 RGB.
    """
    s = int(input_size)
    h, w = img.shape[:2]
    interp = cv2.INTER_AREA if min(h, w) >= s else cv2.INTER_CUBIC
    views = [cv2.resize(img, (s, s), interpolation=interp)]
    if local_views:
        base = img
        if min(h, w) < s:
            f = s / min(h, w)
            base = cv2.resize(img, (max(s, round(w * f)), max(s, round(h * f))), interpolation=cv2.INTER_CUBIC)
        bh, bw = base.shape[:2]
        for _ in range(int(local_views)):
            y, x = int(rng.integers(0, bh - s + 1)), int(rng.integers(0, bw - s + 1))
            views.append(base[y:y + s, x:x + s])
    return np.stack([v[:, :, ::-1] for v in views])


# ---------------------------------------------------------------- source fingerprints
def _digest(data):
    """A signed 64-bit hash of ``data`` (never 0: 0 marks 'unknown')."""
    v = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), 'little', signed=True)
    return v or 1


def file_fingerprint(source, i, which, buf=None):
    """What row ``i`` is computed from: size + mtime_ns of a file (cheap, no read), or a hash
    of the value for an LMDB entry (LMDB values have no own mtime). 0 when unreadable."""
    try:
        if source.kind == 'lmdb':  # crop units: the value of the image the crop is cut from
            read = getattr(source, 'image_bytes', source.read_bytes)
            return _digest(bytes(buf if buf is not None else read(i, which)))
        st = os.stat(source.source_path(i, which))
        return _digest(f'{st.st_size}:{st.st_mtime_ns}'.encode())
    except Exception:  # noqa: BLE001 - an unreadable file is reported by the decode, not here
        return 0


def _lmdb_stat(source):
    out = {}
    roots = source.lmdb_roots() if hasattr(source, 'lmdb_roots') else (('gt', source.dataroot_gt),
                                                                        ('lq', source.dataroot_lq))
    for which, root in roots:
        st = os.stat(os.path.join(root, 'data.mdb'))
        out[which] = [st.st_size, st.st_mtime_ns]
    return out


def stale_rows(source, store, progress=False):
    """Rows already computed (done 1 or 2) whose source changed since: re-marked 'to do'.

    Folders: one ``stat`` per file. LMDBs: nothing is read while ``data.mdb`` keeps its size
    and mtime; otherwise every computed row's values are hashed and compared. Returns the
    keys of the re-marked pairs.
    """
    done = np.asarray(store.done)
    rows = np.flatnonzero(done != 0)
    state_path = os.path.join(store.work, 'source_stat.json')
    if source.kind == 'lmdb':
        now = _lmdb_stat(source)
        try:
            with open(state_path, encoding='utf-8') as f:
                same = json.load(f) == now
        except (OSError, ValueError):
            same = False
        if same:
            rows = rows[:0]
    if len(rows):
        from tqdm import tqdm
        cur = np.array([[file_fingerprint(source, int(i), w) for w in ('gt', 'lq')]
                        for i in tqdm(rows, desc='check sources', unit='pair', disable=not progress, leave=False)],
                       np.int64).reshape(-1, 2)
        changed = rows[(cur != np.asarray(store.fp[rows])).any(1)]
    else:
        changed = rows
    if len(changed):
        store.begin_changes()
        store.done[changed] = 0
        store.done.flush()
    if source.kind == 'lmdb':
        write_json_atomic(state_path, _lmdb_stat(source))
    return [source.keys[int(i)] for i in changed]


class EmbedInputs(torch.utils.data.Dataset):
    """Decodes pair ``i`` into its views; errors are returned, not raised (the caller
    applies ``on_error``)."""

    def __init__(self, source, kinds, input_size, local_views, decode_size, seed):
        self.source, self.kinds = source, kinds
        self.input_size, self.local_views, self.decode_size = int(input_size), int(local_views), int(decode_size)
        self.seed = int(seed)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        src = self.source
        v = (1 + self.local_views) * len(self.kinds)
        empty = np.zeros((v, self.input_size, self.input_size, 3), np.uint8)
        bufs = {}
        fps = torch.zeros(2, dtype=torch.int64)
        try:
            if src.kind != 'lmdb':  # stat before reading: a file replaced meanwhile is caught next run
                fps[:] = torch.tensor([file_fingerprint(src, i, w) for w in ('gt', 'lq')])
            if hasattr(src, 'read_reduced'):  # crop units: sliced from one reduced decode per image
                return self._crop_item(i, fps)
            bufs = {w: src.read_bytes(i, w) for w in ('gt', 'lq')}
            if src.kind == 'lmdb':
                fps[:] = torch.tensor([file_fingerprint(src, i, w, bufs[w]) for w in ('gt', 'lq')])
            sizes = {}
            for w in ('gt', 'lq'):
                if not bufs[w]:
                    raise ValueError(f'{src.source_path(i, w)}: empty file.')
                sizes[w] = buffer_size(bufs[w])
            views, stats = self._views(i, {w: decode_reduced(bufs[w], self.decode_size, src.source_path(i, w))
                                            for w in self.kinds})
            for w in ('gt', 'lq'):  # sizes of images not decoded: from headers, else decode fully
                if sizes[w] is None:
                    sizes[w] = decode_image(bufs[w], src.source_path(i, w)).shape[:2]
            (gh, gw), (lh, lw), s = sizes['gt'], sizes['lq'], src.scale
            if lh * s != gh or lw * s != gw:
                raise ValueError(f'pair {src.keys[i]!r}: LQ {src.source_path(i, "lq")} is {lw}x{lh} but GT is '
                                 f'{gw}x{gh}; with scale {s} LQ must be GT / {s}.')
            return i, views, stats, '', fps
        except Exception as exc:  # noqa: BLE001 - reported per item, on_error decides
            return i, torch.from_numpy(empty), torch.zeros(2), f'{type(exc).__name__}: {exc}', fps

    def _views(self, i, imgs):
        """(views of every kind, [entropy, gradient] of the first) for the decoded ``imgs``."""
        from tripled_basicsr.distill.scoring import image_stats
        views = [make_views(imgs[w], self.input_size, self.local_views, np.random.default_rng([self.seed, i, k]))
                 for k, w in enumerate(self.kinds)]
        stats = image_stats(imgs[self.kinds[0]])
        return torch.from_numpy(np.concatenate(views)), torch.tensor([stats['entropy'], stats['gradient']])

    def _crop_item(self, i, fps):
        """A crop unit (CropSource): both boxes are checked against their images (LQ = GT / scale
        inside the box), the kinds embedded are cut from reduced decodes."""
        src = self.source
        if src.kind == 'lmdb':
            fps[:] = torch.tensor([file_fingerprint(src, i, w) for w in ('gt', 'lq')])
        imgs = {w: src.read_reduced(i, w, self.decode_size) for w in self.kinds}
        for w in ('gt', 'lq'):
            if w not in imgs:  # not embedded: its box is still checked against its image size
                src.check_box(i, w)
        views, stats = self._views(i, imgs)
        return i, views, stats, '', fps


def _collate(items):
    """-> (indices, views, stats, error strings, fingerprints (B, 2) int64)."""
    idx = torch.tensor([it[0] for it in items], dtype=torch.long)
    return (idx, torch.stack([it[1] for it in items]), torch.stack([it[2] for it in items]), [it[3] for it in items],
            torch.stack([it[4] for it in items]))


# ---------------------------------------------------------------- work dir
def _flat(d, prefix=''):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


WORK_FILES = ('features.f16', 'stats.f32', 'done.u8', 'fingerprints.i64', 'errors.json')
WORK_TOOL = 'distill-work'


# every top-level name the distiller writes in a work dir; anything else there is a user's (utils/ownership)
WORK_LAYOUT = WORK_FILES + (STATE_FILE, 'source_stat.json', '*.json.tmp*')


def claim_work_dir(work, check_only=False):
    """Make ``work`` the distiller's work dir, or refuse before any work.

    It becomes ours only when the distiller creates it or finds it empty (then it gets our
    marker, naming the tool ``distill-work`` and the names it writes there); a folder of the
    user's, or another tool's output, is refused and nothing in it is touched, so a later
    ``--overwrite``/``--restart`` elsewhere can never mistake it for ours. ``check_only``
    runs the checks without writing (preflight, before the lock is taken)."""
    from tripled_basicsr.utils.ownership import claim_dir
    return claim_dir(work, WORK_TOOL, 'work_dir', layout=WORK_LAYOUT, check_only=check_only,
                     hint='Leave work_dir unset to use {output.path}.work, or name a folder that does not exist yet.')


# The arrays of a store: (key in FeatureStore.paths, file name, dtype).
ARRAYS = (('feat', 'features.f16', np.float16), ('stats', 'stats.f32', np.float32), ('done', 'done.u8', np.uint8),
          ('fp', 'fingerprints.i64', np.int64))
CHECKSUM = 'crc32'


def file_crc32(path, chunk=1 << 24):
    """zlib.crc32 of a file's bytes, read in 16 MiB blocks (about 1 GB/s; never a memmap)."""
    crc = 0
    with open(path, 'rb') as f:
        while True:
            block = f.read(chunk)
            if not block:
                return crc
            crc = zlib.crc32(block, crc)


class FeatureStore:
    """The memory-mapped arrays of a work dir (see module docstring).

    Integrity (a store is a cache a user can damage: a copy cut short, a full disk, an edit):
    every array's byte length is checked against (n, v, d) before any memmap is opened (a
    memmap opened ``r+`` on a short file silently zero-fills it back to full size, and the run
    would select from zero rows), and ``state.json`` records a crc32 of every array (and of
    errors.json) whenever the feature stage ends, normally or by an error or Ctrl-C. A resume
    verifies them before using a row. The checksums are dropped from ``state.json`` *before*
    the arrays change (``begin_changes``), so a run killed mid-write (SIGKILL, power loss)
    leaves no stale checksum: its store is checked for lengths and done-mask values only, and
    sealed again when that run's feature stage ends.

    On a mismatch the store is refused, not repaired: a whole-file checksum cannot say which
    rows are damaged, a file damaged once is not to be trusted for its other rows, and the
    features are a cache that costs only recomputation. The message names the file and says
    to delete the work dir (or set another ``work_dir``).
    """

    def __init__(self, work, n, v, d, depends_on, rank=0):
        self.work, self.n, self.v, self.d = work, int(n), int(v), int(d)
        self.paths = {k: os.path.join(work, f) for k, f in
                      (('feat', 'features.f16'), ('stats', 'stats.f32'), ('done', 'done.u8'),
                       ('fp', 'fingerprints.i64'), ('errors', 'errors.json'), ('state', STATE_FILE))}
        state = {'state_version': STATE_VERSION, 'num_pairs': self.n, 'views': self.v, 'dim': self.d,
                 'depends_on': depends_on}
        self._state, self._dirty = state, True  # dirty: state.json holds no checksums of the arrays as they are
        if rank == 0:
            os.makedirs(work, exist_ok=True)
            if os.path.isfile(self.paths['state']):
                sums = self._check_resume(state)
                self._verify(sums)
                if sums is not None:
                    self._state, self._dirty = dict(state, checksums=sums), False
            else:
                claim_work_dir(work)  # arrays of our names are replaced only in a work dir of ours
                for k in ('feat', 'stats', 'done', 'fp', 'errors'):
                    if os.path.exists(self.paths[k]):
                        os.remove(self.paths[k])
                self._create()
                write_json_atomic(self.paths['state'], state, default=str)
        self.resumed = None

    def _check_resume(self, state):
        """The stored state against this run's; returns the recorded checksums (None: unsealed)."""
        try:
            with open(self.paths['state'], encoding='utf-8') as f:
                old = json.load(f)
            if not isinstance(old, dict):
                raise ValueError('not a JSON object')
        except (OSError, ValueError) as exc:
            raise WorkDirMismatch(f'{self.paths["state"]} is unreadable ({exc}); delete the work dir {self.work}.')
        sums = old.pop('checksums', None)
        if old.get('state_version') != state['state_version']:
            raise WorkDirMismatch(f'Work dir {self.work} was written by another version of the distiller (state '
                                  f'version {old.get("state_version")}, this one writes {state["state_version"]}); '
                                  f'delete it (or set another `work_dir`) to start over.')
        new_flat = _flat({k: v for k, v in state.items()})
        old_flat = _flat(old)
        new_flat = json.loads(json.dumps(new_flat, default=str))
        changed = [k for k in sorted(set(new_flat) | set(old_flat)) if new_flat.get(k) != old_flat.get(k)]
        if changed:
            diffs = '; '.join(f'{k.replace("depends_on.", "")} was {old_flat.get(k)!r}, now {new_flat.get(k)!r}'
                              for k in changed[:6])
            raise WorkDirMismatch(
                f'Work dir {self.work} holds features from a run with different options: {diffs}'
                f'{" ..." if len(changed) > 6 else ""}. Refusing to resume. Restore the option(s), set another '
                f'`work_dir`, or delete the work dir to start over.')
        for k in ('feat', 'stats', 'done', 'fp'):
            if not os.path.isfile(self.paths[k]):
                raise WorkDirMismatch(f'Work dir {self.work} is incomplete ({self.paths[k]} is missing); '
                                      f'delete it to start over.')
        return sums

    def _damaged(self, path, what):
        return WorkDirMismatch(f'{path} {what}: the feature cache was damaged or changed outside the distiller '
                               f'(a copy cut short, a full disk, an edit), so none of it is used. Delete the work '
                               f'dir {self.work} (or set another `work_dir`) to compute the features again.')

    def _check_sizes(self):
        """Every array's byte length against (n, v, d), by stat, before any memmap is opened."""
        shapes = {'feat': (self.n, self.v, self.d), 'stats': (self.n, 3), 'done': (self.n,), 'fp': (self.n, 2)}
        for k, _, dtype in ARRAYS:
            want = int(np.prod(shapes[k])) * np.dtype(dtype).itemsize
            try:
                got = os.path.getsize(self.paths[k])
            except OSError as exc:
                raise self._damaged(self.paths[k], f'cannot be read ({exc})') from exc
            if got != want:
                raise self._damaged(self.paths[k], f'is {got} bytes, but its {np.dtype(dtype).name} array of shape '
                                                   f'{shapes[k]} ({self.n} pairs) needs {want}')

    def _checksums(self):
        files = {}
        for k in ('feat', 'stats', 'done', 'fp', 'errors'):
            path = self.paths[k]
            files[os.path.basename(path)] = file_crc32(path) if os.path.isfile(path) else None
        return {'algorithm': CHECKSUM, 'files': files}

    def _verify(self, sums):
        self._check_sizes()
        if sums is None:  # unsealed (a killed run, or a store of an earlier version): the done-mask must be sane
            done = np.fromfile(self.paths['done'], np.uint8)
            if (done > 2).any():
                raise self._damaged(self.paths['done'], f'holds values other than 0, 1, 2 (first at row '
                                                        f'{int(np.flatnonzero(done > 2)[0])})')
            return
        if not isinstance(sums, dict) or sums.get('algorithm') != CHECKSUM or not isinstance(sums.get('files'), dict):
            raise self._damaged(self.paths['state'], f'has checksums this distiller cannot read ({sums!r:.80})')
        now = self._checksums()['files']
        for name, want in sums['files'].items():
            if now.get(name, 'unknown') != want:
                path = os.path.join(self.work, name)
                got = now.get(name)
                what = 'is missing' if got is None else f'does not match the crc32 recorded when its features were ' \
                    f'written ({got:08x}, recorded {want if want is None else format(want, "08x")})'
                raise self._damaged(path, what)

    def begin_changes(self):
        """Call before the arrays change: the recorded checksums are dropped from state.json
        first, so a kill in the middle never leaves checksums that no longer hold."""
        if not self._dirty:
            self._state.pop('checksums', None)
            write_json_atomic(self.paths['state'], self._state, default=str)
            self._dirty = True

    def seal(self):
        """Record the checksums of the arrays as they are on disk (end of the feature stage)."""
        if not self._dirty:
            return
        for k in ('feat', 'stats', 'done', 'fp'):
            arr = getattr(self, k, None)
            if isinstance(arr, np.memmap) and arr.mode != 'r':
                arr.flush()
        self._state['checksums'] = self._checksums()
        write_json_atomic(self.paths['state'], self._state, default=str)
        self._dirty = False

    def _create(self):
        np.memmap(self.paths['feat'], np.float16, 'w+', shape=(self.n, self.v, self.d)).flush()
        np.memmap(self.paths['stats'], np.float32, 'w+', shape=(self.n, 3)).flush()
        np.memmap(self.paths['done'], np.uint8, 'w+', shape=(self.n,)).flush()
        np.memmap(self.paths['fp'], np.int64, 'w+', shape=(self.n, 2)).flush()

    def open(self, mode='r+'):
        """The arrays as memmaps (``r`` or ``r+``, never a mode that creates or extends a file)."""
        if mode not in ('r', 'r+'):
            raise ValueError(f'FeatureStore.open: mode {mode!r}; use r or r+ (w+ would replace the features).')
        self._check_sizes()
        self.feat = np.memmap(self.paths['feat'], np.float16, mode, shape=(self.n, self.v, self.d))
        self.stats = np.memmap(self.paths['stats'], np.float32, mode, shape=(self.n, 3))
        self.done = np.memmap(self.paths['done'], np.uint8, mode, shape=(self.n,))
        self.fp = np.memmap(self.paths['fp'], np.int64, mode, shape=(self.n, 2))
        return self

    def errors(self):
        if os.path.isfile(self.paths['errors']):
            try:
                with open(self.paths['errors'], encoding='utf-8') as f:
                    return {int(k): v for k, v in json.load(f).items()}
            except (ValueError, AttributeError) as exc:
                raise self._damaged(self.paths['errors'], f'is unreadable ({exc})') from exc
        return {}

    def write(self, idx, feats, stats, errors, fps):
        """Rows first, flushed, then the done-mask: a kill never marks a row that is not on disk."""
        self.fp[idx] = fps
        self.fp.flush()
        ok = [j for j, e in enumerate(errors) if not e]
        if ok:
            rows = idx[ok]
            self.feat[rows] = feats[ok]
            self.stats[rows] = stats[ok]
            self.feat.flush()
            self.stats.flush()
        bad = {int(idx[j]): e for j, e in enumerate(errors) if e}
        if bad:
            all_err = self.errors()
            all_err.update(bad)
            write_json_atomic(self.paths['errors'], {str(k): v for k, v in sorted(all_err.items())})
        self.done[idx] = np.array([2 if e else 1 for e in errors], np.uint8)
        self.done.flush()


# ---------------------------------------------------------------- extraction
def assign_batches(remaining, batch_size, world, rank, workers):
    """This rank's batches of ``remaining`` (consecutive indices, ``batch_size`` each), in the
    order its DataLoader should see them, and the number of gather rounds.

    Rank r takes the r-th contiguous block of batches, and inside a rank the order interleaves
    ``workers`` balanced contiguous runs (the longer ones first), so the DataLoader's round-robin
    (position p -> worker p % workers) hands each worker one run. Crop units of an image are
    consecutive, so each image is decoded by one process, not by every rank and worker that
    draws one of its batches. Batch composition does not depend on the world size."""
    chunks = [remaining[s:s + batch_size] for s in range(0, len(remaining), batch_size)]
    rounds = -(-len(chunks) // world) if chunks else 0
    block = chunks[rank * rounds:(rank + 1) * rounds]
    return [block[j] for j in worker_order(len(block), workers)], rounds


def _as_is(item):
    return item


def loaded(ds, workers, order=None):
    """Items of ``ds`` (in ``order``, default in turn), in that order, read in ``workers``
    processes (0 or a single item: here). One item is one DataLoader batch, passed as is."""
    order = list(range(len(ds))) if order is None else order
    if workers <= 0 or len(ds) < 2:
        for j in order:
            yield ds[j]
        return
    yield from torch.utils.data.DataLoader(ds, batch_size=None, sampler=order, num_workers=min(workers, len(ds)),
                                           prefetch_factor=2, collate_fn=_as_is)


def worker_order(n, workers):
    """Positions 0..n-1 ordered so that DataLoader's round-robin (position p -> worker p % workers)
    hands each worker one balanced contiguous run, the longer runs first."""
    runs = np.array_split(np.arange(n), max(1, int(workers)))
    return [int(r[i]) for i in range(max(map(len, runs), default=0)) for r in runs if i < len(r)]


def extract_features(source, store, model, fopt, on_error='raise', rank=0, world=1, progress=True,
                     interrupt_after=None, on_error_option='source.on_error'):
    """Embed every pair not yet done; rank 0 writes. Returns dict of timings/counters.

    ``on_error``: 'raise' | 'skip' for every pair, or a bool array (N,), True where a pair that
    cannot be used raises (several tasks, each with its own on_error). ``on_error_option``:
    the option named in the error (a str, or fn(row) -> str).
    ``interrupt_after`` (int | None): raise KeyboardInterrupt after that many rounds, or
    SIGKILL this process when negative (test hooks for resume; TRIPLED_DISTILL_INTERRUPT_AFTER).
    """
    from tqdm import tqdm
    raise_rows = np.full(store.n, on_error == 'raise') if isinstance(on_error, str) else np.asarray(on_error, bool)
    kinds = KINDS[fopt['image']]
    embedder = _Embedder(model, fopt, (1 + int(fopt['local_views'])) * len(kinds))
    remaining = _remaining(store, raise_rows, rank, world)
    total_done = store.n - len(remaining)
    workers = int(fopt['num_workers'])
    mine, rounds = assign_batches(remaining, int(fopt['batch_size']), world, rank, workers)
    mine += [np.zeros(0, np.int64)] * (rounds - len(mine))  # a rank with fewer batches still gathers
    ds = EmbedInputs(source, kinds, fopt['input_size'], fopt['local_views'], fopt['decode_size'], fopt['seed'])
    loader = torch.utils.data.DataLoader(ds, batch_sampler=[c.tolist() for c in mine if len(c)], num_workers=workers,
                                         collate_fn=_collate, pin_memory=embedder.device.type == 'cuda',
                                         prefetch_factor=4 if workers else None, persistent_workers=False)
    it = iter(loader)
    t0 = time.time()
    bar = tqdm(total=store.n, initial=total_done, desc='features', unit='img', disable=not (progress and rank == 0),
               dynamic_ncols=True)
    try:
        for r in range(rounds):
            part = embedder(next(it)) if len(mine[r]) else embedder.empty(store.d)
            idx, f16, stats, errs, fps = _checked(_gathered(part, world), source, fopt, raise_rows, on_error_option)
            if rank == 0:
                store.write(idx, f16, stats, errs, fps)
            bar.update(len(idx))
            _maybe_interrupt(interrupt_after, r, rounds)
    except BaseException:
        if rank == 0:  # Ctrl-C or an error: the arrays on disk are consistent (rows before marks); record them
            try:
                store.seal()
            except Exception:  # noqa: BLE001 - the original error matters; unsealed stores are still checked
                pass
        raise
    finally:
        bar.close()
        del it
    if rank == 0:
        store.seal()
    return {'embedded_now': int(len(remaining)), 'resumed_from': int(total_done), 'seconds': time.time() - t0,
            'forward_seconds': embedder.seconds}


def _remaining(store, raise_rows, rank, world):
    """Rows still to embed, from rank 0's done-mask (broadcast to every rank). Pairs skipped by an
    earlier ``on_error: skip`` run are retried where they now raise."""
    remaining = None
    if rank == 0:
        store.open('r+')
        retry = (np.asarray(store.done) == 2) & raise_rows
        if retry.any() or (np.asarray(store.done) == 0).any():
            store.begin_changes()  # before anything is written: no checksum survives a change
        if retry.any():
            store.done[retry] = 0
            store.done.flush()
        remaining = np.flatnonzero(np.asarray(store.done) == 0)
    if world > 1:
        obj = [remaining]
        torch.distributed.broadcast_object_list(obj, src=0)
        remaining = obj[0]
    return remaining


class _Embedder:
    """The frozen model on its device: a collated batch -> (indices, features, stats, errors,
    fingerprints) as numpy; ``seconds`` sums the forward time."""

    def __init__(self, model, fopt, views_per_pair):
        from tripled_basicsr.distill.backbone import normalization
        self.device = resolve_device(fopt['device'], int(os.environ.get('LOCAL_RANK', 0)), 'features.device')
        self.model = model.to(self.device)
        self.mean, self.std = normalization(self.model)
        self.amp = self.device.type == 'cuda' and fopt.get('amp', 'auto') in ('auto', True)
        self.v, self.s, self.seconds = views_per_pair, int(fopt['input_size']), 0.0

    def __call__(self, batch):
        from tripled_basicsr.distill.backbone import embed
        idx, views, stats, errs, fps = batch
        tf = time.time()
        x = views.to(self.device, non_blocking=True).reshape(-1, self.s, self.s, 3)
        x = x.permute(0, 3, 1, 2).float().div_(255)
        with torch.no_grad(), torch.autocast(self.device.type, enabled=self.amp):
            pooled, tvar = embed(self.model, x, self.mean, self.std)
        feats = pooled.reshape(len(idx), self.v, -1).cpu().numpy()
        tvar = tvar.reshape(len(idx), self.v)[:, 0].cpu().numpy()
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        self.seconds += time.time() - tf
        stats = np.concatenate([stats.numpy(), tvar[:, None]], 1).astype(np.float32)
        return idx.numpy(), feats, stats, errs, fps.numpy()

    def empty(self, d):
        return (np.zeros(0, np.int64), np.zeros((0, self.v, d), np.float32), np.zeros((0, 3), np.float32), [],
                np.zeros((0, 2), np.int64))


def _gathered(part, world):
    """One round's results of every rank, concatenated (rank 0 writes them)."""
    if world <= 1:
        return part
    parts = [None] * world
    torch.distributed.all_gather_object(parts, part)
    cat = [np.concatenate([p[k] for p in parts]) for k in (0, 1, 2, 4)]
    return cat[0], cat[1], cat[2], [e for p in parts for e in p[3]], cat[3]


def _checked(part, source, fopt, raise_rows, on_error_option):
    """Refuses non-finite features and pairs that cannot be used where they must raise.
    -> (indices, float16 features, stats, errors, fingerprints)."""
    idx, feats, stats, errs, fps = part
    ok = np.array([not e for e in errs], bool)
    if ok.any() and not np.isfinite(feats[ok]).all():
        bad = [int(i) for i, f in zip(idx[ok], feats[ok]) if not np.isfinite(f).all()]
        raise FeatureError(
            f'The backbone produced NaN/inf features for {len(bad)} of {int(ok.sum())} pairs in this batch '
            f'(first: {source.keys[bad[0]]!r}). The weights are probably broken (features.checkpoint '
            f'{fopt.get("checkpoint")!r}) or half precision overflowed (set features.amp: false).')
    f16 = feats.astype(np.float16)
    if ok.any() and not np.isfinite(f16[ok]).all():
        raise FeatureError('Features overflow float16 (|value| > 65504); the backbone outputs are not '
                           'normalised. Use a model with a final norm layer or another checkpoint.')
    bad_j = [j for j, e in enumerate(errs) if e and raise_rows[int(idx[j])]]
    if bad_j:
        j = bad_j[0]
        opt_name = on_error_option(int(idx[j])) if callable(on_error_option) else on_error_option
        raise FeatureError(f'Cannot use pair {source.keys[int(idx[j])]!r}: {errs[j]}\n'
                           f'Fix or remove the pair, or set `{opt_name}: skip` to leave such pairs out '
                           f'(they are listed in tripled_meta.json).')
    return idx, f16, stats, errs, fps


def _maybe_interrupt(interrupt_after, r, rounds):
    """Test hook: stop after round ``r`` + 1 (KeyboardInterrupt, or SIGKILL when negative)."""
    if interrupt_after is not None and r + 1 >= abs(interrupt_after) and r + 1 < rounds:
        if interrupt_after < 0:  # a hard kill: no cleanup, no finally blocks
            import signal
            os.kill(os.getpid(), signal.SIGKILL)
        raise KeyboardInterrupt(f'simulated interruption after {r + 1} rounds')


def pair_features(feat, kinds_count, views_per_kind, chunk=65536):
    """(N, V, D) float16 views -> (N, kinds*D) float32 pair features, L2-normalised.

    Views of one image kind are L2-normalised and averaged, kinds are concatenated.
    """
    n, v, d = feat.shape
    out = np.empty((n, kinds_count * d), np.float32)
    for s in range(0, n, chunk):
        x = np.asarray(feat[s:s + chunk], np.float32).reshape(-1, kinds_count, views_per_kind, d)
        x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        x = x.mean(2).reshape(x.shape[0], -1)
        out[s:s + chunk] = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return out
