"""The common ending of our command-line entry points, and the one unknown-option-key error
(with the closest valid keys) that every command's option checks raise."""
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


def unknown_key(path, key, allowed, doc, extra='', error=ValueError):
    """The error for an option key that does not exist, with the close matches (difflib).

    ``path``: the section it is in, with a trailing dot (``'tile.'``; ``''`` at the top);
    ``doc``: where every key is listed. One wording for every command (the distiller's
    ``checks.unknown_key`` gives the same message)."""
    import difflib
    close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=3)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    return error(f'Unknown option {path}{key}.{hint}{extra} See {doc} for every key.')


def check_keys(section, allowed, path, doc, error=ValueError):
    """Raise ``unknown_key`` for the first key of the mapping ``section`` not in ``allowed``."""
    for k in section or {}:
        if k not in allowed:
            raise unknown_key(path, k, list(allowed), doc, error=error)
