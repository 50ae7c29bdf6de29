"""Read-only LMDB access shared by every reader in the package (datasets, paired sources).

Two rules of py-lmdb make a per-object ``lmdb.open`` fragile:

* one process may open an environment only once ("The environment ... is already open in
  this process"), so two readers of one LMDB (a train and a val dataset on one distilled
  dir, or a PairedSource next to a dataset) must share the handle;
* a handle must not be used across ``fork`` (DataLoader workers): the child closes the
  inherited one and opens the file again.

:func:`open_lmdb_readonly` applies both: one handle per file per process, re-opened after a
fork or when the file on disk was replaced (an output rewritten with ``--overwrite``).
:func:`is_lmdb` is the one test for "this path is a BasicSR LMDB".
"""
import os

_ENVS = {}  # realpath -> (pid, (st_dev, st_ino) of data.mdb, env)

_READONLY_DEFAULTS = dict(readonly=True, lock=False, readahead=False, meminit=False)


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


def open_lmdb_readonly(path, **kwargs):
    """The process's read-only ``lmdb.Environment`` for ``path`` (opened on first use).

    ``kwargs`` override the defaults (``readonly=True, lock=False, readahead=False,
    meminit=False``, as BasicSR's LMDB backend) on the first open of a file in a process.
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
    import lmdb
    kw = dict(_READONLY_DEFAULTS)
    kw.update(kwargs)
    env = lmdb.open(real, **kw)
    _ENVS[real] = (pid, file_id, env)
    return env


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
