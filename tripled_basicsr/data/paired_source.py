"""Paired (GT, LQ) sources in the layouts BasicSR users already have.

* two folders, paired by BasicSR's ``filename_tmpl`` (LQ name = tmpl.format(GT stem) + ext);
* two BasicSR LMDBs (``*.lmdb`` with ``meta_info.txt``, e.g. made by BasicSR's
  ``scripts/data_preparation/create_lmdb.py``), paired by key;
* two folders plus a ``meta_info`` list of GT names (BasicSR's ``meta_info_file``).

A source never writes anything; it only lists pairs and decodes them. LMDB environments
are opened lazily through the shared per-process handles of ``utils/lmdb_io.py`` (re-opened
after a fork), so a source can be used from DataLoader workers and next to a dataset that
reads the same LMDB.

Hostile files are refused by what they are, before they are decoded: only regular files
(and links to them) are listed or opened (a FIFO named ``x.png`` would block the reader
forever), and an image whose header claims more than ``max_pixels`` pixels is refused from
its header (a few bytes can claim 100000 x 100000).
"""
import io
import os
import re
import stat
import string
import struct
import threading
import warnings

import cv2
import numpy as np

from tripled_basicsr.utils.img import to_bgr_uint8
from tripled_basicsr.utils.lmdb_io import is_lmdb, open_lmdb_readonly
from tripled_basicsr.utils.log import warn

# source.max_pixels default: 16384 x 16384 = 2**28 pixels per image (an 8K frame, 7680 x 4320, is 33 M);
# OpenCV itself refuses to decode more than CV_IO_MAX_IMAGE_PIXELS (2**30 by default)
DEFAULT_MAX_PIXELS = 1 << 28


def _file_kind(path):
    """What a path that is not a regular file is, in words (for messages)."""
    try:
        mode = os.stat(path).st_mode  # stat never opens: safe on a FIFO
    except OSError:
        return 'a broken symbolic link' if os.path.islink(path) else 'missing'
    for test, word in ((stat.S_ISFIFO, 'a FIFO (named pipe)'), (stat.S_ISSOCK, 'a socket'),
                       (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'),
                       (stat.S_ISDIR, 'a folder')):
        if test(mode):
            return word
    return 'not a regular file'


def open_regular(path, what='an image'):
    """Open ``path`` for reading (binary) only when it is a regular file (or a link to one).

    Opened non-blocking and checked on the open descriptor, so a FIFO (which blocks a plain
    ``open`` until some program writes to it), a socket or a device is refused at once and
    race-free, with a message naming it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NONBLOCK', 0))
    except OSError as exc:
        raise SourceError(f'{path}: cannot read ({exc}).') from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise SourceError(f'{path} is {_file_kind(path)}, not a regular file, so it is not read as {what}. '
                              f'Replace it by a regular file, or remove it.')
        return os.fdopen(fd, 'rb')
    except BaseException:
        os.close(fd)
        raise


def _relative_files(root, odd=None, _rel=''):
    """Paths (relative to ``root``, '/'-separated) of the files under ``root``, hidden entries left out.

    Like BasicSR's ``scandir(root, recursive=True)``, without importing BasicSR (seconds at
    start-up) and without its crash on a hidden file such as ``.DS_Store``. Only regular files
    and links to regular files are listed; links to folders are not followed (as ``os.walk``).
    Anything else (a FIFO, socket, device, broken link) is appended to ``odd`` when given."""
    try:
        entries = sorted(os.scandir(os.path.join(root, _rel) if _rel else root), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        if e.name.startswith('.'):
            continue
        rel = f'{_rel}/{e.name}' if _rel else e.name
        try:
            if e.is_dir(follow_symlinks=False):
                yield from _relative_files(root, odd, rel)
                continue
            if e.is_file():  # follows links: a regular file or a link to one (a FIFO etc. is not)
                yield rel
                continue
            if e.is_dir():  # a link to a folder: not followed
                continue
        except OSError:
            pass
        if odd is not None:
            odd.append(rel)


# ---------------------------------------------------------------- image headers
def image_size(buf):
    """(h, w) from a PNG/JPEG/BMP header without decoding; None when unknown."""
    b = bytes(buf[:64]) if len(buf) >= 24 else b''
    if b.startswith(b'\x89PNG\r\n\x1a\n') and b[12:16] == b'IHDR':
        w, h = struct.unpack('>II', b[16:24])
        return h, w
    if b.startswith(b'BM') and len(b) >= 26:
        w, h = struct.unpack('<ii', b[18:26])
        return abs(h), w
    if b.startswith(b'\xff\xd8'):
        mv = memoryview(buf)
        i, n = 2, len(buf)
        while i + 9 < n:
            if mv[i] != 0xFF:
                i += 1
                continue
            marker = mv[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            seg = struct.unpack('>H', bytes(mv[i + 2:i + 4]))[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack('>HH', bytes(mv[i + 5:i + 9]))
                return h, w
            i += 2 + seg
    return None


_PIL_LOCK = threading.Lock()


def _pil_size(fp):
    """(h, w) of an image file object from Pillow's header parser (TIFF, WebP, PNM, ...), without
    decoding; None when Pillow is missing or cannot parse it. Pillow's own decompression-bomb
    limit is lifted for the call (under a lock): the size is what we want to know."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow ships with torchvision / BasicSR
        return None
    with _PIL_LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                fp.seek(0)
                im = Image.open(fp)  # reads the header only; a file object we pass is not closed by Pillow
                w, h = im.size
            return int(h), int(w)
        except Exception:  # noqa: BLE001 - not an image Pillow knows: the decoder reports it
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = old


