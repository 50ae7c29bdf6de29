"""LMDB access shared by every reader and writer in the package (datasets, paired sources, outputs).

Two rules of py-lmdb make a per-object ``lmdb.open`` fragile:

* one process may open an environment only once ("The environment ... is already open in
  this process"), so two readers of one LMDB (a train and a val dataset on one distilled
  dir, or a PairedSource next to a dataset) must share the handle;
* a handle must not be used across ``fork`` (DataLoader workers): the child closes the
  inherited one and opens the file again.

:func:`open_lmdb_readonly` applies both: one handle per file per process, re-opened after a
fork or when the file on disk was replaced (an output rewritten with ``--overwrite``).
:func:`is_lmdb` is the one test for "this path is a BasicSR LMDB".

``open_lmdb_readonly`` resolves the path and stats ``data.mdb`` on every call (about 20 us), too
much for a training reader that reads two values per sample. :class:`LmdbReader` is the hot-path
form: a reader object (one per LMDB of a dataset) resolves, opens and checks the environment
once per process (the first read after construction, after a fork into a DataLoader worker, or
after ``close_lmdb``) and afterwards costs a pid compare and a dict lookup per read. It keeps
reading the file it opened; ``close_lmdb`` (or another reader of the process seeing a replaced
file) makes it open again. :func:`open_count` counts the opens of a file in this process.

A file a user hands us is validated before use: LMDB memory-maps ``data.mdb``, so reading a
page past the end of a truncated file (an interrupted copy, a full disk) kills the process
with SIGBUS ("Bus error", exit 135) and no message. Every open therefore compares the file
size with the size the environment records (``(last_pgno + 1) * psize``) and raises
:class:`DamagedLmdbError`, naming the file, before any page is read (:func:`check_lmdb`).

Writers reserve address space for the map; :func:`map_error` turns a failed reservation
(``ulimit -v``) into an error that says what happened and what to do.
"""
import os

_ENVS = {}  # realpath -> (pid, (st_dev, st_ino) of data.mdb, env)
_OPENS = {}  # (pid, realpath) -> environments opened (and checked) for that file by that process

_READONLY_DEFAULTS = dict(readonly=True, lock=False, readahead=False, meminit=False)


class DamagedLmdbError(ValueError):
    """An LMDB is truncated or not an LMDB at all; the message names the file and what to do."""


class LmdbMapError(OSError):
    """The address space for an LMDB map could not be reserved (``ulimit -v``)."""


def is_lmdb(path):
    """True when ``path`` is a directory that is (or names itself as) an LMDB environment.

    BasicSR's convention is a ``*.lmdb`` folder; a folder holding ``data.mdb`` counts too.
    """
    path = os.fspath(path)
    return os.path.isdir(path) and (path.rstrip('/\\').endswith('.lmdb')
                                    or os.path.isfile(os.path.join(path, 'data.mdb')))


def _file_id(real):
    try:
        st = os.stat(os.path.join(real, 'data.mdb'))
    except OSError:
        return None
    return st.st_dev, st.st_ino


_REDO = ('Copy it again from the original (an interrupted copy or download, or a full disk, leaves such a file), '
         "or re-create the LMDB (BasicSR's create_lmdb.py; `python -m tripled_basicsr.pack` or "
         '`python -m tripled_basicsr.distill` for a packed or distilled set).')


def _data_file(real, subdir=True):
    return os.path.join(real, 'data.mdb') if subdir else real


def check_env_size(env, data_file):
    """Raise :class:`DamagedLmdbError` when ``data_file`` is shorter than ``env`` says it is.

    Reads only the environment's meta data (no page of the map), so it is safe on a truncated
    file; reading a page past the end of the file would be SIGBUS."""
    pages, psize = int(env.info()['last_pgno']) + 1, int(env.stat()['psize'])
    need = pages * psize
    try:
        size = os.path.getsize(data_file)
    except OSError as exc:
        raise DamagedLmdbError(f'{data_file}: cannot read the LMDB data file ({exc}). {_REDO}') from exc
    if size < need:
        raise DamagedLmdbError(f'{data_file} is truncated: it is {size} bytes, but the LMDB needs at least {need} '
                               f'bytes ({pages} pages of {psize} bytes); reading it would crash the process (Bus '
                               f'error). {_REDO}')


def _open_checked(real, kw):
    import lmdb
    data = _data_file(real, kw.get('subdir', True))
    if not os.path.isfile(data):
        raise DamagedLmdbError(f'{real} is not an LMDB: {data} does not exist. {_REDO}')
    try:
        env = lmdb.open(real, **kw)
    except lmdb.Error as exc:
        if 'already open' in str(exc):
            raise
        raise DamagedLmdbError(f'{data} ({os.path.getsize(data)} bytes) cannot be opened as an LMDB ({exc}); the '
                               f'file is damaged or not an LMDB. {_REDO}') from exc
    try:
        check_env_size(env, data)
    except BaseException:
        env.close()
        raise
    return env


