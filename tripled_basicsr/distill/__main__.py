"""``python -m tripled_basicsr.distill -opt options/distill_X.yml`` (also ``tripled-distill``).

Under ``torchrun --nproc_per_node=K -m tripled_basicsr.distill -opt X.yml`` the ranks share
the feature extraction and rank 0 selects and writes.
"""
import argparse
import sys


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m tripled_basicsr.distill',
                                description='TripleD: distil a paired LQ/GT training set into a small, '
                                            'distribution-aware, curriculum-annotated LMDB subset.')
    p.add_argument('-opt', '--opt', required=True, help='YAML options (see docs/distill.md)')
    p.add_argument('--force-overwrite', action='store_true', help='same as output.overwrite: true')
    p.add_argument('--quiet', action='store_true', help='no progress bars, notes or full report; warnings and the '
                                                         'one-line summary are still printed')
    p.add_argument('--debug', action='store_true', help='show full tracebacks')
    args = p.parse_args(argv)
    from tripled_basicsr.utils.log import set_quiet
    set_quiet(args.quiet)

    from tripled_basicsr.distill import run_distill
    from tripled_basicsr.distill.report import one_line_summary
    from tripled_basicsr.utils.io import load_yaml_safe

    try:
        opt = load_yaml_safe(args.opt)  # safe loader: a Python-object tag is refused, never run
        if args.force_overwrite:
            if not isinstance(opt.get('output'), dict):
                opt['output'] = {}
            opt['output']['overwrite'] = True
        summary = run_distill(opt, progress=not args.quiet)
        if summary is not None and args.quiet:
            print(one_line_summary(summary))
    except KeyboardInterrupt:
        print('\ninterrupted: features computed so far are kept in the work dir; run the same command again to '
              'resume.', file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001
        if args.debug:
            raise
        print(f'error: {type(exc).__name__}: {exc}', file=sys.stderr)
        return 2
    finally:
        _cleanup_dist()
    return 0


def _cleanup_dist():
    try:
        import torch.distributed as tdist
        if tdist.is_available() and tdist.is_initialized():
            tdist.destroy_process_group()
    except Exception:
        pass


if __name__ == '__main__':
    sys.exit(main())
