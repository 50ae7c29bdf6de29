"""The output policy (tripled_basicsr.utils.io.AtomicOutputDir) and pack's use of it.

Every case hashes the sources (and any bystander folder) before and after and checks that
nothing but the intended output appeared: no output, no hidden ``.NAME.*`` sibling.
"""
import json
import logging
import os
import signal
import subprocess
import sys

import pytest

from conftest import write_pairs
from tripled_basicsr.data.distilled_format import FormatError, read_meta
from tripled_basicsr.data.paired_source import PairedSource
from tripled_basicsr.pack import main as pack_main
from tripled_basicsr.pack import pack
from tripled_basicsr.utils import ownership as outio
from tripled_basicsr.utils.io import tree_fingerprint
from tripled_basicsr.utils.ownership import (MARKER_FILE, AtomicOutputDir, OutputConflictError, OutputExistsError,
                                             defer_sigint, read_marker)


@pytest.fixture
def src(tmp_path):
    """``tmp/X/{gt,lq}`` with 3 pairs, plus the fingerprint of ``tmp/X``."""
    gt, lq, _ = write_pairs(str(tmp_path / 'X'), n=3, size=(32, 40))
    return gt, lq, str(tmp_path / 'X'), tree_fingerprint(str(tmp_path / 'X'))


def hidden(parent):
    return sorted(p for p in os.listdir(parent) if p.startswith('.'))


def snapshot(root):
    """Fingerprint and entry list of ``root``: any change to either is a change we did not ask for."""
    return tree_fingerprint(str(root)), sorted(os.listdir(root))


def dead_pid():
    """The pid of a process that has exited and been reaped."""
    p = subprocess.Popen([sys.executable, '-c', ''])
    p.wait()
    return p.pid


def pack_cli(*args):
    return pack_main(list(args) + ['--quiet'])


# ----------------------------------------------------------------------------- sources (issue item 1)
@pytest.mark.parametrize('where', ['parent', 'gt', 'lq', 'inside_gt'])
def test_out_overlapping_a_source_is_refused_even_with_overwrite(tmp_path, src, capsys, where):
    gt, lq, root, fp = src
    out = {'parent': root, 'gt': gt, 'lq': lq, 'inside_gt': os.path.join(gt, 'packed')}[where]
    before = snapshot(tmp_path)
    assert pack_cli('--gt', gt, '--lq', lq, '--out', out, '--overwrite') == 2
    err = capsys.readouterr().err
    rel = {'parent': 'contains', 'gt': 'is', 'lq': 'is', 'inside_gt': 'lies inside'}[where]
    label, source = ('--lq', lq) if where == 'lq' else ('--gt', gt)
    assert f'Output {os.path.abspath(out)} {rel} the source {label} {os.path.abspath(source)}' in err
    assert 'refused' in err and '--overwrite' not in err  # the message must not lead to overwriting
    suggestion = err.split('e.g. ')[1].strip().rstrip('.')
    assert not any(outio.path_relation(suggestion, s) for s in (gt, lq))
    assert tree_fingerprint(root) == fp and snapshot(tmp_path) == before


def test_source_check_runs_before_any_work(tmp_path, src, monkeypatch):
    gt, lq, root, fp = src

    def no_reading(*a, **k):
        raise AssertionError('the source was opened before the output was checked')

    monkeypatch.setattr(PairedSource, '__init__', no_reading)
    with pytest.raises(OutputConflictError, match='contains the source --gt'):
        pack(gt, lq, root, overwrite=True, progress=False)
    assert tree_fingerprint(root) == fp


def test_out_symlinked_to_a_source_is_refused(tmp_path, src):
    gt, lq, root, fp = src
    link = tmp_path / 'link'
    os.symlink(gt, link)
    before = snapshot(tmp_path)
    with pytest.raises(OutputConflictError, match=rf'Output {link} \(it resolves to {gt}\) is the source --gt'):
        pack(gt, lq, str(link), overwrite=True, progress=False)
    # a source reached through a symlink is protected too: out = the link's target's parent
    os.symlink(root, tmp_path / 'xlink')
    with pytest.raises(OutputConflictError, match='contains the source --gt'):
        pack(str(tmp_path / 'xlink' / 'gt'), lq, root, overwrite=True, progress=False)
    os.remove(tmp_path / 'xlink')
    assert tree_fingerprint(root) == fp and snapshot(tmp_path) == before
    # a symlink to an unrelated folder is never written through either
    (tmp_path / 'elsewhere').mkdir()
    os.symlink(tmp_path / 'elsewhere', tmp_path / 'l2')
    with pytest.raises(OutputExistsError, match=rf'Output {tmp_path / "l2"} is a symbolic link'):
        pack(gt, lq, str(tmp_path / 'l2'), overwrite=True, progress=False)
    assert os.listdir(tmp_path / 'elsewhere') == []


