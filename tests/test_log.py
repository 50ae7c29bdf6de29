"""The one notes channel: BasicSR's logger when a run has set it up, else stderr; --quiet honoured."""
import logging

import pytest

from tripled_basicsr.utils import log


@pytest.fixture
def bare_logger(monkeypatch):
    """No BasicSR run in this process (conftest), quiet off; returns a logger to install as the run's."""
    monkeypatch.setitem(log._state, 'quiet', False)
    return logging.getLogger('tripled_basicsr.test_log')


def test_note_on_stderr_without_a_basicsr_logger(bare_logger, capsys):
    log.note('crop_size auto -> 60 px')
    log.warn('moved away')
    out = capsys.readouterr()
    assert out.out == '' and out.err == 'note: crop_size auto -> 60 px\nwarning: moved away\n'


def test_quiet_silences_notes_not_warnings(bare_logger, capsys):
    log.set_quiet(True)
    log.note('hidden')
    log.warn('shown')
    assert capsys.readouterr().err == 'warning: shown\n'


def test_notes_go_to_the_basicsr_log_when_a_run_set_it_up(bare_logger, capsys, monkeypatch):
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append((record.levelname, record.getMessage()))
    monkeypatch.setattr(bare_logger, 'handlers', [Keep()])
    monkeypatch.setattr(bare_logger, 'propagate', False)
    bare_logger.setLevel(logging.INFO)
    monkeypatch.setattr(log, '_run_logger', lambda: bare_logger)
    log.note('a')
    log.warn('b')
    assert records == [('INFO', 'note: a'), ('WARNING', 'b')] and capsys.readouterr().err == ''


def test_distill_quiet_flag_silences_notes(tmp_path, capsys, monkeypatch, bare_logger):
    """``distill --quiet`` sets quiet mode before anything runs (a missing options file fails after it)."""
    from tripled_basicsr.distill.__main__ import main
    rc = main(['-opt', str(tmp_path / 'missing.yml'), '--quiet'])
    assert rc != 0 and 'missing.yml does not exist' in capsys.readouterr().err
    assert log._state['quiet'] is True


def test_the_run_logger_is_basicsrs_once_initialised(monkeypatch):
    """Found through basicsr.utils.logger's record of initialised loggers, without importing BasicSR."""
    import sys
    import types
    monkeypatch.undo()  # the real lookup, not conftest's stand-in
    fake = types.SimpleNamespace(initialized_logger={})
    monkeypatch.setitem(sys.modules, 'basicsr.utils.logger', fake)
    assert log._run_logger() is None
    fake.initialized_logger['basicsr'] = True
    logger = logging.getLogger('basicsr')
    monkeypatch.setattr(logger, 'level', logging.INFO)  # a run sets it (its log file)
    assert log._run_logger() is logger
    # get_root_logger() without a log file leaves the level unset (the root's WARNING, where a
    # note would vanish): not a run's logger, the notes stay on stderr
    monkeypatch.setattr(logger, 'level', logging.NOTSET)
    assert log._run_logger() is None


def test_a_sink_gets_every_note_and_warning_also_when_quiet(bare_logger, capsys):
    got = []
    log.set_quiet(True)
    with log.sink(got.append):
        log.note('a')
        log.warn('b')
    log.note('after')
    assert got == ['a', 'b'] and capsys.readouterr().err == 'warning: b\n'

