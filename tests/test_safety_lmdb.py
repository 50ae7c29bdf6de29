"""LMDB files a user hands us, and LMDBs we write ("Safety, second round", items 8, 10 and 15).

* a truncated ``data.mdb`` is refused with its name before any page is read (reading a page
  past the end of a memory-mapped file is SIGBUS: "Bus error", exit 135, no message);
* an output LMDB reserves address space as its data grows, so a writer works under ``ulimit -v``;
* pack names a pair it cannot read, can leave such pairs out (``--on-error skip``), and a
  failed, interrupted or killed pack is continued by the next run with the same arguments.

Crashes are provoked in subprocesses, so a SIGBUS cannot take pytest down.
"""
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import lmdb
import numpy as np
import pytest

from conftest import write_pairs
from tripled_basicsr.data import distilled_format
from tripled_basicsr.data.distilled_format import read_meta
from tripled_basicsr.data.paired_source import PairedSource, SourceError
from tripled_basicsr.pack import main as pack_main
from tripled_basicsr.pack import pack
from tripled_basicsr.utils.io import tree_fingerprint
from tripled_basicsr.utils.ownership import MARKER_FILE, OutputExistsError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, cwd, env=None, timeout=300):
    full = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    full.pop('TRIPLED_PACK_SIGNAL_AFTER', None)
    full.update(env or {})
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=str(cwd), env=full,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)


def hidden(parent):
    return sorted(p for p in os.listdir(parent) if p.startswith('.'))