def test_lmdb_sources_and_meta_info_are_sources_too(tmp_path, src):
    gt, lq, root, fp = src
    meta = tmp_path / 'meta.txt'
    meta.write_text('0000.png (32,40,3)\n')
    with pytest.raises(OutputConflictError, match='is the source --meta-info'):
        pack(gt, lq, str(meta), meta_info=str(meta), overwrite=True, progress=False)
    assert meta.read_text() == '0000.png (32,40,3)\n' and tree_fingerprint(root) == fp


def test_dataset_hint_never_suggests_packing_into_the_folder(tmp_path, src):
    gt, lq, root, fp = src
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    for call in (lambda: read_meta(root), lambda: TripleDDataset({'dataroot': root, 'phase': 'val'})):
        with pytest.raises(FormatError) as exc:
            call()
        msg = str(exc.value)
        assert f'--gt {gt} --lq {lq} --out {os.path.abspath(root)}_packed`' in msg and f'--out {root}`' not in msg
    # following the hint works and leaves the folder as it was
    assert pack_cli('--gt', gt, '--lq', lq, '--out', root + '_packed') == 0
    assert read_meta(root + '_packed')['num_samples'] == 3 and tree_fingerprint(root) == fp


# ----------------------------------------------------------------------------- what overwrite replaces (item 2)
def test_overwrite_refuses_a_folder_we_did_not_write(tmp_path, src, capsys):
    gt, lq, root, fp = src
    thesis = tmp_path / 'thesis'
    (thesis / 'ch1').mkdir(parents=True)
    (thesis / 'ch1' / 'draft.tex').write_text('days of work')
    (thesis / 'notes.txt').write_text('more')
    before = snapshot(tmp_path)
    for extra in ([], ['--overwrite']):
        assert pack_cli('--gt', gt, '--lq', lq, '--out', str(thesis), *extra) == 2
        err = capsys.readouterr().err
        assert f'Output {thesis} already exists and was not written by tripled_basicsr' in err
        assert 'never replaced' in err and 'Choose a new output path' in err
    # the generic writer (what demo_data and study outputs use) holds the same line
    with pytest.raises(OutputExistsError, match='not written by tripled_basicsr'):
        AtomicOutputDir(str(thesis), overwrite=True, empty_ok=True, tool='demo_data')
    assert snapshot(tmp_path) == before and tree_fingerprint(root) == fp


def test_an_output_that_is_a_file_is_refused_and_leaves_no_sibling(tmp_path, src):
    gt, lq, root, fp = src
    f = tmp_path / 'data.bin'
    f.write_bytes(b'\x00' * 10)
    before = snapshot(tmp_path)
    with pytest.raises(OutputExistsError, match=rf'Output {f} is an existing file.*never replaced'):
        pack(gt, lq, str(f), overwrite=True, progress=False)
    assert snapshot(tmp_path) == before and hidden(tmp_path) == []


def test_overwrite_replaces_our_outputs_atomically(tmp_path, src):
    gt, lq, root, fp = src
    out = tmp_path / 'o'
    pack(gt, lq, str(out), progress=False)
    assert read_marker(str(out))['tool'] == 'pack' and (out / MARKER_FILE).exists()
    with pytest.raises(OutputExistsError, match=rf'Output {out} already exists \(a pack output\).*--overwrite'):
        pack(gt, lq, str(out), progress=False)
    pack(gt, lq, str(out), tile_size=32, overwrite=True, progress=False)
    assert read_meta(str(out))['tile_size'] == 32
    # an output of an earlier version (tripled_meta.json, no marker) is ours as well
    os.remove(out / MARKER_FILE)
    pack(gt, lq, str(out), overwrite=True, progress=False)
    assert read_meta(str(out))['tile_size'] == 0 and read_marker(str(out))['tool'] == 'pack'
    # an empty folder may be used; a folder holding only a marker-like file of someone else may not
    (tmp_path / 'empty').mkdir()
    pack(gt, lq, str(tmp_path / 'empty'), overwrite=True, progress=False)
    fake = tmp_path / 'fake'
    fake.mkdir()
    (fake / 'tripled_meta.json').write_text('{"format": "something-else"}')
    with pytest.raises(OutputExistsError, match='not written by tripled_basicsr'):
        pack(gt, lq, str(fake), overwrite=True, progress=False)
    assert hidden(tmp_path) == [] and tree_fingerprint(root) == fp


