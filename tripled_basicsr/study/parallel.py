"""``--jobs N`` and ``--shard i/n``: the study's runs in parallel processes, one study dir, one report.

Design: a scheduler in the parent launches one *worker subprocess* per run
(``python -m tripled_basicsr.study --worker RUN``, the options as YAML on its stdin), at most
``jobs`` at once, and polls them. Why not a ``ProcessPoolExecutor``: a run already is a chain
of subprocesses (distiller, BasicSR trainer), so a plain child per run needs no pickling and
no fork of a process that imported torch; a crashed worker is one failed run, not a broken
pool; each run gets its own log (``runs/{run}/worker.log``); and stopping is one signal per
run: every worker leads its own process group (its trainer and distiller inherit it), so
Ctrl-C or ``kill`` of the study SIGTERMs each group (SIGKILL after a grace period) and leaves
no orphan trainer. Each worker and its subprocesses run with ``OMP_NUM_THREADS`` =
``MKL_NUM_THREADS`` = ``threads`` (default 1) and ``torch.set_num_threads(threads)``: N
processes with as many threads each as there are cores would oversubscribe the CPU.

What runs share, and how (``flock``, released by the kernel when a holder dies or is killed):

* the test sets' input PSNR (``input_psnr.json``) and the pool's image sizes
  (``source_shapes.json``): computed by the parent before any worker starts, under the study
  lock ``study_dir/.lock`` (so shards started at once compute them once);
* the report: written by the parent only, when every run has ended, under the same lock;
* a distill arm's feature cache (``distill_work/{hash}``): one distillation at a time per
  cache (``{hash}.study.lock``, a waiting lock; the distiller's own lock would refuse);
* a run: its worker holds ``runs/{run}/.lock`` (non-blocking); a run held by another process
  (another shard, a second command), or whose trainer from an earlier command is still alive,
  is skipped with a note.

Everything else a run writes is its own (``runs/{run}``, ``subsets/{run}``,
``experiments/{name}_{run}``), written atomically where it is read by others.
"""
import os
import signal
import subprocess
import sys
import time

from tripled_basicsr.study.runner import Busy, StudyError, file_lock, log_error
from tripled_basicsr.utils.io import read_json
from tripled_basicsr.utils.log import note, warn

SKIPPED = 75  # a worker's exit code for "run held by another process" (EX_TEMPFAIL)
GRACE_S = 30  # after SIGTERM, the seconds a worker has to stop its trainer before SIGKILL


def parse_shard(text):
    """'i/n' -> (i, n) with 0 <= i < n; ValueError with the rule otherwise."""
    try:
        i, n = (int(x) for x in str(text).split('/'))
    except ValueError:
        i = n = None
    if i is None or n < 1 or not 0 <= i < n:
        raise ValueError(f'--shard must be i/n with 0 <= i < n (0-based; e.g. 0/2 and 1/2 for two machines); '
                         f'got {text!r}.')
    return i, n


def shard_runs(runs, shard):
    """The runs whose index in the plan is i modulo n."""
    if not shard:
        return list(runs)
    i, n = shard
    return [r for k, r in enumerate(runs) if k % n == i]


def thread_env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def _final_psnr(study, run):
    ev = read_json(study.path('runs', run.id, 'eval.json')) or {}
    final = ev.get(str(study.final_iter(run))) or {}
    return '  '.join(f'{lb}: {v["psnr"]:.2f} dB' for lb, v in final.items())


def _open(user_opt, shard, restart):
    """Check the options, open the study dir and compute what runs share (once, under the study
    lock). -> (study, evaluator, this shard's runs)."""
    from tripled_basicsr.study import open_study_dir, write_study_yml
    from tripled_basicsr.study.report import Evaluator
    from tripled_basicsr.study.runner import open_options
    if restart and shard:
        raise StudyError('--restart with --shard would delete the runs of the other shards: restart once without '
                         '--shard (or delete the study dir), then start the shards.')
    opt, study = open_options(user_opt)
    study.check()
    open_study_dir(opt, restart)
    write_study_yml(study, user_opt)
    mine = shard_runs(study.runs, shard)
    with file_lock(study.path('.lock')):  # computed once, also by shards started together
        evaluator = Evaluator(opt)
        evaluator.input_scores(study)
        if any(r.arm['kind'] == 'random_crops' and not os.path.isfile(study.path('runs', r.id, 'done.json'))
               for r in mine):
            from tripled_basicsr.study.subsets import gt_shapes, open_source
            gt_shapes(open_source(opt['source']), study.path('source_shapes.json'))
    return study, evaluator, mine


def _launch(study, run, options, env):
    """Start the worker of ``run`` (its own process group: see stop()), the options on its stdin.
    -> (process, (run, start time, worker log, the log's size before))."""
    wlog = study.path('runs', run.id, 'worker.log')
    start = os.path.getsize(wlog) if os.path.isfile(wlog) else 0
    with open(wlog, 'a', encoding='utf-8') as f:
        proc = subprocess.Popen([sys.executable, '-m', 'tripled_basicsr.study', '--worker', run.id],
                                stdin=subprocess.PIPE, stdout=f, stderr=subprocess.STDOUT, env=env,
                                text=True, start_new_session=True)
    try:
        proc.stdin.write(options)
        proc.stdin.close()
    except OSError:  # the worker died at once: reported with its log when it is reaped
        pass
    return proc, (run, time.time(), wlog, start)