def open_lmdb_readonly(path, **kwargs):
    """The process's read-only ``lmdb.Environment`` for ``path`` (opened and checked on first use).

    ``kwargs`` override the defaults (``readonly=True, lock=False, readahead=False,
    meminit=False``, as BasicSR's LMDB backend) on the first open of a file in a process.
    A truncated or damaged file raises :class:`DamagedLmdbError` (see :func:`check_env_size`).
    """
    real = os.path.realpath(os.fspath(path))
    pid, file_id = os.getpid(), _file_id(real)
    cached = _ENVS.get(real)
    if cached is not None:
        if cached[0] == pid and cached[1] == file_id:
            return cached[2]
        # inherited from the parent (the child's copy of the map and descriptors is the
        # child's own to release) or the file was replaced: this handle is stale
        _close(_ENVS.pop(real)[2])
    kw = dict(_READONLY_DEFAULTS)
    kw.update(kwargs)
    env = _open_checked(real, kw)
    _ENVS[real] = (pid, file_id, env)
    _OPENS[pid, real] = _OPENS.get((pid, real), 0) + 1
    return env


def open_count(path):
    """How many times this process opened (and checked) the environment of ``path`` for reading."""
    return _OPENS.get((os.getpid(), os.path.realpath(os.fspath(path))), 0)


class LmdbReader:
    """Hot-path access to the process's shared read-only environment of one LMDB.

    :meth:`env` returns the handle :func:`open_lmdb_readonly` gives (same sharing, same checks:
    a truncated or damaged file raises :class:`DamagedLmdbError` naming it), but resolves the
    path, stats the file and checks its size only when this process has no valid handle yet: on
    the first call, in a forked child (a DataLoader worker opens its own) and after the handle
    was closed or replaced (``close_lmdb``, or another reader that found the file replaced). In
    between, a call is a pid compare and a dict lookup; a file replaced on disk is not noticed
    until then (readers keep the map of the file they opened, which stays valid).

    Pickling (DataLoader workers started with ``spawn``) and ``copy.deepcopy`` keep the path and
    options only: the copy opens its own handle when first used.
    """
    __slots__ = ('path', 'kwargs', '_entry', '_real')

    def __init__(self, path, **kwargs):
        self.path = os.fspath(path)
        self.kwargs = dict(kwargs)
        self._entry = None  # this process's _ENVS entry (pid, file id, env) once resolved
        self._real = None

    def env(self):
        entry = self._entry
        if entry is not None and entry[0] == os.getpid() and _ENVS.get(self._real) is entry:
            return entry[2]
        env = open_lmdb_readonly(self.path, **self.kwargs)
        self._real = os.path.realpath(self.path)
        self._entry = _ENVS[self._real]
        return env

    def forget(self):
        """Drop the cached handle (the next :meth:`env` resolves the path again)."""
        self._entry = self._real = None

    def __getstate__(self):
        return {'path': self.path, 'kwargs': self.kwargs}

    def __setstate__(self, state):
        self.__init__(state['path'], **state['kwargs'])

    def __repr__(self):
        return f'LmdbReader({self.path!r})'


def check_lmdb(path, **kwargs):
    """Validate the LMDB at ``path`` now (before a long run uses it) without keeping a handle.

    A file this process already holds open (and so checked) passes at once; otherwise the
    environment is opened read-only, checked as by :func:`open_lmdb_readonly` and closed, so
    a later reader (ours or stock BasicSR's) may open it. Raises :class:`DamagedLmdbError`."""
    real = os.path.realpath(os.fspath(path))
    cached = _ENVS.get(real)
    if cached is not None and cached[0] == os.getpid() and cached[1] == _file_id(real):
        return
    kw = dict(_READONLY_DEFAULTS)
    kw.update(kwargs)
    import lmdb
    try:
        env = _open_checked(real, kw)
    except lmdb.Error as exc:
        if 'already open' in str(exc):  # another reader of this process holds it: it opened fine
            return
        raise
    _close(env)


def close_lmdb(path):
    """Forget this process's handle of ``path``; closes it if this process opened it.

    Call it before writing to or replacing ``path`` in the same process. A handle inherited
    from a parent process is only dropped here (the next open replaces it).
    """
    cached = _ENVS.pop(os.path.realpath(os.fspath(path)), None)
    if cached is not None and cached[0] == os.getpid():
        _close(cached[2])


def _close(env):
    try:
        env.close()
    except Exception:  # noqa: BLE001 - already closed or damaged: nothing left to release
        pass


def _mib(n):
    return f'{n / 2**20:.0f} MiB'


def map_error(path, size, exc):
    """:class:`LmdbMapError` for a map of ``size`` bytes of ``path`` that could not be reserved."""
    limit = ''
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            used = None
            try:
                with open('/proc/self/status', encoding='ascii') as f:
                    used = next((int(ln.split()[1]) * 1024 for ln in f if ln.startswith('VmSize:')), None)
            except (OSError, ValueError):
                pass
            in_use = f', {_mib(used)} of it already in use' if used else ''
            limit = f' The address-space limit of this process (ulimit -v) is {_mib(soft)}{in_use}.'
    except (ImportError, OSError, ValueError):
        pass
    return LmdbMapError(f'Cannot reserve {_mib(size)} of address space to write the LMDB {path} ({exc}).{limit} '
                        f'LMDB maps its file into memory and needs address space (not RAM) at least the size of '
                        f'the data. Raise the limit (`ulimit -v unlimited`, or ask your cluster for more virtual '
                        f'memory), or write fewer/smaller images per output.')
