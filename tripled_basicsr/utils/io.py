"""Output hygiene shared by every command that writes a dataset or report.

All outputs are built in a temporary sibling directory and renamed into place when
complete, so an interrupted run never leaves a half-written output under the final name,
and an existing output is only replaced when the user asked for it.
"""
import hashlib
import os
import shutil
import uuid

import yaml


class OutputExistsError(FileExistsError):
    pass


class AtomicOutputDir:
    """Context manager: ``with AtomicOutputDir(out, overwrite) as tmp: write into tmp``.

    On success ``tmp`` is renamed to ``out`` (replacing it only when ``overwrite``);
    on any exception, Ctrl-C included, ``tmp`` is removed and ``out`` is untouched.
    The temporary directory is a hidden sibling with a unique name, so concurrent runs
    next to each other do not collide.

    Args:
        out (str): final directory.
        overwrite (bool): replace an existing ``out``.
        option_name (str): how the user turns on overwriting, for the error message.
        empty_ok (bool): an existing empty directory counts as absent.
    """

    def __init__(self, out, overwrite=False, option_name='--overwrite', empty_ok=False):
        self.out = os.path.abspath(os.fspath(out))
        self.overwrite = overwrite
        self.option_name = option_name
        self.empty_ok = empty_ok
        self.tmp = None
        self.check()

    def _occupied(self):
        if self.empty_ok and os.path.isdir(self.out) and not os.path.islink(self.out):
            return bool(os.listdir(self.out))
        return os.path.lexists(self.out)

    def check(self):
        if self._occupied() and not self.overwrite:
            raise OutputExistsError(f'Output {self.out} already exists; refusing to overwrite it. '
                                    f'Choose another output path or pass {self.option_name}.')

    def _sibling(self, tag):
        parent, name = os.path.split(self.out)
        return os.path.join(parent, f'.{name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}')

    def __enter__(self):
        self.check()
        os.makedirs(os.path.dirname(self.out), exist_ok=True)
        self.tmp = self._sibling('tmp')
        os.makedirs(self.tmp)  # normal permissions (mkdtemp would make it 0700)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        try:
            self.check()
            if os.path.lexists(self.out):
                old = self._sibling('old')
                os.rename(self.out, old)
                os.rename(self.tmp, self.out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(self.tmp, self.out)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        return False


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
    """sha256 over relative paths and contents of every file under ``root`` (sorted)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name == 'lock.mdb':  # LMDB's reader lock table changes on every read-only open
                continue
            h.update(os.path.relpath(path, root).encode())
            h.update(file_sha256(path).encode())
    return h.hexdigest()


def load_yaml_safe(path):
    """Load a YAML option file with the safe loader (no Python object construction)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Option file {path} does not exist.')
    with open(path, encoding='utf-8') as f:
        try:
            opt = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ValueError(f'Option file {path} is not valid YAML: {exc}') from exc
    if not isinstance(opt, dict):
        raise ValueError(f'Option file {path} must hold a mapping of options at the top level.')
    return opt