def lmdb_items(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return dict(txn.cursor().iternext())
    finally:
        env.close()


def same_set(a, b):
    """Two packed dirs hold the same pairs: LMDB keys and values, meta_info.txt and sample records."""
    for which in ('gt.lmdb', 'lq.lmdb'):
        assert lmdb_items(os.path.join(a, which)) == lmdb_items(os.path.join(b, which)), which
        assert tree_fingerprint(os.path.join(a, which, 'meta_info.txt')) == \
            tree_fingerprint(os.path.join(b, which, 'meta_info.txt'))
    assert read_meta(a)['samples'] == read_meta(b)['samples']
    assert sorted(os.listdir(a)) == sorted(os.listdir(b))


# ----------------------------------------------------------------------------- item 8
@pytest.mark.slow  # three interpreter starts, one of them runs distill (torch)
def test_truncated_lmdb_fails_with_its_name_not_a_bus_error(tmp_path):
    """A data.mdb cut to half its size: pack, distill and TripleDDataset name it instead of dying of SIGBUS."""
    from tripled_basicsr.distill._testing import write_pairs as distill_pairs
    gt, lq = distill_pairs(str(tmp_path / 'src'), num=16, size=48, seed=0)
    packed = str(tmp_path / 'packed')
    pack(gt, lq, packed, progress=False)
    data = os.path.join(packed, 'gt.lmdb', 'data.mdb')
    os.truncate(data, os.path.getsize(data) // 2)
    before = tree_fingerprint(packed)
    # the hole: a plain LMDB read of this file is killed by SIGBUS
    raw = run_python(f'''
        import lmdb
        env = lmdb.open({os.path.join(packed, "gt.lmdb")!r}, readonly=True, lock=False)
        with env.begin() as txn:
            txn.get(b'img0000')
        ''', tmp_path)
    assert raw.returncode == -signal.SIGBUS
    wanted = [f'{data} is truncated', 'bytes, but the LMDB needs at least', 'Copy it again']

    # pack, the truncated set as a BasicSR LMDB source: exit 2 with the message, nothing written
    r = run_python(f'''
        import sys
        from tripled_basicsr.pack import main
        sys.exit(main(['--gt', {packed + "/gt.lmdb"!r}, '--lq', {packed + "/lq.lmdb"!r},
                       '--out', {str(tmp_path / "repacked")!r}, '--quiet']))
        ''', tmp_path)
    assert r.returncode == 2, r.stderr
    assert all(w in r.stderr for w in wanted), r.stderr
    assert 'Traceback' not in r.stderr
    assert not [p for p in os.listdir(tmp_path) if 'repacked' in p]

    # TripleDDataset on the truncated distilled set, and distill on it as a source: a Python exception
    r = run_python(f'''
        import tripled_basicsr
        from tripled_basicsr.data.tripled_dataset import TripleDDataset
        from tripled_basicsr.distill import run_distill
        from tripled_basicsr.distill._testing import tiny_options
        for name, call in (
                ('dataset', lambda: TripleDDataset({{'dataroot': {packed!r}, 'phase': 'val',
                                                    'io_backend': {{'type': 'lmdb'}}}})),
                ('distill', lambda: run_distill(tiny_options(
                    {packed + "/gt.lmdb"!r}, {packed + "/lq.lmdb"!r}, {str(tmp_path / "distilled")!r},
                    source={{'io_backend': {{'type': 'lmdb'}}}}), progress=False))):
            try:
                call()
                print(name, 'NO ERROR')
            except Exception as exc:
                print(name, type(exc).__name__, str(exc).replace('\\n', ' '))
        ''', tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(' ', 1) for line in r.stdout.splitlines() if line.split(' ')[0] in ('dataset', 'distill'))
    assert lines['dataset'].startswith('DamagedLmdbError'), r.stdout
    for name in ('dataset', 'distill'):
        assert all(w in lines[name] for w in wanted), (name, lines[name])
    assert not os.path.exists(tmp_path / 'distilled') and tree_fingerprint(packed) == before


def test_a_damaged_or_missing_data_file_is_named_too(tmp_path):
    from tripled_basicsr.utils.lmdb_io import DamagedLmdbError, check_lmdb, open_lmdb_readonly
    path = tmp_path / 'x.lmdb'
    path.mkdir()
    with pytest.raises(DamagedLmdbError, match=rf'{path} is not an LMDB: {path}/data.mdb does not exist'):
        open_lmdb_readonly(path)
    (path / 'data.mdb').write_bytes(b'not an lmdb' * 10)
    with pytest.raises(DamagedLmdbError, match=rf'{path}/data.mdb \(110 bytes\) cannot be opened as an LMDB.*'
                                               r're-create the LMDB'):
        check_lmdb(path)


# ----------------------------------------------------------------------------- item 10
def test_lmdb_writer_grows_its_map_under_an_address_space_limit(tmp_path):
    """``ulimit -v``: a fixed 1 TiB map is refused there; the writer starts small and grows its map."""
    out = str(tmp_path / 'big')
    r = run_python(f'''
        import resource, lmdb, numpy as np
        from tripled_basicsr.data import distilled_format as df

        def vm():
            with open('/proc/self/status') as f:
                return next(int(l.split()[1]) * 1024 for l in f if l.startswith('VmSize:'))

        limit = vm() + (640 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:  # the hole: what the writer reserved before
            lmdb.open({str(tmp_path / 'fixed')!r}, map_size=1 << 40)
            print('1TiB map reserved')
        except lmdb.MemoryError:
            print('1TiB map refused')
        rng = np.random.default_rng(0)
        w = df.DistilledWriter({out!r}, scale=2, codec='raw')
        with w:
            for i in range(100):  # 100 x 0.94 MiB of raw GT + LQ: more than the initial map of each LMDB
                gt = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
                w.add(f'{{i:03d}}', gt, np.ascontiguousarray(gt[::2, ::2]))
            grown = w._gt.grown, w._gt.map_size
        print('grown', grown[0], grown[1] > df.LMDB_INITIAL_MAP)
        ''', tmp_path)
    assert r.returncode == 0, r.stderr
    assert '1TiB map refused' in r.stdout and 'grown' in r.stdout, r.stdout
    assert int(r.stdout.split('grown ')[1].split()[0]) >= 1 and r.stdout.strip().endswith('True')
    # round trip: every pair reads back as written
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    ds = TripleDDataset({'dataroot': out, 'phase': 'val', 'scale': 2, 'io_backend': {'type': 'lmdb'}})
    rng = np.random.default_rng(0)
    assert len(ds) == 100 and read_meta(out)['codec'] == 'raw'
    for i in range(100):
        gt = rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)
        assert np.array_equal(ds.read_image(i, 'gt'), gt) and np.array_equal(ds.read_image(i, 'lq'), gt[::2, ::2])
    ds.close()
    assert hidden(tmp_path) == []


def test_lmdb_writer_says_when_no_map_can_be_reserved(tmp_path):
    r = run_python(f'''
        import resource, sys
        import numpy as np
        from tripled_basicsr.data import distilled_format as df
        from tripled_basicsr.utils.lmdb_io import LmdbMapError

        with open('/proc/self/status') as f:
            vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith('VmSize:'))
        resource.setrlimit(resource.RLIMIT_AS, (vm + (24 << 20), resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            with df.DistilledWriter({str(tmp_path / 'o')!r}) as w:
                w.add('a', np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))
        except LmdbMapError as exc:
            print(exc)
            sys.exit(3)
        ''', tmp_path)
    assert r.returncode == 3, r.stderr
    msg = r.stdout
    assert 'Cannot reserve 64 MiB of address space to write the LMDB' in msg and 'gt.lmdb' in msg
    assert 'The address-space limit of this process (ulimit -v) is' in msg and 'ulimit -v unlimited' in msg
    assert sorted(os.listdir(tmp_path)) == []


def test_map_full_mid_transaction_is_grown_and_replayed(tmp_path, monkeypatch):
    """Growth aborts the transaction and replays it: what was put before the growth is not lost."""
    monkeypatch.setattr(distilled_format, 'LMDB_INITIAL_MAP', 1 << 20)
    out = distilled_format._LmdbOut(str(tmp_path / 'x.lmdb'), 1, codec='raw', auto_commit=False)
    rng = np.random.default_rng(1)
    imgs = {f'k{i:02d}': rng.integers(0, 256, (100, 100, 3), dtype=np.uint8) for i in range(40)}  # 1.2 MB
    for k, img in imgs.items():
        out.put(k, img)
    assert out.grown >= 1
    out.close([out.line(k, v.shape) for k, v in imgs.items()])
    got = lmdb_items(tmp_path / 'x.lmdb')
    assert {k.decode(): distilled_format.decode_raw(v) for k, v in got.items()}.keys() == imgs.keys()
    assert all(np.array_equal(distilled_format.decode_raw(got[k.encode()]), v) for k, v in imgs.items())


# ----------------------------------------------------------------------------- item 15
@pytest.fixture
def five(tmp_path):
    """``tmp/src/{gt,lq}``: 5 pairs (x2), the last GT truncated; returns (gt, lq, good bytes of it)."""
    gt, lq, _ = write_pairs(str(tmp_path / 'src'), n=5, size=(64, 64), scale=2)
    bad = os.path.join(gt, '0004.png')
    data = open(bad, 'rb').read()
    with open(bad, 'wb') as f:
        f.write(data[:len(data) // 2])
    return gt, lq, data


def count_reads(monkeypatch):
    reads = []
    real = PairedSource.read_pair

    def counting(self, i):
        reads.append(self.keys[i])
        return real(self, i)

    monkeypatch.setattr(PairedSource, 'read_pair', counting)
    return reads


@pytest.mark.parametrize('tile_size', [0, 32])
def test_pack_bad_last_pair_names_it_keeps_the_progress_and_resumes(tmp_path, five, monkeypatch, capsys, caplog,
                                                                   tile_size):
    gt, lq, good = five
    monkeypatch.setattr(distilled_format, 'COMMIT_PAIRS', 2)  # commit after every 2 pairs (default 256)
    out = str(tmp_path / 'o')
    args = ['--gt', gt, '--lq', lq, '--out', out, '--scale', '2', '--tile-size', str(tile_size), '--quiet']
    assert pack_main(args) == 2
    err = capsys.readouterr().err
    bad = os.path.join(gt, '0004.png')
    assert f"Cannot read pair 5 of 5 (key '0004'; GT {bad}, LQ {os.path.join(lq, '0004.png')})" in err
    assert f'{bad}: could not decode' in err and 'Fix or replace that file' in err and '--on-error skip' in err
    assert f'The pairs written so far are kept in {tmp_path}/.o.partial: run the same command again' in err
    # the output does not exist; the partial dir is ours (marker) and holds the 4 committed pairs
    assert not os.path.exists(out) and hidden(tmp_path) == ['.o.partial']
    partial = tmp_path / '.o.partial'
    assert json.loads((partial / MARKER_FILE).read_text())['tool'] == 'pack'
    assert len((partial / 'partial_samples.jsonl').read_text().splitlines()) == 4
    # fix the file and run the same command: only the missing pair is read
    with open(bad, 'wb') as f:
        f.write(good)
    src_fp = tree_fingerprint(str(tmp_path / 'src'))
    reads = count_reads(monkeypatch)
    with caplog.at_level(logging.WARNING, 'tripled_basicsr.pack'):
        assert pack_main(args) == 0
    assert reads == ['0004']
    assert 'continuing an interrupted run: 4 of 5 pairs were written already' in caplog.text
    assert 'packed 5 pairs, 4 of them by an earlier run' in capsys.readouterr().out
    assert hidden(tmp_path) == [] and read_meta(out)['summary']['resumed_pairs'] == 4
    # equal to a clean pack of the same source
    monkeypatch.undo()
    pack(gt, lq, str(tmp_path / 'clean'), scale=2, tile_size=tile_size, progress=False)
    same_set(out, str(tmp_path / 'clean'))
    assert tree_fingerprint(str(tmp_path / 'src')) == src_fp


def test_pack_on_error_skip_leaves_the_bad_pair_out_and_lists_it(tmp_path, five, caplog):
    gt, lq, _ = five
    os.remove(os.path.join(lq, '0002.png'))  # and an unpaired GT image
    out = str(tmp_path / 'o')
    with caplog.at_level(logging.WARNING, 'tripled_basicsr.pack'):
        s = pack(gt, lq, out, scale=2, on_error='skip', progress=False)
    assert s['num_pairs'] == 3 and s['num_source_pairs'] == 4
    meta = read_meta(out)
    assert [x['key'] for x in meta['samples']] == ['0000', '0001', '0003']
    skipped = meta['summary']['skipped']
    assert {e.get('key') for e in skipped} == {None, '0004'}
    bad = next(e for e in skipped if e.get('key') == '0004')
    assert bad['gt_path'] == os.path.join(gt, '0004.png') and 'could not decode' in bad['reason']
    assert any(e.get('gt_path', '').endswith('0002.png') and 'no LQ partner' in e['reason'] for e in skipped)
    assert "skipped pair 4 of 4 (key '0004'" in caplog.text and '0002.png' in caplog.text
    assert sorted(k.decode() for k in lmdb_items(os.path.join(out, 'gt.lmdb'))) == ['0000', '0001', '0003']
    assert open(os.path.join(out, 'lq.lmdb', 'meta_info.txt')).read().split('\n')[2].startswith('0003.png (32,32,3)')
    # with raise (the default) the unpaired file is an error that points at --on-error skip
    with pytest.raises(SourceError, match="'0002.png' has no LQ partner.*--on-error skip"):
        pack(gt, lq, str(tmp_path / 'o2'), scale=2, progress=False)
    assert hidden(tmp_path) == []


def test_pack_partial_with_other_options_is_refused_and_restart_starts_over(tmp_path, five, monkeypatch, caplog):
    gt, lq, good = five
    monkeypatch.setattr(distilled_format, 'COMMIT_PAIRS', 1)
    out = str(tmp_path / 'o')
    with pytest.raises(SourceError, match='Cannot read pair 5 of 5'):
        pack(gt, lq, out, scale=2, progress=False)
    partial = str(tmp_path / '.o.partial')
    before = tree_fingerprint(partial)
    with pytest.raises(OutputExistsError, match=r'\.o\.partial holds an interrupted pack run to .*/o \(4 pairs '
                                                r'written\) with other options \(compress_level 1 then, 3 now\).*'
                                                r'pass --restart'):
        pack(gt, lq, out, scale=2, compress_level=3, progress=False)
    assert tree_fingerprint(partial) == before  # refused before any work, partial untouched
    # on_error is not part of the identity: continuing with --on-error skip is the usual way on
    with open(os.path.join(gt, '0004.png'), 'wb') as f:
        f.write(good)
    reads = count_reads(monkeypatch)
    with caplog.at_level(logging.WARNING):
        s = pack(gt, lq, out, scale=2, compress_level=3, restart=True, progress=False)
    assert f'--restart: deleted {partial} (4 pairs of an interrupted run)' in caplog.text
    assert len(reads) == 5 and s['resumed_pairs'] == 0 and read_meta(out)['compress_level'] == 3
    assert hidden(tmp_path) == []
    # a .NAME.partial that is not ours is never used nor deleted
    os.makedirs(partial)
    open(os.path.join(partial, 'notes.txt'), 'w').close()
    with caplog.at_level(logging.WARNING):
        pack(gt, lq, str(tmp_path / 'o'), scale=2, overwrite=True, restart=True, progress=False)
    assert os.listdir(partial) == ['notes.txt'] and 'is not a partial output of this tool' in caplog.text


@pytest.mark.parametrize('sig', ['KILL', 'INT'])
def test_pack_killed_or_interrupted_is_continued_by_the_next_run(tmp_path, five, monkeypatch, caplog, sig):
    gt, lq, good = five
    with open(os.path.join(gt, '0004.png'), 'wb') as f:
        f.write(good)
    out = str(tmp_path / 'o')
    args = ['--gt', gt, '--lq', lq, '--out', out, '--scale', '2', '--quiet']
    r = run_python(f'''
        import sys
        from tripled_basicsr.data import distilled_format
        from tripled_basicsr.pack import main
        distilled_format.COMMIT_PAIRS = 1
        sys.exit(main({args!r}))
        ''', tmp_path, env={'TRIPLED_PACK_SIGNAL_AFTER': f'3:{sig}'})
    if sig == 'KILL':
        assert r.returncode == -signal.SIGKILL
        left = hidden(tmp_path)  # the temp dir of the killed writer, with its 3 committed pairs
        assert len(left) == 1 and left[0].startswith('.o.tmp-')
    else:
        assert r.returncode == 130 and 'Traceback' not in r.stderr
        assert r.stderr.strip() == (f'pack: interrupted; {out} is unchanged. The pairs written so far are kept in '
                                    f'{tmp_path}/.o.partial: run the same command again to continue from them (or '
                                    f'add --restart to start over).')
        assert hidden(tmp_path) == ['.o.partial']
    reads = count_reads(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert pack_main(args) == 0
    assert reads == ['0003', '0004']
    if sig == 'KILL':
        assert f'kept the 3 pairs written by an interrupted run (pid ' in caplog.text
    assert 'continuing an interrupted run: 3 of 5 pairs' in caplog.text
    assert hidden(tmp_path) == []
    monkeypatch.undo()
    pack(gt, lq, str(tmp_path / 'clean'), scale=2, progress=False)
    same_set(out, str(tmp_path / 'clean'))


def test_pack_resume_drops_a_batch_committed_but_not_recorded(tmp_path, five, monkeypatch):
    """A kill between the LMDB commit and the record of the batch (or a torn record): the
    entries of that batch are removed on resume, so a pair the source no longer has is not left in."""
    gt, lq, good = five
    monkeypatch.setattr(distilled_format, 'COMMIT_PAIRS', 1)
    out = str(tmp_path / 'o')
    with pytest.raises(SourceError):
        pack(gt, lq, out, scale=2, progress=False)
    journal = tmp_path / '.o.partial' / 'partial_samples.jsonl'
    lines = journal.read_text().splitlines(keepends=True)
    assert [json.loads(x)['key'] for x in lines] == ['0000', '0001', '0002', '0003']
    journal.write_text(''.join(lines[:3]) + lines[3][:20])  # the record of pair 0003 was cut short
    os.remove(os.path.join(gt, '0003.png'))  # and the user took that pair out, fixing the other one
    os.remove(os.path.join(lq, '0003.png'))
    with open(os.path.join(gt, '0004.png'), 'wb') as f:
        f.write(good)
    reads = count_reads(monkeypatch)
    assert pack(gt, lq, out, scale=2, progress=False)['resumed_pairs'] == 3
    assert reads == ['0004']
    monkeypatch.undo()
    pack(gt, lq, str(tmp_path / 'clean'), scale=2, progress=False)
    same_set(out, str(tmp_path / 'clean'))
    assert sorted(k.decode() for k in lmdb_items(os.path.join(out, 'lq.lmdb'))) == ['0000', '0001', '0002', '0004']


def test_pack_resume_reads_again_a_pair_whose_file_changed(tmp_path, five, monkeypatch):
    """A pair written by the interrupted run whose source file changed since (a user replaced the
    image) is read again, so the continued output equals a clean pack of the current source."""
    gt, lq, good = five
    monkeypatch.setattr(distilled_format, 'COMMIT_PAIRS', 2)
    out = str(tmp_path / 'o')
    assert pack_main(['--gt', gt, '--lq', lq, '--out', out, '--scale', '2', '--quiet']) == 2
    with open(os.path.join(gt, '0004.png'), 'wb') as f:
        f.write(good)
    for d in (gt, lq):  # the user replaces pair 0000 by pair 0001
        shutil.copyfile(os.path.join(d, '0001.png'), os.path.join(d, '0000.png'))
        t = os.stat(os.path.join(d, '0000.png')).st_mtime_ns + 10 ** 9  # a new mtime even on a coarse clock
        os.utime(os.path.join(d, '0000.png'), ns=(t, t))
    reads = count_reads(monkeypatch)
    assert pack_main(['--gt', gt, '--lq', lq, '--out', out, '--scale', '2', '--quiet']) == 0
    assert reads == ['0000', '0004']
    monkeypatch.undo()
    pack(gt, lq, str(tmp_path / 'clean'), scale=2, progress=False)
    same_set(out, str(tmp_path / 'clean'))