def buffer_size(buf):
    """(h, w) of encoded image bytes from their header (ours, then Pillow's); None when unknown."""
    return image_size(buf) or _pil_size(io.BytesIO(bytes(buf)))


def file_size(path):
    """(h, w) of an image file from its header, reading a few KB (a whole JPEG whose size
    marker comes after large metadata); None when unknown. Only a regular file is opened."""
    with open_regular(path) as f:
        head = f.read(1 << 16)
        hw = image_size(head)
        if hw is None and head.startswith(b'\xff\xd8'):
            hw = image_size(head + f.read())
        if hw is None:
            hw = _pil_size(f)
    return hw


def check_pixels(hw, path, max_pixels, option='max_pixels'):
    """Refuse an image whose size ``hw`` (from its header) is empty or above ``max_pixels``
    (0 or None: no limit). Raises SourceError naming the file, the size and the option."""
    if hw is None:
        return
    h, w = int(hw[0]), int(hw[1])
    if h <= 0 or w <= 0:
        raise SourceError(f'{path}: its header says the image is {w}x{h}: not a valid image. Remove or replace it.')
    if max_pixels and h * w > max_pixels:
        raise ImageTooLarge(f'{path}: its header says the image is {w}x{h} = {h * w / 1e6:.1f} M pixels, more than '
                          f'{option} = {max_pixels} ({max_pixels / 1e6:.1f} M). Decoding it would need '
                          f'{3 * h * w / 2**30:.1f} GiB. Remove the file, or raise {option} (0 = no limit) if the '
                          f'image is genuine.')


def check_filename_tmpl(tmpl, option='filename_tmpl', error=None):
    """A BasicSR ``filename_tmpl`` must hold exactly one ``{}`` (the GT name without extension)
    and format cleanly; raises ``error`` (SourceError) naming ``option``. Returns ``tmpl``."""
    error = error or SourceError
    how = ('Write the LQ name with one "{}" for the GT file name without extension, e.g. "{}" or "{}x4"; '
           'write a literal brace twice ("{{" or "}}").')
    if not isinstance(tmpl, str) or not tmpl:
        raise error(f'{option} must be a non-empty string; got {tmpl!r}. {how}')
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(tmpl) if name is not None]
    except ValueError as exc:
        raise error(f'{option} {tmpl!r} is not a valid template ({exc}). {how}') from None
    if fields != [('', '', None)]:
        shown = ', '.join('{' + n + (f'!{c}' if c else '') + (f':{sp}' if sp else '') + '}' for n, sp, c in fields)
        raise error(f'{option} {tmpl!r} must contain exactly one "{{}}" and no other field; it has '
                    f'{len(fields)} field(s){f" ({shown})" if fields else ""}. {how}')
    tmpl.format('x')  # parses as one plain field: formats cleanly
    return tmpl


IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
_KEY_OK = re.compile(r'^[\x21-\x7e]+$')


class SourceError(ValueError):
    pass


