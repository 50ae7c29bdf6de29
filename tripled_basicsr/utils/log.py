"""One channel for the package's notes: BasicSR's logger once a BasicSR run in this process has
set it up (``get_root_logger``: the note lands in the run's log file and console), else one
``note: ...`` line on stderr; ``set_quiet()`` (the commands' ``--quiet``) silences the stderr
notes. ``sink(fn)`` also hands every note and warning to ``fn`` while a block runs (the demo's
log file, tests). BasicSR is never imported here: the distiller stays light."""
import contextlib
import logging
import sys

LOGGER_NAME = 'basicsr'  # basicsr.utils.get_root_logger's name
_state = {'quiet': False}
_sinks = []


@contextlib.contextmanager
def sink(fn):
    """While the block runs, also call ``fn(text)`` for every note and warning (text without the
    ``note:`` / ``warning:`` prefix; quiet mode does not stop it)."""
    _sinks.append(fn)
    try:
        yield fn
    finally:
        _sinks.remove(fn)


def _to_sinks(msg):
    for fn in list(_sinks):
        fn(msg)


def set_quiet(flag=True):
    _state['quiet'] = bool(flag)


def _run_logger():
    """BasicSR's logger if a run has initialised it (without importing BasicSR), else None.

    A run sets its level (INFO with the run's log file; ERROR on ranks > 0). ``get_root_logger()``
    called without a log file (a metric, a sampler outside a run) leaves it unset, i.e. at the
    root's WARNING, where a note would vanish: that is no run, and notes stay on stderr."""
    mod = sys.modules.get('basicsr.utils.logger')
    if mod is not None and LOGGER_NAME in getattr(mod, 'initialized_logger', ()):
        logger = logging.getLogger(LOGGER_NAME)
        return logger if logger.level != logging.NOTSET else None
    return None


def note(msg):
    """Say ``msg`` once: to BasicSR's run logger if there is one, else on stderr unless quiet."""
    _to_sinks(msg)
    logger = _run_logger()
    if logger is not None:
        logger.info(f'note: {msg}')
    elif not _state['quiet']:
        print(f'note: {msg}', file=sys.stderr, flush=True)


def warn(msg):
    """As :func:`note`, at warning level (``warning: ...``); quiet mode does not silence it."""
    _to_sinks(msg)
    logger = _run_logger()
    if logger is not None:
        logger.warning(msg)
    else:
        print(f'warning: {msg}', file=sys.stderr, flush=True)
