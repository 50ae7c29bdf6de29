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
    loader for all option files: ``tripled_basicsr/safe_yaml.py``)."""
    from tripled_basicsr.safe_yaml import load_options_stream
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Option file {path} does not exist.')
    with open(path, encoding='utf-8') as f:
        try:
            opt = load_options_stream(f)
        except yaml.YAMLError as exc:
            raise ValueError(f'Option file {path} is not valid YAML: {exc}') from exc
    if not isinstance(opt, dict):
        raise ValueError(f'Option file {path} must hold a mapping of options at the top level.')
    return opt