class ImageTooLarge(SourceError):
    """An image whose header claims more pixels than the limit (``max_pixels``)."""


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
        max_pixels (int | None): an image whose header claims more pixels is refused before it
            is decoded (SourceError naming the file, its size and ``max_pixels_option``); 0 or
            None: no limit (OpenCV's own CV_IO_MAX_IMAGE_PIXELS, 2**30, still applies).
        max_pixels_option (str): the option named in that error (``source.max_pixels`` in distill).
    Attributes:
        keys (list[str]): LMDB-safe keys, sorted; ``refs[i]`` = (gt_ref, lq_ref).
        skipped (list[dict]): files left out (``gt_path`` or ``lq_path``, ``reason``): unpaired
            ones (on_missing: skip), and always entries with an image extension that are not
            regular files (a FIFO, socket, device or broken link; also warned about on stderr).
    """

    def __init__(self, dataroot_gt, dataroot_lq, filename_tmpl='{}', meta_info_file=None, scale=1,
                 on_missing='raise', max_pixels=DEFAULT_MAX_PIXELS, max_pixels_option='max_pixels'):
        if on_missing not in ('raise', 'skip'):
            raise ValueError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}.")
        self.on_missing = on_missing
        self.skipped = []
        self.max_pixels, self.max_pixels_option = int(max_pixels or 0), max_pixels_option
        self._headers = None  # header_check() result, computed once
        self._lmdb_shapes = {}
        if not dataroot_gt or not dataroot_lq:
            raise SourceError('Both dataroot_gt (--gt) and dataroot_lq (--lq) are required.')
        self.dataroot_gt = os.path.abspath(os.path.expanduser(dataroot_gt))
        self.dataroot_lq = os.path.abspath(os.path.expanduser(dataroot_lq))
        self.filename_tmpl = check_filename_tmpl(filename_tmpl or '{}')
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
        from tripled_basicsr.utils.lmdb_io import check_lmdb
        for root in (self.dataroot_gt, self.dataroot_lq):  # a truncated LMDB would kill the process (SIGBUS)
            check_lmdb(root)  # at its first read: refused here, naming the file, before any work
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
            if not os.path.exists(meta_info_file):
                raise SourceError(f'meta_info_file {meta_info_file} does not exist.')
            with io.TextIOWrapper(open_regular(meta_info_file, 'a meta_info file'), encoding='utf-8') as f:
                gt_names = [ln.strip().split(' ')[0] for ln in f if ln.strip()]
        else:
            gt_names = sorted(self._image_files(self.dataroot_gt, 'gt_path'))
        lq_names = set(self._image_files(self.dataroot_lq, 'lq_path'))
        pairs, used_lq = [], set()
        for gt_name in gt_names:
            sub, base = os.path.split(gt_name)
            stem, ext = os.path.splitext(base)
            lq_name = os.path.join(sub, f'{self.filename_tmpl.format(stem)}{ext}')
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

    def _image_files(self, root, label):
        """Image files under ``root``; entries with an image extension that are not regular files
        (a FIFO would block the reader forever) are left out with a warning and listed in ``skipped``."""
        odd = []
        names = [p for p in _relative_files(root, odd) if p.lower().endswith(IMG_EXTENSIONS)]
        for rel in odd:
            if rel.lower().endswith(IMG_EXTENSIONS):
                path = os.path.join(root, rel)
                kind = _file_kind(path)
                warn(f'{path} is {kind}, not a regular file: left out of the source.')
                self.skipped.append({label: path, 'reason': f'not a regular file ({kind})'})
        return names

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
        """Encoded bytes of one image of pair ``index``; ``which`` is 'gt' or 'lq'. Only a
        regular file is read, and an image whose header claims more than ``max_pixels`` is
        refused here, before anything decodes it."""
        ref = self.refs[index][0 if which == 'gt' else 1]
        if self.kind == 'lmdb':
            with open_lmdb_readonly(self.dataroot_gt if which == 'gt' else self.dataroot_lq).begin() as txn:
                buf = txn.get(ref.encode('ascii'))
            if buf is None:
                raise SourceError(f'{self.source_path(index, which)}: key listed in meta_info.txt but missing '
                                  f'from the LMDB data. Rebuild the LMDB.')
            buf = bytes(buf)
        else:
            try:
                with open_regular(ref) as f:
                    buf = f.read()
            except OSError as exc:
                raise SourceError(f'{ref}: cannot read ({exc}).') from exc
        if self.max_pixels and buf:
            check_pixels(buffer_size(buf), self.source_path(index, which), self.max_pixels, self.max_pixels_option)
        return buf

    def read(self, index, which='gt', flags=cv2.IMREAD_UNCHANGED):
        """Decode one image -> HxWx3 uint8 BGR (see ``to_bgr_uint8`` for the conversions).
        A file that cannot be decoded raises SourceError naming it."""
        buf = self.read_bytes(index, which)
        return decode_image(buf, self.source_path(index, which), flags)

    # ---------------------------------------------------------------- sizes from headers
    def _lmdb_shape(self, index, which):
        if which not in self._lmdb_shapes:
            root = self.dataroot_gt if which == 'gt' else self.dataroot_lq
            self._lmdb_shapes[which] = dict(read_lmdb_meta_info(root))
        hw = self._lmdb_shapes[which].get(self.refs[index][0 if which == 'gt' else 1])
        return tuple(hw[:2]) if hw else None

    def image_hw(self, index, which='gt'):
        """(h, w) of one image from its header (LMDB: ``meta_info.txt``), decoding only when no
        header parser knows the format; checked against ``max_pixels`` before any decode.
        Raises SourceError naming the file."""
        path = self.source_path(index, which)
        if self.kind == 'lmdb':
            hw = self._lmdb_shape(index, which)
            if hw is None:
                hw = buffer_size(self.read_bytes(index, which))
        else:
            try:
                hw = file_size(path)
            except OSError as exc:
                raise SourceError(f'{path}: cannot read ({exc}).') from exc
        check_pixels(hw, path, self.max_pixels, self.max_pixels_option)
        if hw is None:  # no header parser knows it: decode (read_bytes checked what it could)
            hw = self.read(index, which).shape[:2]
        return int(hw[0]), int(hw[1])

    def header_check(self):
        """Every pair checked from the image headers, without decoding (crop units need the sizes
        before any feature): -> (GT (h, w) per pair, None where the pair cannot be used;
        {index: reason}). A pair cannot be used when an image is unreadable or not a regular
        file, claims more than ``max_pixels``, or its LQ is not exactly GT / scale. Computed once."""
        if self._headers is None:
            shapes, problems = [], {}
            for i in range(len(self)):
                hw = {}
                try:
                    for w in ('gt', 'lq'):
                        hw[w] = self.image_hw(i, w)
                    pair_shape_error(self.keys[i], hw['gt'], hw['lq'], self.scale, self.source_path(i, 'gt'),
                                     self.source_path(i, 'lq'))
                except SourceError as exc:
                    which = ('GT', 'LQ')[min(len(hw), 1)]
                    what = 'size mismatch' if len(hw) == 2 else \
                        f'{which} image too large' if isinstance(exc, ImageTooLarge) else f'unreadable {which} image'
                    problems[i] = f'{what}: {exc}'
                    shapes.append(None)
                    continue
                shapes.append(hw['gt'])
            self._headers = (shapes, problems)
        return self._headers

    def read_pair(self, index):
        """-> (gt, lq) uint8 BGR, checked: LQ size == GT size / scale."""
        gt, lq = self.read(index, 'gt'), self.read(index, 'lq')
        check_pair_shapes(gt, lq, self.scale, self.keys[index], self.source_path(index, 'gt'))
        return gt, lq

    def describe(self):
        return {'kind': self.kind, 'dataroot_gt': self.dataroot_gt, 'dataroot_lq': self.dataroot_lq,
                'filename_tmpl': self.filename_tmpl, 'meta_info_file': self.meta_info_file, 'scale': self.scale,
                'num_pairs': len(self), 'num_unpaired_skipped': len(self.skipped)}


def decode_image(buf, name, flags=cv2.IMREAD_UNCHANGED):
    """Encoded bytes -> HxWx3 uint8 BGR; SourceError naming ``name`` when they do not decode
    (OpenCV's own errors, e.g. its CV_IO_MAX_IMAGE_PIXELS limit, included)."""
    try:
        img = cv2.imdecode(np.frombuffer(buf, np.uint8), flags) if len(buf) else None
    except cv2.error as exc:
        hint = (' OpenCV refuses images above CV_IO_MAX_IMAGE_PIXELS (2**30 pixels unless that environment '
                'variable is set).' if 'CV_IO_MAX_IMAGE_PIXELS' in str(exc) else '')
        raise SourceError(f'{name}: cannot decode the image ({str(exc).strip().splitlines()[-1]}).{hint}') from None
    try:
        return to_bgr_uint8(img, name)
    except ValueError as exc:
        raise SourceError(str(exc)) from None


def pair_shape_error(key, gt_hw, lq_hw, scale, gt_path='', lq_path=''):
    """Raise SourceError unless the LQ size (h, w) is exactly the GT size / scale; the message
    names both files and both sizes."""
    (gh, gw), (lh, lw) = gt_hw[:2], lq_hw[:2]
    if lh * scale != gh or lw * scale != gw:
        files = f'LQ {lq_path} is {lw}x{lh} but GT {gt_path} is {gw}x{gh}' if lq_path else \
            f'({gt_path}): LQ is {lw}x{lh} but GT is {gw}x{gh}'
        raise SourceError(f'Pair {key!r} {files}; with scale {scale} LQ must be exactly GT / {scale} = '
                          f'{gw / scale:g}x{gh / scale:g}. Check the scale, or mod-crop the GT to a multiple of the '
                          f'scale before packing.')


def check_pair_shapes(gt, lq, scale, key, where=''):
    pair_shape_error(key, gt.shape[:2], lq.shape[:2], scale, where)
