"""CLI: ``python -m tripled_basicsr.study -opt options/study_*.yml``."""
import argparse
import sys


def _positive_int(flag):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            v = 0
        if v < 1:
            raise argparse.ArgumentTypeError(f'{flag} must be a positive integer; got {text!r}')
        return v
    return parse


def _shard(text):
    from tripled_basicsr.study.parallel import parse_shard
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser(worker):
    p = argparse.ArgumentParser(prog='python -m tripled_basicsr.study',
                                description='Subset study: full vs random vs random crops vs TripleD (docs/study.md); with mode: slkd in the '
                                            'options, the SLKD study (docs/slkd.md).')
    p.add_argument('-opt', required=not worker, help='study YAML (options/study_*.yml)')
    p.add_argument('--report-only', action='store_true', help='only rebuild the report from finished runs')
    p.add_argument('--plan', action='store_true', help='list the runs (of --shard) and exit')
    p.add_argument('--restart', action='store_true', help='delete an earlier study in study_dir and start again')
    p.add_argument('--jobs', type=_positive_int('--jobs'), default=1,
                   help='runs trained at once, each in its own process with --threads threads (default 1: one '
                        'after the other, in this process)')
    p.add_argument('--shard', type=_shard, default=None, metavar='I/N',
                   help='run only the runs whose index in the plan is I modulo N (0-based), e.g. 0/2 and 1/2 on '
                        'two machines sharing study_dir; then --report-only gathers them')
    p.add_argument('--threads', type=_positive_int('--threads'), default=None,
                   help='CPU threads per run (default with --jobs/--shard: 1; otherwise the environment\'s)')
    p.add_argument('--worker', metavar='RUN', help=argparse.SUPPRESS)  # internal: one run, options on stdin
    p.add_argument('--debug', action='store_true', help='full tracebacks')
    return p


def _signals_and_threads(args, parallel):
    """SIGTERM (and SIGHUP for parallel runs) stop the trainers too; the thread count for runs
    trained in this process. -> threads per run (None: the environment's)."""
    import signal

    def _term(signum, frame):  # `kill PID` stops the trainer subprocess too (see Study.train)
        raise SystemExit(143)
    signal.signal(signal.SIGTERM, _term)
    if parallel and not (args.plan or args.report_only):  # a closed terminal stops the workers too (own sessions)
        signal.signal(signal.SIGHUP, _term)
    threads = args.threads or (1 if parallel else None)  # a worker: the variables its parent set
    if threads and not parallel and not args.worker:  # trains here: its trainers inherit the variables
        import os
        for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
            os.environ[var] = str(threads)
        import torch
        torch.set_num_threads(threads)
    return threads


def _plan(user, shard):
    from tripled_basicsr.study.parallel import shard_runs
    from tripled_basicsr.study.runner import open_options
    study = open_options(user)[1]
    study.check()  # a plan that could not run is an error, as the run would be
    for r in shard_runs(study.runs, shard):
        print(r.id)
    return 0


def _report_only(user):
    from tripled_basicsr.study.report import Evaluator, write_report
    from tripled_basicsr.study.runner import open_options
    opt, study = open_options(user)
    md = write_report(study, Evaluator(opt))
    print(md or 'no finished run yet')
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    worker = any(a.split('=')[0] == '--worker' for a in argv)  # internal: the options come on stdin
    p = _parser(worker)
    args = p.parse_args(argv)
    if args.restart and args.shard:
        p.error('--restart with --shard would delete the runs of the other shards: restart once without --shard '
                '(or delete the study dir), then start the shards')
    parallel = args.jobs > 1 or args.shard is not None
    threads = _signals_and_threads(args, parallel)
    import tripled_basicsr
    tripled_basicsr.register()  # BasicSR registries, before arm names and networks are checked
    from tripled_basicsr.study import StudyError, run_study
    from tripled_basicsr.utils.cli import run_command
    from tripled_basicsr.utils.io import load_yaml_safe

    def body():
        if args.worker:
            from tripled_basicsr.study.parallel import worker
            return worker(args.worker, sys.stdin)
        user = load_yaml_safe(args.opt)
        if args.plan:
            return _plan(user, args.shard)
        if args.report_only:
            return _report_only(user)
        try:
            md = run_study(user, restart=args.restart, jobs=args.jobs, shard=args.shard, threads=threads)
        except KeyboardInterrupt:
            print('study: interrupted; run the same command to continue (finished runs are kept, the current one '
                  'resumes from its last training state).', file=sys.stderr)
            return 130
        if md:
            print(md, flush=True)  # the report's table: the command's result
        return 0

    return run_command('study', body, args.debug, (StudyError, ValueError, FileNotFoundError, OSError))


if __name__ == '__main__':
    sys.exit(main())
