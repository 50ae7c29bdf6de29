"""The common ending of our command-line entry points (option errors: tripled_basicsr/options.py)."""
import sys


def run_command(prog, body, debug=False, errors=(ValueError, OSError)):
    """Run ``body()`` and turn it into an exit code.

    ``body`` returns an exit code (``None`` = 0). An expected error (``errors``: bad options,
    missing files) is printed as one line ``prog: error: ...`` on stderr with exit code 2;
    ``debug`` re-raises it for the full traceback. Anything else propagates (a bug).
    """
    try:
        code = body()
    except errors as exc:
        if debug:
            raise
        print(f'{prog}: error: {exc}', file=sys.stderr)
        return 2
    return 0 if code is None else code
