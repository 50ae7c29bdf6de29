"""Small file helpers: the package version, JSON read/write, checksums and fingerprints, and the
safe option-file loader. The output policy (what a command may create, replace or delete) is
``tripled_basicsr/utils/ownership.py``."""
import hashlib
import json
import os

import yaml


def package_version():
    try:
        from tripled_basicsr import __version__
        return __version__
    except Exception:  # noqa: BLE001  (a version string must never stop a write)
        return 'unknown'


def read_json(path, default=None):
    """The JSON value in ``path``, or ``default`` when the file does not exist."""
    if not os.path.isfile(path):
        return default
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def write_json_atomic(path, data, default=None):
    """Write ``data`` as JSON so a reader never sees a half-written file (temp file + rename).
    ``default``: as ``json.dump``'s, for values JSON cannot hold."""
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1, default=default)
    os.replace(tmp, path)


def file_sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def tree_fingerprint(root):
    """sha256 over everything under ``root``: file paths and contents, directories (empty ones
    too) and symlink targets, in sorted order. Tests use it to prove a source was not touched."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        h.update(f'D {rel_dir}\n'.encode())
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                h.update(f'L {rel} {os.readlink(path)}\n'.encode())
                continue
            if name == 'lock.mdb':  # LMDB's reader lock table changes on every read-only open
                continue
            h.update(f'F {rel} {file_sha256(path)}\n'.encode())
    return h.hexdigest()


def load_yaml_safe(path):
    """Load a YAML option file with the safe loader (no Python object construction; one
    loader for all option files: ``tripled_basicsr/safe_yaml.py``, which also bounds the size).

    Only a regular file is read: a directory, device, FIFO or socket is refused by its kind
    (a FIFO is never opened: reading one blocks until another program writes); ``/dev/null``
    and an empty (or comments-only) file hold no options, which is an error too."""
    import stat

    from tripled_basicsr.safe_yaml import check_option_size, load_options_stream
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f'Option file {path} does not exist.') from None
    except OSError as exc:
        raise OSError(f'Option file {path} cannot be read: {exc.strerror or exc}.') from None
    empty = f'Option file {path} holds no options (it is empty or only comments); give a YAML mapping of options.'
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISCHR(st.st_mode) and os.path.exists(os.devnull) and os.path.samefile(path, os.devnull):
            raise ValueError(empty)
        kinds = ((stat.S_ISDIR, 'a directory'), (stat.S_ISCHR, 'a character device'),
                 (stat.S_ISFIFO, 'a named pipe (FIFO), which is not read because reading one blocks until another '
                                 'program writes to it'),
                 (stat.S_ISBLK, 'a block device'), (stat.S_ISSOCK, 'a socket'))
        kind = next((k for test, k in kinds if test(st.st_mode)), 'not a file')
        raise ValueError(f'Option file {path} is not a regular file: it is {kind}. Pass the path of a YAML options '
                         f'file.')
    check_option_size(path, st.st_size)
    with open(path, encoding='utf-8') as f:
        try:
            opt = load_options_stream(f)
        except yaml.YAMLError as exc:
            raise ValueError(f'Option file {path} is not valid YAML: {exc}') from exc
        except UnicodeDecodeError as exc:
            raise ValueError(f'Option file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); is it '
                             f'the right file?') from None
    if opt is None:
        raise ValueError(empty)
    if not isinstance(opt, dict):
        raise ValueError(f'Option file {path} must hold a mapping of options at the top level.')
    return opt