def test_failed_rebuild_keeps_the_old_output(tmp_path, src, monkeypatch):
    gt, lq, root, fp = src
    out = tmp_path / 'o'
    pack(gt, lq, str(out), progress=False)
    before = tree_fingerprint(str(out))
    real = PairedSource.read_pair

    def flaky(self, i):
        if i == 2:
            raise ValueError('unreadable pair')
        return real(self, i)

    monkeypatch.setattr(PairedSource, 'read_pair', flaky)
    with pytest.raises(ValueError, match='unreadable pair'):
        pack(gt, lq, str(out), tile_size=32, overwrite=True, progress=False)
    assert tree_fingerprint(str(out)) == before and hidden(tmp_path) == [] and tree_fingerprint(root) == fp


def test_a_failed_delete_of_the_old_tree_is_reported_and_cleaned_by_the_next_run(tmp_path, src, monkeypatch, caplog):
    gt, lq, root, fp = src
    out = tmp_path / 'o'
    pack(gt, lq, str(out), progress=False)
    real = outio.remove_tree
    monkeypatch.setattr(outio, 'remove_tree',
                        lambda p: OSError('Device or resource busy') if '.o.old-' in p else real(p))
    with caplog.at_level(logging.WARNING, 'tripled_basicsr.output'):
        pack(gt, lq, str(out), tile_size=32, overwrite=True, progress=False)
    left = hidden(tmp_path)
    assert len(left) == 1 and left[0].startswith('.o.old-')
    assert f'could not delete the replaced output, now at {tmp_path / left[0]}' in caplog.text
    assert read_meta(str(out))['tile_size'] == 32
    monkeypatch.setattr(outio, 'remove_tree', real)
    caplog.clear()
    with caplog.at_level(logging.WARNING, 'tripled_basicsr.output'):
        pack(gt, lq, str(out), overwrite=True, progress=False)
    assert f'removed {tmp_path / left[0]}' in caplog.text
    assert hidden(tmp_path) == [] and tree_fingerprint(root) == fp


# ----------------------------------------------------------------------------- leftovers and signals (item 6)
def run_pack(args, signal_after=None):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    env.pop('TRIPLED_PACK_SIGNAL_AFTER', None)
    if signal_after:
        env['TRIPLED_PACK_SIGNAL_AFTER'] = signal_after
    return subprocess.run([sys.executable, '-m', 'tripled_basicsr.pack', '--quiet'] + args, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)


@pytest.mark.slow  # a real interpreter start (torch, BasicSR): about 10 s on 2 busy cores
def test_sigkilled_pack_leftover_is_removed_by_the_next_run(tmp_path, src, caplog):
    gt, lq, root, fp = src
    out = tmp_path / 'o'
    r = run_pack(['--gt', gt, '--lq', lq, '--out', str(out)], signal_after='2:KILL')
    assert r.returncode == -signal.SIGKILL
    left = hidden(tmp_path)  # what a kill -9 leaves: the temp dir, with its marker naming the dead writer
    assert len(left) == 1 and left[0].startswith('.o.tmp-')
    marker = json.loads((tmp_path / left[0] / MARKER_FILE).read_text())
    assert marker['complete'] is False and marker['temp'] == left[0] and 'pid_start' in marker and not out.exists()
    # bystanders the cleanup must not touch: not ours (no marker), a live writer's, another output's
    (tmp_path / '.o.tmp-1-0badc0de').mkdir()
    (tmp_path / '.o.tmp-1-0badc0de' / 'keep.txt').write_text('not ours')
    alive = tmp_path / f'.o.tmp-{os.getppid()}-aaaaaaaa'
    alive.mkdir()
    (alive / MARKER_FILE).write_text(json.dumps({'format': 'tripled-output', 'host': outio.socket.gethostname()}))
    # a pid now used by another process than the one that wrote the temp dir (pid reuse): the writer is gone
    reused = tmp_path / f'.o.tmp-{os.getppid()}-cccccccc'
    reused.mkdir()
    (reused / MARKER_FILE).write_text(json.dumps({'format': 'tripled-output', 'host': outio.socket.gethostname(),
                                                  'pid_start': outio._proc_start(os.getppid()) + 1}))
    (tmp_path / '.other.tmp-1-bbbbbbbb').mkdir()
    (tmp_path / 'o_notes.txt').write_text('x')
    keep = {p: tree_fingerprint(str(tmp_path / p)) for p in ('.o.tmp-1-0badc0de', alive.name, '.other.tmp-1-bbbbbbbb')}
    with caplog.at_level(logging.WARNING, 'tripled_basicsr.output'):
        assert pack_cli('--gt', gt, '--lq', lq, '--out', str(out)) == 0
    assert f'removed {tmp_path / left[0]}, left behind by an interrupted run (pid {marker["pid"]})' in caplog.text
    assert f'{tmp_path / ".o.tmp-1-0badc0de"} looks like a leftover' in caplog.text and 'left alone' in caplog.text
    assert f'{alive} belongs to a run (pid {os.getppid()})' in caplog.text
    assert f'removed {reused}' in caplog.text
    assert hidden(tmp_path) == sorted(keep)
    assert all(tree_fingerprint(str(tmp_path / p)) == h for p, h in keep.items())
    assert read_meta(str(out))['num_samples'] == 3 and tree_fingerprint(root) == fp


