"""One channel for the package's notes: BasicSR's logger once a BasicSR run in this process has
set it up (``get_root_logger``: the note lands in the run's log file and console), else one
``note: ...`` line on stderr; ``set_quiet()`` (the commands' ``--quiet``) silences the stderr
notes. BasicSR is never imported here: the distiller stays light."""
import logging
import sys

LOGGER_NAME = 'basicsr'  # basicsr.utils.get_root_logger's name
_state = {'quiet': False}


def set_quiet(flag=True):
    _state['quiet'] = bool(flag)


def _run_logger():
    """BasicSR's logger if a run has initialised it (without importing BasicSR), else None."""
    mod = sys.modules.get('basicsr.utils.logger')
    if mod is not None and LOGGER_NAME in getattr(mod, 'initialized_logger', ()):
        return logging.getLogger(LOGGER_NAME)
    return None


def note(msg):
    """Say ``msg`` once: to BasicSR's run logger if there is one, else on stderr unless quiet."""
    logger = _run_logger()
    if logger is not None:
        logger.info(f'note: {msg}')
    elif not _state['quiet']:
        print(f'note: {msg}', file=sys.stderr, flush=True)


def warn(msg):
    """As :func:`note`, at warning level (``warning: ...``); quiet mode does not silence it."""
    logger = _run_logger()
    if logger is not None:
        logger.warning(msg)
    else:
        print(f'warning: {msg}', file=sys.stderr, flush=True)
