"""Paired (GT, LQ) sources in the layouts BasicSR users already have.

* two folders, paired by BasicSR's ``filename_tmpl`` (LQ name = tmpl.format(GT stem) + ext);
* two BasicSR LMDBs (``*.lmdb`` with ``meta_info.txt``, e.g. made by BasicSR's
  ``scripts/data_preparation/create_lmdb.py``), paired by key;
* two folders plus a ``meta_info`` list of GT names (BasicSR's ``meta_info_file``).

A source never writes anything; it only lists pairs and decodes them. LMDB environments
are opened lazily through the shared per-process handles of ``utils/lmdb_io.py`` (re-opened
after a fork), so a source can be used from DataLoader workers and next to a dataset that
reads the same LMDB.
"""
import os
import re

import cv2
import numpy as np

from tripled_basicsr.utils.img import to_bgr_uint8
from tripled_basicsr.utils.lmdb_io import is_lmdb, open_lmdb_readonly

def _relative_files(root):
    """Paths (relative to ``root``, '/'-separated) of the files under ``root``, hidden entries left out.

    Like BasicSR's ``scandir(root, recursive=True)``, without importing BasicSR (seconds at
    start-up) and without its crash on a hidden file such as ``.DS_Store``."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith('.')]
        rel = os.path.relpath(dirpath, root)
        for name in filenames:
            if not name.startswith('.'):
                yield name if rel == '.' else f'{rel}/{name}'.replace(os.sep, '/')


IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
_KEY_OK = re.compile(r'^[\x21-\x7e]+$')


class SourceError(ValueError):
    pass


def sanitize_key(name):
    """An LMDB key for a relative file path: ASCII, no dots, no path separators."""
    stem = os.path.splitext(name)[0].replace('\\', '/')
    key = stem.replace('/', '__').replace('.', '_').replace(' ', '_')
    if not _KEY_OK.match(key):
        key = key.encode('ascii', 'replace').decode('ascii').replace('?', '_')
    return key


def read_lmdb_meta_info(lmdb_path):
    """Parse ``meta_info.txt`` of a BasicSR LMDB -> list of (key, (h, w, c))."""
    meta = os.path.join(lmdb_path, 'meta_info.txt')
    if not os.path.isfile(meta):
        raise SourceError(f'{lmdb_path} has no meta_info.txt; a BasicSR LMDB lists its keys there '
                          f'(create it with BasicSR\'s create_lmdb.py or tripled_basicsr.pack).')
    out = []
    with open(meta, encoding='utf-8') as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(' ')
            name = parts[0]
            key = os.path.splitext(name)[0]
            if '.' in key:
                raise SourceError(
                    f'{meta}:{lineno}: LMDB key {key!r} contains a dot. BasicSR takes everything '
                    f'before the first dot as the key, so this LMDB cannot be read reliably. '
                    f'Rebuild it with keys without dots (e.g. replace dots in file names by "_").')
            shape = None
            if len(parts) > 1:
                m = re.match(r'\((\d+),(\d+),(\d+)\)', parts[1])
                if m:
                    shape = tuple(int(v) for v in m.groups())
            out.append((key, shape))
    return out


class PairedSource:
    """A list of GT/LQ pairs and a way to decode them.

    Args:
        dataroot_gt (str): GT folder or ``*.lmdb``.
        dataroot_lq (str): LQ folder or ``*.lmdb`` (same kind as GT).
        filename_tmpl (str): BasicSR's template for LQ names (folders only). Default '{}'.
        meta_info_file (str | None): optional list of GT names (folders only).
        scale (int): LQ is GT / scale.
        on_missing (str): 'raise' (default): a GT without LQ or an LQ without GT is an error;
            'skip': such files are left out and listed in ``skipped``.
    Attributes:
        keys (list[str]): LMDB-safe keys, sorted; ``refs[i]`` = (gt_ref, lq_ref).
        skipped (list[dict]): unpaired files left out (``gt_path`` or ``lq_path``, ``reason``).
    """

    def __init__(self, dataroot_gt, dataroot_lq, filename_tmpl='{}', meta_info_file=None, scale=1,
                 on_missing='raise'):
        if on_missing not in ('raise', 'skip'):
            raise ValueError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}.")
        self.on_missing = on_missing
        self.skipped = []
        if not dataroot_gt or not dataroot_lq:
            raise SourceError('Both dataroot_gt (--gt) and dataroot_lq (--lq) are required.')
        self.dataroot_gt = os.path.abspath(os.path.expanduser(dataroot_gt))
        self.dataroot_lq = os.path.abspath(os.path.expanduser(dataroot_lq))
        self.filename_tmpl = filename_tmpl or '{}'
        self.scale = int(scale)
        for root, opt in ((self.dataroot_gt, 'dataroot_gt'), (self.dataroot_lq, 'dataroot_lq')):
            if not os.path.exists(root):
                raise SourceError(f'{opt}: {root} does not exist.')
        gt_lmdb, lq_lmdb = is_lmdb(self.dataroot_gt), is_lmdb(self.dataroot_lq)
        if gt_lmdb != lq_lmdb:
            raise SourceError(f'dataroot_gt ({self.dataroot_gt}) and dataroot_lq ({self.dataroot_lq}) must both be '
                              f'folders or both be BasicSR LMDBs.')
        self.kind = 'lmdb' if gt_lmdb else ('meta_info' if meta_info_file else 'folder')
        self.meta_info_file = meta_info_file
        if self.kind == 'lmdb':
            self._list_lmdb()
        else:
            self._list_folders(meta_info_file)
        if not self.keys:
            raise SourceError(f'No image pairs found in {self.dataroot_gt} / {self.dataroot_lq}.')

    def __len__(self):
        return len(self.keys)

    # ---------------------------------------------------------------- listing
    def _list_lmdb(self):
        gt = read_lmdb_meta_info(self.dataroot_gt)
        lq = read_lmdb_meta_info(self.dataroot_lq)
        gt_keys, lq_keys = [k for k, _ in gt], [k for k, _ in lq]
        missing_lq = sorted(set(gt_keys) - set(lq_keys))
        missing_gt = sorted(set(lq_keys) - set(gt_keys))
        if missing_lq:
            self._unpaired(f'GT key {missing_lq[0]!r} (and {len(missing_lq) - 1} more) has no LQ in '
                           f'{self.dataroot_lq}. Both LMDBs must hold the same keys; add the missing '
                           f'LQ images or drop the GT ones.',
                           [{'gt_path': f'{self.dataroot_gt}:{k}', 'reason': 'no LQ partner'} for k in missing_lq])
        if missing_gt:
            self._unpaired(f'LQ key {missing_gt[0]!r} (and {len(missing_gt) - 1} more) has no GT in '
                           f'{self.dataroot_gt}. Both LMDBs must hold the same keys.',
                           [{'lq_path': f'{self.dataroot_lq}:{k}', 'reason': 'no GT partner'} for k in missing_gt])
        self.keys = sorted(set(gt_keys) & set(lq_keys))
        self.refs = [(k, k) for k in self.keys]
        self.names = list(self.keys)

    def _list_folders(self, meta_info_file):
        for root in (self.dataroot_gt, self.dataroot_lq):
            if not os.path.isdir(root):
                raise SourceError(f'{root} is not a folder (nor a BasicSR .lmdb).')
        if meta_info_file:
            if not os.path.isfile(meta_info_file):
                raise SourceError(f'meta_info_file {meta_info_file} does not exist.')
            with open(meta_info_file, encoding='utf-8') as f:
                gt_names = [ln.strip().split(' ')[0] for ln in f if ln.strip()]
        else:
            gt_names = sorted(p for p in _relative_files(self.dataroot_gt)
                              if p.lower().endswith(IMG_EXTENSIONS))
        lq_names = set(p for p in _relative_files(self.dataroot_lq) if p.lower().endswith(IMG_EXTENSIONS))
        pairs, used_lq = [], set()
        for gt_name in gt_names:
            sub, base = os.path.split(gt_name)
            stem, ext = os.path.splitext(base)
            try:
                lq_name = os.path.join(sub, f'{self.filename_tmpl.format(stem)}{ext}')
            except (IndexError, KeyError) as exc:
                raise SourceError(f'filename_tmpl {self.filename_tmpl!r} is not a valid template with one '
                                  f'"{{}}" field: {exc}') from exc
            if lq_name not in lq_names:
                self._unpaired(f'GT image {gt_name!r} has no LQ partner: expected {lq_name!r} in '
                               f'{self.dataroot_lq} (filename_tmpl {self.filename_tmpl!r}). Add it, fix '
                               f'filename_tmpl, or remove the GT image.',
                               [{'gt_path': os.path.join(self.dataroot_gt, gt_name),
                                 'reason': f'no LQ partner (expected {lq_name})'}])
                continue
            used_lq.add(lq_name)
            pairs.append((gt_name, lq_name))
        if not meta_info_file:
            extra = sorted(lq_names - used_lq)
            if extra:
                self._unpaired(f'LQ image {extra[0]!r} (and {len(extra) - 1} more) in {self.dataroot_lq} '
                               f'has no GT partner in {self.dataroot_gt}. Remove it or add its GT.',
                               [{'lq_path': os.path.join(self.dataroot_lq, e), 'reason': 'no GT partner'}
                                for e in extra])
        keys = [sanitize_key(g) for g, _ in pairs]
        seen = {}
        for (g, _), k in zip(pairs, keys):
            if k in seen:
                raise SourceError(f'GT files {seen[k]!r} and {g!r} map to the same LMDB key {k!r}; rename one.')
            seen[k] = g
        order = sorted(range(len(keys)), key=lambda i: keys[i])
        self.keys = [keys[i] for i in order]
        self.refs = [(os.path.join(self.dataroot_gt, pairs[i][0]), os.path.join(self.dataroot_lq, pairs[i][1]))
                     for i in order]
        self.names = [pairs[i][0] for i in order]

    def _unpaired(self, message, entries):
        if self.on_missing == 'raise':
            raise SourceError(message)
        self.skipped.extend(entries)

    # ---------------------------------------------------------------- reading
    def source_path(self, index, which='gt'):
        ref = self.refs[index][0 if which == 'gt' else 1]
        if self.kind == 'lmdb':
            return f'{self.dataroot_gt if which == "gt" else self.dataroot_lq}:{ref}'
        return ref

    def read_bytes(self, index, which='gt'):
        """Encoded bytes of one image of pair ``index``; ``which`` is 'gt' or 'lq'."""
        ref = self.refs[index][0 if which == 'gt' else 1]
        if self.kind == 'lmdb':
            with open_lmdb_readonly(self.dataroot_gt if which == 'gt' else self.dataroot_lq).begin() as txn:
                buf = txn.get(ref.encode('ascii'))
            if buf is None:
                raise SourceError(f'{self.source_path(index, which)}: key listed in meta_info.txt but missing '
                                  f'from the LMDB data. Rebuild the LMDB.')
            return bytes(buf)
        try:
            with open(ref, 'rb') as f:
                return f.read()
        except OSError as exc:
            raise SourceError(f'{ref}: cannot read ({exc}).') from exc

    def read(self, index, which='gt', flags=cv2.IMREAD_UNCHANGED):
        """Decode one image -> HxWx3 uint8 BGR (see ``to_bgr_uint8`` for the conversions)."""
        buf = self.read_bytes(index, which)
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), flags) if buf else None
        return to_bgr_uint8(img, self.source_path(index, which))

    def read_pair(self, index):
        """-> (gt, lq) uint8 BGR, checked: LQ size == GT size / scale."""
        gt, lq = self.read(index, 'gt'), self.read(index, 'lq')
        check_pair_shapes(gt, lq, self.scale, self.keys[index], self.source_path(index, 'gt'))
        return gt, lq

    def describe(self):
        return {'kind': self.kind, 'dataroot_gt': self.dataroot_gt, 'dataroot_lq': self.dataroot_lq,
                'filename_tmpl': self.filename_tmpl, 'meta_info_file': self.meta_info_file, 'scale': self.scale,
                'num_pairs': len(self), 'num_unpaired_skipped': len(self.skipped)}


def check_pair_shapes(gt, lq, scale, key, where=''):
    gh, gw = gt.shape[:2]
    lh, lw = lq.shape[:2]
    if lh * scale != gh or lw * scale != gw:
        raise SourceError(f'Pair {key!r} ({where}): LQ is {lw}x{lh} but GT is {gw}x{gh}; with scale {scale} '
                          f'LQ must be exactly GT / {scale} = {gw / scale:g}x{gh / scale:g}. Check --scale, '
                          f'or mod-crop the GT to a multiple of the scale before packing.')


def write_pair_folders(root, pairs, ext='.png', compress_level=1, params=None, lq_tmpl='{}'):
    """Write ``(name, gt, lq)`` pairs in the folder layout a PairedSource (and BasicSR's
    ``PairedImageDataset``) reads: ``root/gt/NAME.EXT`` and ``root/lq/LQ_TMPL(NAME).EXT``.

    The one image-folder writer of the package (demo data, test and benchmark data). PNGs
    are encoded as in the distilled format (``compress_level``, BasicSR's default 1); other
    extensions with ``cv2.imencode(ext, img, params)``. Returns ``(gt_dir, lq_dir)``.
    """
    from tripled_basicsr.data.distilled_format import encode_png
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