def test_aside_dir_of_a_killed_replacement_is_removed(tmp_path, src, caplog):
    gt, lq, root, fp = src
    out = tmp_path / 'o'
    pack(gt, lq, str(out), progress=False)
    aside = tmp_path / f'.o.old-{dead_pid()}-12345678'
    pack(gt, lq, str(aside), progress=False)  # an earlier output, moved aside by a run that was then killed
    unmarked = tmp_path / f'.o.old-{dead_pid()}-87654321'
    unmarked.mkdir()
    (unmarked / 'x').write_text('x')
    with caplog.at_level(logging.WARNING, 'tripled_basicsr.output'):
        pack(gt, lq, str(out), overwrite=True, progress=False)
    assert not aside.exists() and (unmarked / 'x').read_text() == 'x'
    assert hidden(tmp_path) == [unmarked.name] and tree_fingerprint(root) == fp


@pytest.mark.slow  # a real interpreter start, as above
def test_ctrl_c_exits_130_without_traceback_or_leftovers(tmp_path, src):
    gt, lq, root, fp = src
    out = tmp_path / 'o'
    pack(gt, lq, str(out), progress=False)  # Ctrl-C while replacing it: the old output stays as it was
    before = snapshot(tmp_path)
    r = run_pack(['--gt', gt, '--lq', lq, '--out', str(out), '--overwrite'], signal_after='1:INT')
    assert r.returncode == 130, r.stderr
    assert 'Traceback' not in r.stderr
    assert r.stderr.strip() == f'pack: interrupted; {out} is unchanged and no temporary files were left.'
    assert snapshot(tmp_path) == before and tree_fingerprint(root) == fp


def test_defer_sigint_holds_ctrl_c_until_the_critical_section_ends():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with defer_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            done.append('finished')
    assert done == ['finished']
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_gt_equal_lq_warns_but_packs(tmp_path, src, caplog):
    gt, lq, root, fp = src
    with caplog.at_level(logging.WARNING, 'tripled_basicsr.pack'):
        s = pack(gt, gt, str(tmp_path / 'teacher'), progress=False)
    assert s['num_pairs'] == 3
    assert f'--gt and --lq are the same ({gt})' in caplog.text and 'clean->clean' in caplog.text
    assert tree_fingerprint(root) == fp


# ----------------------------------------------------------------------------- outputs built in place
def test_demo_workdir_overwrite_never_deletes_a_folder_it_did_not_create(tmp_path):
    from tripled_basicsr.demo import main as demo_main
    thesis = tmp_path / 'thesis'
    thesis.mkdir()
    (thesis / 'draft.tex').write_text('days of work')
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit, match=rf'demo: (error: )?Output {thesis} already exists and was not written by '):
        demo_main(['--workdir', str(thesis), '--overwrite'])
    assert snapshot(tmp_path) == before


