"""``--jobs N`` / ``--shard I/N`` of the study (tripled_basicsr/study/parallel.py): the same runs
and numbers as the one-process study, shared work done once, held and failed runs, Ctrl-C."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import yaml
from test_study import _opt, _pairs

from tripled_basicsr.study import StudyError, merge_options, open_study_dir, run_study
from tripled_basicsr.study.parallel import parse_shard, shard_runs
from tripled_basicsr.study.runner import Busy, Study, _alive, file_lock

# hand-crafted features: a distill arm in seconds, no network
DISTILL = {'features': {'backbone': 'tripled_stats', 'model_kwargs': {}, 'input_size': 48}}


def _study_main(*args):
    from tripled_basicsr.study.__main__ import main
    return main(list(args))


def _write_opt(tmp_path, name='study', **over):
    opt = _opt(tmp_path, study_dir=str(tmp_path / name), **over)
    p = tmp_path / f'{name}.yml'
    p.write_text(yaml.safe_dump(opt))
    return opt, p


def test_shard_parsing_and_plan_split():
    assert parse_shard('0/2') == (0, 2) and parse_shard('2/3') == (2, 3)
    for bad in ('2/2', '-1/2', '1:2', 'a/b', '0/0', '1'):
        with pytest.raises(ValueError, match='--shard must be i/n with 0 <= i < n'):
            parse_shard(bad)
    runs = list('abcde')
    parts = [shard_runs(runs, (i, 3)) for i in range(3)]
    assert parts == [['a', 'd'], ['b', 'e'], ['c']] and shard_runs(runs, None) == runs


@pytest.mark.parametrize('flags, needle', [
    (['--shard', '2/2'], "--shard must be i/n with 0 <= i < n .*got '2/2'"),
    (['--shard', 'x'], '--shard must be i/n'),
    (['--jobs', '0'], "--jobs must be a positive integer; got '0'"),
    (['--threads', '-1'], '--threads must be a positive integer'),
    (['--restart', '--shard', '0/2'], '--restart with --shard would delete the runs of the other shards'),
])
def test_bad_jobs_or_shard_is_refused_before_anything_is_written(tmp_path, capsys, flags, needle):
    import re
    _, p = _write_opt(tmp_path)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(SystemExit) as exc:
        _study_main('-opt', str(p), *flags)
    assert exc.value.code == 2 and re.search(needle, capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == before  # no study dir, nothing else


def test_file_lock_waits_or_names_the_holder(tmp_path):
    path = str(tmp_path / '.lock')
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys, time\nfrom tripled_basicsr.study.runner import file_lock\n'
         f'with file_lock({path!r}):\n    print("held", flush=True)\n    time.sleep(1.5)\n'],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'held'
        with pytest.raises(Busy, match=f'pid {holder.pid} on '):
            with file_lock(path, wait=False):
                pass
        t = time.time()
        with file_lock(path):  # waits for the holder to let go
            assert holder.poll() is not None or time.time() - t > 0.5
    finally:
        holder.kill()
        holder.wait()


def test_a_planted_link_for_a_study_lock_is_never_written_through(tmp_path, capsys):
    _pairs(str(tmp_path / 'val'), 3, 32, 1)
    opt, p = _write_opt(tmp_path)
    st = open_study_dir(merge_options(opt))
    thesis = tmp_path / 'thesis.txt'
    thesis.write_text('mine')
    os.symlink(thesis, os.path.join(st, '.lock'))
    assert _study_main('-opt', str(p), '--report-only') == 2
    assert 'is a symbolic link' in capsys.readouterr().err and thesis.read_text() == 'mine'


def _pid_in(lock):
    """The pid a lock file names ('pid N on HOST')."""
    with open(lock, encoding='utf-8') as f:
        return int(f.read().split()[1])


def _running(pid, needle):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return needle in f.read()
    except OSError:
        return False


@pytest.mark.slow
def test_held_runs_are_skipped_and_a_failed_run_reported_while_the_others_go_on(tmp_path, notes):
    _pairs(str(tmp_path / 'pool'), 12, 40, 0)
    _pairs(str(tmp_path / 'val'), 3, 32, 1)
    opt = _opt(tmp_path, arms=['random'], seeds=[0, 1, 2])  # random_25pct_s0, _s1, _s2
    st = tmp_path / 'study'
    open_study_dir(merge_options(opt))
    for s in (0, 2):
        (st / 'runs' / f'random_25pct_s{s}').mkdir(parents=True)
    (st / 'subsets' / 'random_25pct_s1').mkdir(parents=True)  # not a subset the study wrote: that run fails
    (st / 'subsets' / 'random_25pct_s1' / 'mine.txt').write_text('x')
    lock = str(st / 'runs' / 'random_25pct_s0' / '.lock')  # s0: held by another study process
    holder = subprocess.Popen([sys.executable, '-c', 'import time\nfrom tripled_basicsr.study.runner import '
                               f'file_lock\nwith file_lock({lock!r}):\n    print("held", flush=True)\n'
                               '    time.sleep(60)\n'], stdout=subprocess.PIPE, text=True)
    # s2: the trainer of an earlier, killed command is still alive (its command line names the trainer)
    trainer = subprocess.Popen([sys.executable, '-c', 'import time; print("ready", flush=True); time.sleep(60)',
                                'tripled_basicsr.train'], stdout=subprocess.PIPE, text=True)
    logs = notes
    try:
        assert holder.stdout.readline().strip() == 'held' and trainer.stdout.readline().strip() == 'ready'
        (st / 'runs' / 'random_25pct_s2' / 'attempts.json').write_text(
            json.dumps([{'start': 0, 'resume_iter': 0, 'pid': trainer.pid}]))
        with pytest.raises(StudyError, match=r'1 of 3 runs failed: random_25pct_s1 .*Run the same command again'):
            run_study(opt, jobs=3)
    finally:
        for p in (holder, trainer):
            p.kill()
            p.wait()
    text = '\n'.join(logs)
    assert f'random_25pct_s0 (arm random, seed 0) skipped (being run by another study process: pid {holder.pid}' \
        in text
    assert f'random_25pct_s2 (arm random, seed 2) skipped (its trainer from an earlier command, process ' \
        f'{trainer.pid}, is still running' in text
    assert 'random_25pct_s1 (arm random, seed 1) FAILED (exit 2)' in text and 'is not a subset written by the study' \
        in text and 'worker.log' in text and '2 run(s) skipped, held by another process' in text
    assert not any((st / 'runs' / f'random_25pct_s{s}' / 'done.json').exists() for s in range(3))
    assert (st / 'subsets' / 'random_25pct_s1' / 'mine.txt').read_text() == 'x'  # never deleted


def _table(study_dir):
    """The report's table rows (the description line holds the date)."""
    text = (study_dir / 'report' / 'table.md').read_text()
    return [ln for ln in text.splitlines() if ln.startswith('|')]


