"""CLI: ``python -m tripled_basicsr.study -opt options/study_*.yml``."""
import argparse
import sys


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m tripled_basicsr.study',
                                description='Subset study: full vs random vs random crops vs TripleD (docs/study.md).')
    p.add_argument('-opt', required=True, help='study YAML (options/study_*.yml)')
    p.add_argument('--report-only', action='store_true', help='only rebuild the report from finished runs')
    p.add_argument('--plan', action='store_true', help='list the runs and exit')
    p.add_argument('--restart', action='store_true', help='delete an earlier study in study_dir and start again')
    p.add_argument('--debug', action='store_true', help='full tracebacks')
    args = p.parse_args(argv)
    import signal

    def _term(signum, frame):  # `kill PID` stops the trainer subprocess too (see Study.train)
        raise SystemExit(143)
    signal.signal(signal.SIGTERM, _term)
    import tripled_basicsr
    tripled_basicsr.register()  # BasicSR registries, before arm names and networks are checked
    from tripled_basicsr.study import StudyError, merge_options, run_study
    from tripled_basicsr.utils.cli import run_command
    from tripled_basicsr.utils.io import load_yaml_safe

    def body():
        user = load_yaml_safe(args.opt)
        if args.plan:
            from tripled_basicsr.study.runner import Study, check_study
            study = Study(merge_options(user))
            check_study(study)  # a plan that could not run is an error, as the run would be
            for r in study.runs:
                print(r.id)
            return 0
        if args.report_only:
            from tripled_basicsr.study.report import Evaluator, write_report
            from tripled_basicsr.study.runner import Study
            opt = merge_options(user)
            md = write_report(Study(opt), Evaluator(opt), print)
            print(md or 'no finished run yet')
            return 0
        try:
            run_study(user, restart=args.restart)
        except KeyboardInterrupt:
            print('study: interrupted; run the same command to continue (finished runs are kept, the current one '
                  'resumes from its last training state).', file=sys.stderr)
            return 130
        return 0

    return run_command('study', body, args.debug, (StudyError, ValueError, FileNotFoundError, OSError))


if __name__ == '__main__':
    sys.exit(main())