def test_prepare_output_dir_applies_the_same_policy(tmp_path, src):
    from tripled_basicsr.utils.ownership import prepare_output_dir
    gt, lq, root, fp = src
    work = prepare_output_dir(str(tmp_path / 'w'), tool='study', layout=('partial.*',))
    assert read_marker(work)['tool'] == 'study'
    (tmp_path / 'w' / 'partial.txt').write_text('x')
    with pytest.raises(OutputExistsError, match=r'already exists \(a study output.*--overwrite'):
        prepare_output_dir(work, tool='study')
    assert prepare_output_dir(work, tool='study', reuse=True) == work  # a resumable run keeps its files
    assert sorted(os.listdir(work)) == [MARKER_FILE, 'partial.txt']
    with pytest.raises(OutputExistsError, match=r'is a study dir, not a demo work dir'):  # another tool's: not reused
        prepare_output_dir(work, tool='demo', reuse=True)
    assert sorted(os.listdir(work)) == [MARKER_FILE, 'partial.txt']
    assert prepare_output_dir(work, overwrite=True, tool='study') == work
    assert os.listdir(work) == [MARKER_FILE] and hidden(tmp_path) == []
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'a.txt').write_text('x')
    with pytest.raises(OutputExistsError, match='not written by tripled_basicsr'):
        prepare_output_dir(str(tmp_path / 'mine'), tool='study', reuse=True)
    with pytest.raises(OutputConflictError, match='lies inside the source dataroot_gt'):
        prepare_output_dir(os.path.join(gt, 'w'), sources={'dataroot_gt': gt}, tool='study')
    assert tree_fingerprint(root) == fp


def test_path_relation_resolves_home_and_links(tmp_path, monkeypatch):
    from tripled_basicsr.utils.ownership import path_relation
    monkeypatch.setenv('HOME', str(tmp_path))
    (tmp_path / 'data' / 'gt').mkdir(parents=True)
    os.symlink(tmp_path / 'data', tmp_path / 'd')
    assert path_relation('~/data', str(tmp_path / 'data' / 'gt')) == 'contains'
    assert path_relation(str(tmp_path / 'data' / 'gt'), '~/data/gt') == 'is'
    assert path_relation(str(tmp_path / 'd' / 'gt' / 'x'), str(tmp_path / 'data' / 'gt')) == 'lies inside'
    assert path_relation(str(tmp_path / 'data' / 'gt_packed'), str(tmp_path / 'data' / 'gt')) is None
    assert path_relation(str(tmp_path / 'data2'), str(tmp_path / 'data')) is None


def test_ctrl_c_during_the_final_rename_still_gives_a_complete_output(tmp_path, src, monkeypatch):
    gt, lq, root, fp = src
    out = tmp_path / 'o'
    pack(gt, lq, str(out), progress=False)
    real = outio.os.rename

    def rename_then_ctrl_c(a, b):
        real(a, b)
        if os.path.basename(b) == 'o':  # the new tree just went into place
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(outio.os, 'rename', rename_then_ctrl_c)
    s = pack(gt, lq, str(out), tile_size=32, overwrite=True, progress=False)
    monkeypatch.undo()
    assert s['num_pairs'] == 3 and read_meta(str(out))['tile_size'] == 32
    assert hidden(tmp_path) == [] and tree_fingerprint(root) == fp
    # the same interrupt in a bare AtomicOutputDir is raised once the output is complete
    monkeypatch.setattr(outio.os, 'rename', rename_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        with AtomicOutputDir(str(out), overwrite=True) as tmp:
            open(os.path.join(tmp, 'x.txt'), 'w').close()
    monkeypatch.undo()
    assert sorted(os.listdir(out)) == [MARKER_FILE, 'x.txt'] and hidden(tmp_path) == []


def test_defer_sigint_hands_the_interrupt_to_the_previous_handler():
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with defer_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            assert seen == []
        assert seen == [signal.SIGINT]
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with defer_sigint():  # an ignored Ctrl-C stays ignored
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_two_writers_to_one_output_the_later_one_does_not_clobber(tmp_path):
    out = str(tmp_path / 'o')
    a, b = AtomicOutputDir(out, tool='demo_data'), AtomicOutputDir(out, tool='demo_data')
    ta, tb = a.__enter__(), b.__enter__()
    assert ta != tb
    open(os.path.join(ta, 'a.txt'), 'w').close()
    open(os.path.join(tb, 'b.txt'), 'w').close()
    a.__exit__(None, None, None)  # a finishes first
    with pytest.raises(OutputExistsError, match=r'already exists \(a demo_data output\)'):
        b.__exit__(None, None, None)
    assert sorted(os.listdir(out)) == [MARKER_FILE, 'a.txt'] and hidden(tmp_path) == []
