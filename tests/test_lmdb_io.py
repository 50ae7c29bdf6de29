"""Shared read-only LMDB handles (tripled_basicsr/utils/lmdb_io.py)."""
import os
import shutil

import cv2
import numpy as np
import pytest

from tripled_basicsr.data.paired_source import PairedSource
from tripled_basicsr.demo_data import generate_pairs, write_demo_dataset
from tripled_basicsr.utils import lmdb_io
from tripled_basicsr.utils.lmdb_io import close_lmdb, is_lmdb, open_lmdb_readonly


def _demo_lmdbs(root, seed=0):
    write_demo_dataset(root, 'noise', 2, 16, lmdb=True, seed=seed, progress=False)
    return os.path.join(root, 'gt.lmdb'), os.path.join(root, 'lq.lmdb')


def _get(path, key):
    with open_lmdb_readonly(path).begin() as txn:
        return cv2.imdecode(np.frombuffer(txn.get(key.encode()), np.uint8), cv2.IMREAD_COLOR)


def test_is_lmdb(tmp_path):
    gt, _ = _demo_lmdbs(str(tmp_path / 'd'))
    assert is_lmdb(gt) and is_lmdb(gt + '/')
    renamed = tmp_path / 'plain_name'
    shutil.copytree(gt, renamed)
    assert is_lmdb(renamed)  # holds data.mdb
    (tmp_path / 'x.lmdb').mkdir()
    assert is_lmdb(tmp_path / 'x.lmdb')  # BasicSR's naming convention
    (tmp_path / 'folder').mkdir()
    (tmp_path / 'file.lmdb').write_text('')
    assert not is_lmdb(tmp_path / 'folder') and not is_lmdb(tmp_path / 'file.lmdb')
    assert not is_lmdb(tmp_path / 'missing.lmdb')


def test_readers_of_one_lmdb_share_the_process_handle(tmp_path):
    """py-lmdb opens an environment once per process: two sources on one LMDB used to fail."""
    gt, lq = _demo_lmdbs(str(tmp_path / 'd'))
    a, b = PairedSource(gt, lq), PairedSource(gt, lq)
    expected = {n: (g, q) for n, g, q in generate_pairs('noise', 2, 16)}
    for src in (a, b):
        for i, key in enumerate(src.keys):
            g, q = src.read_pair(i)
            assert np.array_equal(g, expected[key][0]) and np.array_equal(q, expected[key][1])
    assert open_lmdb_readonly(gt) is open_lmdb_readonly(os.path.join(str(tmp_path), 'd', '.', 'gt.lmdb'))
    close_lmdb(gt)
    close_lmdb(lq)