@pytest.mark.slow
def test_jobs_and_shards_give_the_one_process_study(tmp_path, capsys, notes):
    _pairs(str(tmp_path / 'pool'), 12, 40, 0)
    _pairs(str(tmp_path / 'val'), 3, 32, 1)
    # plan: tripled_25pct_s0, random_crops_25pct_s0, stratified_25pct_s0 -> shard 0/2 = the two distill arms
    # (sharing one feature cache), shard 1/2 = random_crops (the pool's shapes, a prerequisite)
    over = dict(arms=['tripled', 'random_crops', 'stratified'], seeds=[0], distill=DISTILL)
    _, one_yml = _write_opt(tmp_path, 'one', **over)
    opt, p = _write_opt(tmp_path, 'par', **over)
    ids = [r.id for r in Study(merge_options(opt)).runs]

    # 1. the reference: the one-process study (--jobs 1, one thread as the workers have), meanwhile
    ref = subprocess.Popen([sys.executable, '-m', 'tripled_basicsr.study', '-opt', str(one_yml), '--threads', '1'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _shards_after_ctrl_c(tmp_path, opt, p, ids, capsys, notes)
        out = ref.communicate(timeout=300)[0]
    finally:
        if ref.poll() is None:
            ref.kill()
            ref.wait()
    assert ref.returncode == 0, out
    assert '[3/3] stratified_25pct_s0' in out  # the one-process study's progress lines, as before

    # same subsets, same checkpoints' scores, same report table
    par, one = tmp_path / 'par', tmp_path / 'one'
    for rid in ids:
        assert json.loads((par / 'runs' / rid / 'eval.json').read_text()) == \
            json.loads((one / 'runs' / rid / 'eval.json').read_text()), rid
        a, b = (json.loads((d / 'subsets' / rid / 'tripled_meta.json').read_text())['samples'] for d in (one, par))
        assert [s['key'] for s in a] == [s['key'] for s in b]
    assert _table(par) == _table(one) and len(_table(par)) > 4
    # the shared feature cache was filled once: one distillation embedded every row, the other none
    embedded = sorted(json.loads((par / 'subsets' / rid / 'tripled_meta.json').read_text())['summary']['features']
                      ['embedded_this_run'] for rid in ('tripled_25pct_s0', 'stratified_25pct_s0'))
    assert embedded[0] == 0 and embedded[1] > 0
    assert len(os.listdir(par / 'distill_work')) == 3  # {hash}/, its .features_time.json and .study.lock
    # the whole plan again, in parallel: every run is finished and scored, no worker starts
    logs = notes
    logs.clear()
    run_study(opt, jobs=2)
    assert sum('(done, skipped)' in ln for ln in logs) == 3 and not any('stopping' in ln for ln in logs)
    assert all(len((par / 'runs' / rid / 'worker.log').read_text().splitlines()) <= 3 for rid in ids[::2])


def _shards_after_ctrl_c(tmp_path, opt, p, ids, capsys, logs):
    # 2. shard 1/2, interrupted (Ctrl-C) while its trainer starts: workers and trainers stop, nothing runs on
    par = tmp_path / 'par'
    stop = threading.Event()

    def ctrl_c_once_training():
        import _thread
        while not stop.wait(0.05):
            if (par / 'runs' / 'random_crops_25pct_s0' / 'attempts.json').exists():
                _thread.interrupt_main()  # what Ctrl-C does to the command: KeyboardInterrupt in its main thread
                return
    watcher = threading.Thread(target=ctrl_c_once_training)
    watcher.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_study(opt, shard=(1, 2))
    finally:
        stop.set()
        watcher.join()
    rdir = par / 'runs' / 'random_crops_25pct_s0'
    trainer = json.loads((rdir / 'attempts.json').read_text())[-1]['pid']
    worker = _pid_in(rdir / '.lock')
    assert not _alive(trainer) and not _running(worker, b'--worker')  # no orphans
    assert not (rdir / 'done.json').exists()
    assert any(ln.startswith('stopping 1 run(s): random_crops_25pct_s0') for ln in logs)

    # 3. the shards (resuming): shard 1/2, then shard 0/2 with --jobs 2 (both distill arms at once)
    logs.clear()
    run_study(opt, shard=(1, 2))
    assert any(ln.startswith('[1/1] random_crops_25pct_s0 (arm random_crops, seed 0)') and 'val: ' in ln
               for ln in logs)
    logs.clear()
    run_study(opt, jobs=2, shard=(0, 2))
    done = [ln.split()[1] for ln in logs if ln.startswith('[')]
    assert sorted(done) == ['stratified_25pct_s0', 'tripled_25pct_s0']
    for shard, want in (('0/2', ids[0::2]), ('1/2', ids[1::2])):  # --plan --shard lists the same split
        capsys.readouterr()
        assert _study_main('-opt', str(p), '--plan', '--shard', shard) == 0
        assert capsys.readouterr().out.split() == want
    assert _study_main('-opt', str(p), '--report-only') == 0