class _Board:
    """The runs ended so far (``[k/total]`` lines, the time left) and those that failed or were skipped."""

    def __init__(self, study, total, jobs):
        self.study, self.total, self.jobs = study, total, jobs
        self.k, self.t0 = 0, time.time()
        self.durations, self.failed, self.skipped = [], [], []

    def done_before(self, run):
        self.k += 1
        note(f'[{self.k}/{self.total}] {run.id} (done, skipped)  {_final_psnr(self.study, run)}')

    def ended(self, proc, entry, left):
        """Say how the worker ``proc`` of ``entry`` (see _launch) ended; ``left``: runs not ended yet."""
        run, t_run, wlog, start = entry
        self.k += 1
        now = time.time()
        head = f'[{self.k}/{self.total}] {run.id} (arm {run.arm_name}, seed {run.seed})'
        if proc.returncode == 0:
            self.durations.append(now - t_run)
            eta = (f', about {sum(self.durations) / len(self.durations) * left / self.jobs / 60:.1f} min left'
                   if left else '')
            note(f'{head} {(now - t_run) / 60:.1f} min  elapsed {(now - self.t0) / 60:.1f} min{eta}  '
                 f'{_final_psnr(self.study, run)}')
        elif proc.returncode == SKIPPED:
            self.skipped.append(run.id)
            why = log_error(wlog, start, max_lines=1).removeprefix('note: ')  # the worker's own note
            note(f'{head} skipped ({why})')
        else:
            self.failed.append((run.id, log_error(wlog, start)))
            warn(f'{head} FAILED (exit {proc.returncode}) after {(now - t_run) / 60:.1f} min: '
                 f'{self.failed[-1][1]}\n  (full log: {wlog})')


def run_parallel(user_opt, jobs=1, shard=None, threads=1, restart=False):
    """Run (or resume) the study's runs (this shard's, with ``shard=(i, n)``) in ``jobs``
    worker processes; -> the report's markdown table (progress: utils/log.note). Raises StudyError when a run failed
    (after the other runs ended and the report was written)."""
    import yaml

    from tripled_basicsr.study.report import write_report
    study, evaluator, mine = _open(user_opt, shard, restart)
    done = {r.id: study.open_run(r) for r in mine}  # a run finished with other options stops here, before any work
    what = f'shard {shard[0]}/{shard[1]}: {len(mine)} of {len(study.runs)} runs' if shard else f'{len(mine)} runs'
    note(f'study {study.opt["name"]}: {what} in {study.dir}; {jobs} at once, {threads} thread(s) each')
    board = _Board(study, len(mine), jobs)
    todo = []
    for run in mine:
        if done[run.id] and not evaluator.pending(study, run):
            board.done_before(run)
        else:
            todo.append(run)
    options = yaml.safe_dump(user_opt, sort_keys=False)
    env = thread_env(threads)
    active = {}
    try:
        while todo or active:
            while todo and len(active) < jobs:
                proc, entry = _launch(study, todo.pop(0), options, env)
                active[proc] = entry
            time.sleep(0.2)
            for proc in [p for p in active if p.poll() is not None]:
                entry = active.pop(proc)
                board.ended(proc, entry, len(todo) + len(active))
    finally:  # Ctrl-C, kill or an error here: stop every worker with its trainer, then the report
        if active:
            note(f'stopping {len(active)} run(s): {", ".join(r.id for r, *_ in active.values())} (they resume when '
                 f'the command runs again)')
        stop(active)
        md = write_report(study, evaluator)
    if md:
        note(f'report: {study.path("report")}/table.md, results.csv, results.json, *.png')
    if board.skipped:
        note(f'{len(board.skipped)} run(s) skipped, held by another process: {", ".join(board.skipped)}. Run the '
             f'same command again once it is done (or --report-only to gather what finished).')
    if board.failed:
        raise StudyError(f'{len(board.failed)} of {board.total} runs failed: {", ".join(r for r, _ in board.failed)} '
                         f'(errors above; logs in runs/RUN/worker.log). Run the same command again to retry them: '
                         f'finished runs are kept.')
    return md


def stop(active):
    """SIGTERM every worker's process group (worker, trainer, distiller), SIGKILL after GRACE_S."""
    for proc in active:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.time() + GRACE_S
    for proc in active:
        try:
            proc.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    for proc in active:  # the trainer of a worker that died first
        _signal_group(proc, signal.SIGKILL)


def _signal_group(proc, sig):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def worker(run_id, stream):
    """One run in this process (``--worker``): the options (YAML) from ``stream``; prepare,
    train and evaluate unless it is finished; -> 0, or SKIPPED when another process holds it."""
    import torch

    from tripled_basicsr.safe_yaml import load_options_stream
    from tripled_basicsr.study.report import Evaluator
    from tripled_basicsr.study.runner import open_options
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS') or 1))
    opt, study = open_options(load_options_stream(stream))
    runs = {r.id: r for r in study.runs}
    if run_id not in runs:
        raise StudyError(f'run {run_id!r} is not in the plan of study {opt["name"]}.')
    run = runs[run_id]
    study.lock = file_lock  # shared caches: wait for the other runs
    try:
        with file_lock(study.path('runs', run.id, '.lock'), wait=False):
            pid = study.live_trainer(run)
            if pid:
                note(f'its trainer from an earlier command, process {pid}, is still running: stop it or let it end')
                return SKIPPED
            if not os.path.isfile(study.path('runs', run.id, 'done.json')):
                study.train(run, study.prepare(run))
            Evaluator(opt).evaluate_run(study, run)
    except Busy as exc:
        note(f'being run by another study process: {exc}')
        return SKIPPED
    return 0