def in_forked_child(check):
    """``check()`` run in a forked child process: its truth value, passed back through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = 0
        try:
            ok = int(bool(check()))
        finally:
            os.write(w, bytes([ok]))
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.close(r)
    os.waitpid(pid, 0)
    return got == b'\x01'


def test_a_forked_child_opens_its_own_handle(tmp_path):
    gt, _ = _demo_lmdbs(str(tmp_path / 'd'))
    parent_env = open_lmdb_readonly(gt)

    def child():  # must not use the parent's handle
        env = open_lmdb_readonly(gt)
        return (env is not parent_env and lmdb_io._ENVS[os.path.realpath(gt)][0] == os.getpid()
                and _get(gt, '0001').shape == (16, 16, 3))

    assert in_forked_child(child)
    assert open_lmdb_readonly(gt) is parent_env  # the parent keeps its handle
    close_lmdb(gt)


def test_a_replaced_lmdb_is_reopened_not_read_through_a_stale_map(tmp_path):
    """An output rewritten in the same process (``--overwrite``) is read afresh."""
    gt, _ = _demo_lmdbs(str(tmp_path / 'd'), seed=0)
    first = _get(gt, '0000')
    _demo_lmdbs(str(tmp_path / 'e'), seed=1)
    shutil.rmtree(tmp_path / 'd')
    os.rename(tmp_path / 'e', tmp_path / 'd')
    second = _get(gt, '0000')
    assert np.array_equal(second, next(iter(generate_pairs('noise', 1, 16, seed=1)))[1])
    assert not np.array_equal(first, second)
    close_lmdb(gt)
    assert os.path.realpath(gt) not in lmdb_io._ENVS


def test_readers_and_the_demo_generator_import_without_torch_or_basicsr(tmp_path):
    """Generating demo data and reading sources must not pull in the training stack."""
    import subprocess
    import sys
    code = ('import sys, tripled_basicsr.demo_data, tripled_basicsr.data.paired_source, tripled_basicsr.utils.lmdb_io; '
            'print(sorted(m for m in ("torch", "basicsr") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'


def test_a_truncated_lmdb_is_refused_before_any_page_is_read(tmp_path):
    """Only the meta data is read to compare the sizes (a page read past the end would be SIGBUS)."""
    from tripled_basicsr.utils.lmdb_io import DamagedLmdbError, check_lmdb
    gt, lq = _demo_lmdbs(str(tmp_path / 'd'))
    data = os.path.join(gt, 'data.mdb')
    size = os.path.getsize(data)
    os.truncate(data, size // 2)
    for call in (lambda: open_lmdb_readonly(gt), lambda: check_lmdb(gt), lambda: PairedSource(gt, lq).read(0)):
        with pytest.raises(DamagedLmdbError, match=rf'{data} is truncated: it is {size // 2} bytes, but the LMDB '
                                                   rf'needs at least \d+ bytes .*Copy it again.*re-create the LMDB'):
            call()
    assert os.path.realpath(gt) not in lmdb_io._ENVS


def test_check_lmdb_keeps_no_handle(tmp_path):
    from tripled_basicsr.utils.lmdb_io import check_lmdb
    gt, _ = _demo_lmdbs(str(tmp_path / 'd'))
    check_lmdb(gt)
    assert os.path.realpath(gt) not in lmdb_io._ENVS
    import lmdb
    env = lmdb.open(gt, readonly=True, lock=False)  # a stock reader may open it afterwards (once per process)
    check_lmdb(gt)  # and a file another reader of this process holds passes
    env.close()
    env = open_lmdb_readonly(gt)
    check_lmdb(gt)
    assert open_lmdb_readonly(gt) is env
    close_lmdb(gt)


def test_lmdb_reader_resolves_once_per_process_and_follows_close_and_fork(tmp_path):
    """``LmdbReader``: the hot-path handle of a dataset (no realpath/stat per call)."""
    import pickle
    from tripled_basicsr.utils.lmdb_io import LmdbReader, open_count
    gt, _ = _demo_lmdbs(str(tmp_path / 'd'))
    reader = LmdbReader(gt)
    env = reader.env()
    assert env is open_lmdb_readonly(gt) and reader.env() is env and open_count(gt) == 1
    assert pickle.loads(pickle.dumps(reader)).env() is env  # a copy carries no handle, finds the shared one
    close_lmdb(gt)  # closed by another reader of the process: opened (and checked) again
    env2 = reader.env()
    assert env2 is not env and open_count(gt) == 2
    # the file replaced and noticed by another reader: this one follows instead of using a closed handle
    _demo_lmdbs(str(tmp_path / 'e'), seed=1)
    shutil.rmtree(tmp_path / 'd')
    os.rename(tmp_path / 'e', tmp_path / 'd')
    assert reader.env() is env2  # not noticed by itself (no stat per call)
    assert _get(gt, '0000').shape == (16, 16, 3)
    with reader.env().begin() as txn:
        got = cv2.imdecode(np.frombuffer(txn.get(b'0000'), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(got, next(iter(generate_pairs('noise', 1, 16, seed=1)))[1])

    def child():  # a forked child opens its own handle
        child_env = reader.env()
        return child_env is not env2 and open_count(gt) == 1 and reader.env() is child_env

    assert in_forked_child(child)
    close_lmdb(gt)
