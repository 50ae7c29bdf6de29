"""Path ownership: the one rule for every path a command creates, appends to, replaces or deletes.

Every entry point of ours (pack, distill and its work dir, demo_data, demo, study, benchmark,
selfsup checkpoints, sampler trace files) goes through this module:

* **Sources are never an output.** An output path that is, contains, or lies inside a
  source root is refused (paths compared both as written and with symlinks resolved), so no
  combination of ``--out`` and ``--overwrite`` can delete or write into the data being read.
* **A folder is ours only when we created it empty.** Every folder we write gets a marker
  file (:data:`MARKER_FILE`) naming the tool that wrote it; an existing non-empty folder
  without it never becomes ours (:func:`claim_dir`, :class:`AtomicOutputDir`).
* **Only our own outputs of the same kind are replaced.** ``overwrite`` (``--overwrite``,
  ``--restart``, ``output.overwrite``) replaces a folder only when its marker names the same
  tool (a demo never replaces a distilled set, a study never replaces a demo), and only when
  it holds nothing but what that tool wrote: the marker lists the entries of an output
  written in one go, or the layout (name patterns) of one built in place; a file a user put
  at the top level of such a folder, or of a marked folder inside it, blocks the replacement
  and is named in the error.
* **A file we append to or replace is one we created** (:func:`open_owned_append`,
  :func:`check_file_output`): a trace file starts with our header line; a checkpoint is
  replaced only when it is one of ours.
* **Atomic.** The output is built in a hidden sibling ``.NAME.tmp-PID-XXXXXXXX`` and renamed
  into place when complete; an existing output is moved aside only after the new tree is
  complete, and deleted after the new one is in place. Ctrl-C during that commit is held
  back until it is done.
* **No leftovers.** Temporary/aside siblings left by a killed run (SIGKILL, power loss) are
  removed by the next run to the same output when they are provably ours (marker inside, or
  empty) and their process is gone; anything else is only reported.
"""
import contextlib
import datetime
import fnmatch
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import threading
import uuid

from tripled_basicsr.utils.io import package_version

logger = logging.getLogger('tripled_basicsr.output')

MARKER_FILE = '.tripled_output.json'
MARKER_FORMAT = 'tripled-output'
# what the one-go writers of earlier versions wrote at the top level of an output (their markers
# list no entries): anything else there is a user's
_DISTILLED_NAMES = ['gt.lmdb', 'lq.lmdb', 'tripled_meta.json', 'report.txt', 'report.png', 'source_scores.csv',
                    'calibrator.pth']
_EARLIER_ENTRIES = {'pack': _DISTILLED_NAMES, 'distill': _DISTILLED_NAMES, 'study-random': _DISTILLED_NAMES,
                    'study-random-crops': _DISTILLED_NAMES,
                    'demo_data': ['gt', 'lq', 'gt.lmdb', 'lq.lmdb', 'demo_data.json'],
                    'benchmark': ['results.md', 'results.json', 'results.csv']}
# outputs written before the marker existed: (file, key, value, tool when the file names none)
_LEGACY_MARKERS = (('tripled_meta.json', 'format', 'tripled-distilled', 'distill'),
                   ('demo_data.json', 'generator', 'tripled_basicsr.demo_data', 'demo_data'))
# what a folder of ours may hold besides what its writer lists: the marker, a directory lock
# (utils/lock.py) and the hidden temp/aside siblings of outputs written inside it
_OUR_FILES = re.compile(r'^(\.tripled_output\.json(\.part)?|\.lock)$')
_OUR_SIBLINGS = re.compile(r'^\..+\.(tmp|old)-\d+-[0-9a-f]{8}$')


def _always_ours(folder, name):
    """``name`` in ``folder`` is ours whatever the writer listed: the marker or a lock as a
    plain file (not a link, one name), or a temp/aside sibling that is a real folder, empty
    or carrying our marker. Anything else of such a name (a link, a user's folder) is not."""
    path = os.path.join(folder, name)
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if _OUR_FILES.match(name):
        return stat.S_ISREG(st.st_mode) and st.st_nlink == 1
    if _OUR_SIBLINGS.match(name) and stat.S_ISDIR(st.st_mode):
        return not os.listdir(path) or read_marker(path) is not None
    return False
# a human name for each tool's output, for the messages
KIND = {'pack': 'packed set (pack)', 'distill': 'distilled set (distill)', 'demo_data': 'generated dataset (demo_data)',
        'demo': 'demo work dir', 'study': 'study dir', 'distill-work': 'distill work dir (features cache)',
        'benchmark': 'benchmark output', 'study-random': "study's random subset",
        'study-random-crops': "study's random-crops subset"}
# the suffix suggested for an output next to a source ("<source>_packed")
_SUGGEST_SUFFIX = {'pack': '_packed', 'distill': '_distilled', 'demo_data': '_demo'}
# temp/aside dirs this process is using right now: its own pid is alive, so this tells a
# leftover of an earlier writer in the same process (a failed delete) from one in use
_IN_USE = set()


class OutputExistsError(FileExistsError):
    """The output path is taken and may not (or cannot) be replaced."""


class OutputConflictError(ValueError):
    """The output path is, contains, or lies inside a source."""



# ----------------------------------------------------------------------------- markers
def _read_json(path):
    try:
        with open(path, encoding='utf-8') as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def read_marker(path):
    """The marker dict when ``path`` is a real directory this project wrote, else None.

    Earlier outputs (before the marker file) are recognised by their own meta file and
    reported as ``{'format': 'tripled-output', 'legacy': FILE, 'tool': ...}``.
    """
    if os.path.islink(path) or not os.path.isdir(path):
        return None
    m = _read_json(os.path.join(path, MARKER_FILE))
    if m is not None and m.get('format') == MARKER_FORMAT:
        return m
    for name, key, value, tool in _LEGACY_MARKERS:
        meta = _read_json(os.path.join(path, name))
        if meta is not None and meta.get(key) == value:
            tool = meta.get('tool', tool)
            return {'format': MARKER_FORMAT, 'legacy': name, 'tool': tool, 'created': meta.get('created'),
                    'entries': list(_EARLIER_ENTRIES.get(tool, [name]))}
    return None


def kind(tool):
    return KIND.get(tool, f'{tool} output')


def foreign_entries(path, marker=None):
    """Top-level entries of our folder ``path`` that its writer did not list (sorted names).

    The marker of an output written in one go lists its ``entries``; the marker of a folder
    built in place lists its ``layout`` (fnmatch patterns); an output of an earlier version
    (no marker file, or a finished one without ``entries``) is compared with what that writer
    wrote. A marker with neither (a folder of an earlier version filled in place, or a marker
    written by hand) says nothing about its contents, so every entry counts as foreign. A symbolic link always does (we write none)."""
    marker = read_marker(path) if marker is None else marker
    if marker is None:
        return []
    listed = marker.get('entries')
    patterns = marker.get('layout')
    if not isinstance(listed, list) and not isinstance(patterns, list):
        listed = list(_EARLIER_ENTRIES.get(marker.get('tool'), [])) if marker.get('complete') is True else []
    try:
        names = os.listdir(path)
    except OSError:
        return []
    out = []
    for name in names:
        if _always_ours(path, name):
            continue
        if os.path.islink(os.path.join(path, name)):  # never written by us: we write no links
            out.append(name)
            continue
        if isinstance(listed, list) and name in listed:
            continue
        if isinstance(patterns, list) and any(fnmatch.fnmatchcase(name, p) for p in patterns):
            continue
        out.append(name)
    return sorted(out)


def foreign_paths(root, limit=20):
    """Paths a user put into our folder ``root`` (at its top level or at the top level of any
    folder of ours inside it): :func:`foreign_entries` over every marked folder of the tree.
    Symbolic links are not followed. Returns at most ``limit`` paths."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        marker = read_marker(dirpath)
        if marker is not None:
            found += [os.path.join(dirpath, n) for n in foreign_entries(dirpath, marker)]
            if len(found) >= limit:
                return found[:limit]
        # links are not followed; temp/aside siblings of ours are wholly ours
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))
                             and not _always_ours(dirpath, d))
    return found


def check_reusable(path, what):
    """Raise unless our folder ``path`` may be written into again (a resumed run): no symbolic
    link sits where we write (at the top level of it or of a folder of ours inside it), since
    a resumed run would write through it into a folder or file that is not ours."""
    links = [p for p in foreign_paths(path) if os.path.islink(p)]
    if links:
        shown = ', '.join(f'{p} -> {os.path.realpath(p)}' for p in links[:3]) + (' ...' if len(links) > 3 else '')
        raise OutputExistsError(f'{what} {path} is ours, but holds symbolic links where tripled_basicsr writes: '
                                f'{shown}. A resumed run would write through them, so nothing was written. Remove '
                                f'the links (or choose another {what}).')


def _refuse_foreign(path, found, option_name):
    shown = ', '.join(found[:5]) + (' ...' if len(found) > 5 else '')
    raise OutputExistsError(f'{path} is an output of tripled_basicsr, but it also holds files it did not write: '
                            f'{shown}. It is never replaced or deleted while they are there ({option_name} would '
                            f'delete them). Move those files out, or choose another output path.')


def check_replaceable(path, tool, option_name, marker=None):
    """Raise unless the existing folder ``path`` may be replaced by ``tool``: its marker names
    ``tool`` and it holds nothing its writer did not list. Returns the marker."""
    marker = read_marker(path) if marker is None else marker
    if marker is None:
        raise OutputExistsError(f'Output {path} already exists and was not written by tripled_basicsr (it has no '
                                f'{MARKER_FILE} or tripled_meta.json), so it is never replaced, not even with '
                                f'{option_name}. Choose a new output path.')
    if marker.get('tool') != tool:
        raise OutputExistsError(f'{path} is a {kind(marker.get("tool"))}, not a {kind(tool)}; {option_name} only '
                                f'replaces an earlier {kind(tool)}, so this folder is never replaced or deleted '
                                f'here. Choose another path.')
    found = foreign_paths(path)
    if found:
        _refuse_foreign(path, found, option_name)
    return marker


def _in_place_marker(tool, layout):
    """The marker of a folder filled in place: the tool and the names it writes there."""
    return {'format': MARKER_FORMAT, 'tool': tool, 'tripled_basicsr_version': package_version(), 'in_place': True,
            'layout': list(layout), 'created': datetime.datetime.now().isoformat(timespec='seconds')}


def claim_dir(path, tool, what, layout=(), hint='', check_only=False):
    """Make ``path`` a folder of ``tool``'s, built in place, or refuse (before anything is written).

    A missing folder is created with its marker; an existing empty one gets the marker; one
    that already carries ``tool``'s marker is reused. Anything else (a file, a link, a folder
    with a user's files, an output of another tool) raises :class:`OutputExistsError`, naming
    ``what`` (e.g. ``'work_dir'``). ``layout``: fnmatch patterns of the top-level names the
    tool writes there (recorded in the marker; anything else blocks a later replacement).
    ``check_only``: the same checks, nothing written. Returns True when the folder is (or, with
    ``check_only``, would be) created by this call."""
    path = absolute(path)
    hint = f' {hint}' if hint else ''
    if os.path.islink(path):
        raise OutputExistsError(f'{what} {path} is a symbolic link (to {os.path.realpath(path)}); folders of ours are '
                                f'never written through links. Choose another {what}.{hint}')
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputExistsError(f'{what} {path} is an existing file, not a folder; it is never replaced. Choose '
                                f'another {what}.{hint}')
    created = not os.path.exists(path)
    if not created:
        marker = read_marker(path)
        if marker is not None and marker.get('tool') == tool:
            check_reusable(path, what)
            return False
        if marker is not None:
            raise OutputExistsError(f'{what} {path} is a {kind(marker.get("tool"))}, not a {kind(tool)}; it is never '
                                    f'written into or replaced here. Choose another {what}.{hint}')
        if [n for n in os.listdir(path) if not _always_ours(path, n)]:  # a lock of ours may be there already
            raise OutputExistsError(f'{what} {path} already exists and holds files tripled_basicsr did not write; a '
                                    f'folder becomes ours only when we create it (or it is empty), so nothing was '
                                    f'written there. Choose a new {what} (a path that does not exist yet).{hint}')
    if check_only:
        return created
    os.makedirs(path, exist_ok=True)
    _write_marker(path, _in_place_marker(tool, layout))
    return created


def _write_marker(directory, info):
    part = os.path.join(directory, MARKER_FILE + '.part')
    with contextlib.suppress(FileNotFoundError):
        os.unlink(part)  # a leftover (or a planted link): never written through
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o644)
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
        json.dump(info, f, indent=1)
        f.write('\n')
    os.replace(part, os.path.join(directory, MARKER_FILE))


# ----------------------------------------------------------------------------- sources
def absolute(path):
    """``path`` (``~`` expanded) as an absolute path; an empty one (an unset ``$OUT``) is an
    error rather than the current directory."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if text is None or not str(text).strip():
        raise OutputConflictError(f'The output path is {"empty" if text is not None else repr(path)}; give the '
                                  f'folder (or file) to write, e.g. ./my_output (an empty path would mean the current '
                                  f'directory).')
    return os.path.abspath(os.path.expanduser(text))


def _norm(path):
    return os.path.normcase(os.path.abspath(path))


def _inside(child, parent):
    """True when ``child`` equals or lies under ``parent`` (both normalised absolute paths)."""
    try:
        return os.path.commonpath([child, parent]) == parent
    except ValueError:  # different drives
        return False


def _labelled(sources):
    """``sources`` as (label, path) pairs: accepts paths, (label, path) pairs or a mapping."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    items = sources.items() if isinstance(sources, dict) else sources
    out = []
    for item in items or ():
        label, path = item if isinstance(item, tuple) else ('source', item)
        if path is not None and str(path) != '':
            out.append((label, os.fspath(path)))
    return out


def path_relation(out, src):
    """How ``out`` relates to ``src``: 'is', 'lies inside', 'contains' or None.

    Compared as written and with symlinks resolved (any of the four combinations counts),
    so a link to a source, or a source reached through a link, is caught either way."""
    def both(p):
        p = os.path.expanduser(os.fspath(p))
        return _norm(p), _norm(os.path.realpath(p))

    forms = {(o, s) for o in both(out) for s in both(src)}
    for o, s in forms:
        if o == s:
            return 'is'
    for o, s in forms:
        if _inside(o, s):
            return 'lies inside'
    for o, s in forms:
        if _inside(s, o):
            return 'contains'
    return None


def suggest_output(out, sources, suffix='_out'):
    """A path next to the sources, outside all of them, for the "choose another output" hint."""
    srcs = [p for _, p in _labelled(sources)]
    base = os.path.abspath(out)
    for _ in range(len(srcs) + 1):
        inner = [s for s in srcs if path_relation(base, s) in ('is', 'lies inside')]
        if inner:  # move up to the (outermost) source and put the output beside it
            base = min((os.path.abspath(s) for s in inner), key=len)
        cand = base.rstrip(os.sep) + suffix
        if not any(path_relation(cand, s) for s in srcs) and not os.path.lexists(cand):
            return cand
        base = cand
    return os.path.join(os.path.dirname(os.path.abspath(out)), 'tripled_output')


def check_disjoint(out, sources, what='Output', option='the output path', suffix='_out'):
    """Raise :class:`OutputConflictError` when ``out`` is, contains, or lies inside a source."""
    for label, src in _labelled(sources):
        rel = path_relation(out, src)
        if rel is None:
            continue
        real = os.path.realpath(out)
        via = f' (it resolves to {real})' if _norm(real) != _norm(out) else ''
        raise OutputConflictError(
            f'{what} {os.path.abspath(out)}{via} {rel} the source {label} {os.path.abspath(src)}; '
            f'writing there could overwrite or delete the source data, so it is refused. '
            f'Choose {option} outside every source, e.g. {suggest_output(out, sources, suffix)}.')


# ----------------------------------------------------------------------------- removal
def _proc_start(pid):
    """Start time of process ``pid`` in clock ticks since boot (Linux), or None when unknown."""
    try:
        with open(f'/proc/{int(pid)}/stat', encoding='ascii', errors='replace') as f:
            return int(f.read().rsplit(')', 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid, path=None):
    if pid == os.getpid():
        return path in _IN_USE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or we cannot tell: keep its files
    return True


def remove_tree(path):
    """Delete a directory tree (or file); read-only entries are made writable first.

    Returns None on success, else the error (the caller reports it with the path).
    """
    def onerror(func, p, exc_info):
        if isinstance(exc_info[1], FileNotFoundError):
            return
        try:  # a read-only directory blocks unlinking its entries
            parent = os.path.dirname(p)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
            func(p)
        except FileNotFoundError:
            pass

    try:
        if os.path.islink(path) or not os.path.isdir(path):
            if os.path.lexists(path):
                os.unlink(path)
        else:
            shutil.rmtree(path, onerror=onerror)
    except OSError as err:
        return err
    return None if not os.path.lexists(path) else OSError(f'{path} still exists')


@contextlib.contextmanager
def defer_sigint():
    """Hold back Ctrl-C during a short critical section (a commit or a cleanup); deliver it after.

    After the section the interrupt goes to the handler that was there before: Python's
    default raises KeyboardInterrupt, a custom handler is called, an ignored SIGINT stays
    ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    try:
        previous = signal.getsignal(signal.SIGINT)
        if previous == signal.SIG_IGN:
            previous = None
        else:
            signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    except (ValueError, OSError):  # not installable here (embedded interpreter)
        previous = None
    if previous is None:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if got:
            if callable(previous) and previous is not signal.default_int_handler:
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt


# ----------------------------------------------------------------------------- the writer
class AtomicOutputDir:
    """Context manager: ``with AtomicOutputDir(out, ...) as tmp: write into tmp``.

    The constructor applies the whole output policy (see the module docstring) before any
    work: sources, existing output, ``overwrite``; and it removes (or reports) what a killed
    run to the same output left behind. On success ``tmp`` becomes ``out``; on any exception,
    Ctrl-C included, ``tmp`` is removed and ``out`` is untouched.

    Args:
        out (str): final directory.
        overwrite (bool): replace an existing ``out`` that this project wrote.
        option_name (str): how the user turns on overwriting, for the messages.
        empty_ok (bool): an existing empty directory counts as absent (also without ``overwrite``).
        sources (paths, (label, path) pairs or {label: path}): input roots ``out`` must stay
            clear of; labels (e.g. ``'--gt'``) name them in the message.
        tool (str): the command writing, recorded in the marker file.
    """

    def __init__(self, out, overwrite=False, option_name='--overwrite', empty_ok=False, sources=(), tool='pack'):
        self.out = absolute(out)
        self.overwrite = bool(overwrite)
        self.option_name = option_name
        self.empty_ok = empty_ok
        self.sources = _labelled(sources)
        self.tool = tool
        self.tmp = None
        self.committed = False  # True once ``out`` holds the new tree (a Ctrl-C held back until then
        #                         is raised after it: callers may then treat the output as complete)
        self.cleaned = []  # stale siblings removed by this instance (for callers/tests)
        self.check()
        self.clean_stale()

    # -- policy
    def check(self):
        """Raise unless ``out`` may be written; returns 'new', 'empty' or 'replace'."""
        out = self.out
        check_disjoint(out, self.sources, 'Output', 'an output path', _SUGGEST_SUFFIX.get(self.tool, '_out'))
        if not os.path.lexists(out):
            return 'new'
        if os.path.islink(out):
            raise OutputExistsError(f'Output {out} is a symbolic link (to {os.path.realpath(out)}); outputs are '
                                    f'never written through links. Choose another output path (or remove the link '
                                    f'yourself).')
        if not os.path.isdir(out):
            raise OutputExistsError(f'Output {out} is an existing file, not a directory this project wrote; it is '
                                    f'never replaced ({self.option_name} only replaces earlier outputs of '
                                    f'tripled_basicsr). Choose another output path.')
        if not os.listdir(out):
            if self.empty_ok or self.overwrite:
                return 'empty'
            raise OutputExistsError(f'Output {out} already exists (an empty directory). Choose another output path '
                                    f'or pass {self.option_name}.')
        marker = check_replaceable(out, self.tool, self.option_name)
        if not self.overwrite:
            when = f' of {marker["created"]}' if marker.get('created') else ''
            raise OutputExistsError(f'Output {out} already exists (a {self.tool} output{when}); refusing to overwrite '
                                    f'it. Choose another output path or pass {self.option_name} to replace it.')
        return 'replace'

    # -- leftovers of killed runs
    def _stale_pattern(self):
        return re.compile(r'^\.' + re.escape(os.path.basename(self.out)) + r'\.(tmp|old)-(\d+)-[0-9a-f]{8}$')

    def clean_stale(self):
        """Remove siblings ``.NAME.tmp-PID-*``/``.NAME.old-PID-*`` left by dead runs; report the rest."""
        parent = os.path.dirname(self.out)
        try:
            names = os.listdir(parent)
        except OSError:
            return
        pattern = self._stale_pattern()
        host = socket.gethostname()
        for name in sorted(names):
            m = pattern.match(name)
            if not m:
                continue
            path = os.path.join(parent, name)
            kind, pid = m.group(1), int(m.group(2))
            if os.path.islink(path) or not os.path.isdir(path):
                logger.warning('%s: %s looks like a leftover of an earlier run but is not a directory; left alone, '
                               'remove it yourself if it is not needed.', self.tool, path)
                continue
            empty = not os.listdir(path)
            marker = read_marker(path)
            if not empty and marker is None:
                logger.warning('%s: %s looks like a leftover of an earlier run to %s but carries no %s; left alone, '
                               'remove it yourself if it is not needed.', self.tool, path, self.out, MARKER_FILE)
                continue
            # a temp dir records its writer; an aside (old) dir is named after the run replacing it
            owner_host = marker.get('host', host) if (marker and kind == 'tmp') else host
            alive = _pid_alive(pid, path)
            if alive and marker and kind == 'tmp' and marker.get('pid_start') is not None and pid != os.getpid():
                # the pid is in use, but by a process started at another time: the writer is gone
                start = _proc_start(pid)
                alive = start is None or start == marker['pid_start']
            if owner_host != host or alive:
                where = f' on {owner_host}' if owner_host != host else ''
                logger.warning('%s: %s belongs to a run (pid %d%s) that may still be writing %s; left alone. Remove '
                               'it yourself once that run has ended.', self.tool, path, pid, where, self.out)
                continue
            with defer_sigint():
                err = remove_tree(path)
            if err is None:
                self.cleaned.append(path)
                logger.warning('%s: removed %s, left behind by an interrupted run (pid %d) to %s.', self.tool, path,
                               pid, self.out)
            else:
                logger.warning('%s: could not remove %s, left behind by an interrupted run (pid %d): %s. Remove it '
                               'yourself.', self.tool, path, pid, err)

    # -- writing
    def _sibling(self, tag):
        parent, name = os.path.split(self.out)
        return os.path.join(parent, f'.{name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}')

    def _marker(self, complete):
        info = {'format': MARKER_FORMAT, 'tool': self.tool, 'tripled_basicsr_version': package_version(),
                'complete': complete}
        if complete:  # what we wrote: anything else found here later is a user's and blocks replacing it
            info['entries'] = sorted(n for n in os.listdir(self.tmp) if not _always_ours(self.tmp, n))
        if not complete:
            # who is writing: lets a later run prove a leftover temp dir is ours and its writer is gone.
            # The finished marker leaves these (and the time) out, so equal runs give byte-identical outputs.
            info.update(created=datetime.datetime.now().isoformat(timespec='seconds'), pid=os.getpid(),
                        pid_start=_proc_start(os.getpid()), host=socket.gethostname(),
                        temp=os.path.basename(self.tmp))
        return info

    def __enter__(self):
        self.check()
        os.makedirs(os.path.dirname(self.out), exist_ok=True)
        self.tmp = self._sibling('tmp')
        _IN_USE.add(self.tmp)
        with defer_sigint():  # a temp dir always carries its marker, so a later run can prove it is ours
            os.makedirs(self.tmp)  # normal permissions (mkdtemp would make it 0700)
            try:
                _write_marker(self.tmp, self._marker(False))
            except BaseException:
                remove_tree(self.tmp)
                raise
        return self.tmp

    def _discard_tmp(self):
        with defer_sigint():
            err = remove_tree(self.tmp)
        _IN_USE.discard(self.tmp)
        if err is not None:
            logger.warning('%s: could not remove the temporary directory %s: %s. Remove it yourself (the next run '
                           'to %s also retries).', self.tool, self.tmp, err, self.out)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._discard_tmp()
            return False
        try:
            with defer_sigint():
                self._commit()
        except BaseException:
            if os.path.lexists(self.tmp):
                self._discard_tmp()
            raise
        finally:
            _IN_USE.discard(self.tmp)
        return False

    def _commit(self):
        state = self.check()
        _write_marker(self.tmp, self._marker(True))
        if state != 'replace':
            os.rename(self.tmp, self.out)  # POSIX rename replaces an empty directory atomically
            self.committed = True
            return
        old = self._sibling('old')
        _IN_USE.add(old)
        os.rename(self.out, old)
        try:
            os.rename(self.tmp, self.out)
        except BaseException:
            os.rename(old, self.out)
            _IN_USE.discard(old)
            raise
        self.committed = True
        err = remove_tree(old)
        _IN_USE.discard(old)
        if err is not None:
            logger.warning('%s: wrote %s, but could not delete the replaced output, now at %s: %s. Remove it '
                           'yourself (the next run to %s also retries).', self.tool, self.out, old, err, self.out)


def prepare_output_dir(out, overwrite=False, option_name='--overwrite', sources=(), tool='demo', empty_ok=True,
                       reuse=False, layout=()):
    """The same policy for an output built in place over a long run (the demo's work dir, a study).

    Sources, files, symlinks and folders without our marker are refused exactly as by
    :class:`AtomicOutputDir`; with ``overwrite`` an earlier output of ours is moved aside and
    deleted; then the directory is created with its marker and returned (absolute path) for
    the caller to fill. ``reuse=True`` (a resumable run) returns an earlier output of the same
    ``tool`` as it is instead of refusing it (``overwrite`` still starts afresh; another tool's
    output is refused as without ``reuse``). ``layout``: fnmatch patterns of every top-level
    name the caller writes there, recorded in the marker: anything else found there later (a
    user's file) blocks a replacement (:func:`foreign_entries`). Use
    :class:`AtomicOutputDir` instead where the output can be built in one go.
    """
    if reuse and not overwrite:
        path = absolute(out)
        check_disjoint(path, sources, 'Output', 'an output path', _SUGGEST_SUFFIX.get(tool, '_out'))
        marker = read_marker(path)
        if marker is not None and marker.get('tool') == tool:
            check_reusable(path, 'Output')
            return path
    a = AtomicOutputDir(out, overwrite, option_name, empty_ok, sources, tool)
    if a.check() == 'replace':
        old = a._sibling('old')
        _IN_USE.add(old)
        try:
            with defer_sigint():
                os.rename(a.out, old)
                err = remove_tree(old)
        finally:
            _IN_USE.discard(old)
        if err is not None:
            logger.warning('%s: could not delete the replaced output, now at %s: %s. Remove it yourself (the next '
                           'run to %s also retries).', tool, old, err, a.out)
    os.makedirs(a.out, exist_ok=True)
    _write_marker(a.out, dict(_in_place_marker(tool, layout), complete=False))
    return a.out


# ----------------------------------------------------------------------------- files
def _file_target(path, sources, option):
    """``path`` made absolute; refused when it is a link or overlaps a source."""
    path = absolute(path)
    check_disjoint(path, sources, option, f'a path for {option}')
    if os.path.islink(path):
        raise OutputExistsError(f'{option} {path} is a symbolic link (to {os.path.realpath(path)}); files are never '
                                f'written through links. Choose another path.')
    return path


def check_file_output(path, sources=(), option='--out', overwrite=False, is_ours=None, what='file', example=None):
    """Raise unless the single file ``path`` may be written (then returns its absolute path).

    Never a source or inside one, never a folder or a link; an existing file is replaced only
    with ``overwrite`` and only when ``is_ours(path)`` says we wrote it (e.g. a checkpoint that
    carries our record), so no flag turns a user's file (an image of the source, a thesis) into
    an output. The parent folder must exist. ``example``: a file name suggested when ``path`` is
    a folder."""
    path = absolute(path)
    if os.path.isdir(path) and not os.path.islink(path):  # the kind first: a folder may also hold the source
        such = f' such as {os.path.join(path, example)}' if example else ' inside it'
        raise OutputExistsError(f'{option} {path} is a folder; give a file path{such}.')
    path = _file_target(path, sources, option)
    if os.path.lexists(path):
        if not os.path.isfile(path):
            raise OutputExistsError(f'{option} {path} exists and is not a regular file; choose another path.')
        if not overwrite:
            raise OutputExistsError(f'{option} {path} exists; pass --overwrite to replace it (only a {what} this '
                                    f'project wrote is ever replaced), or choose another path.')
        if is_ours is None or not is_ours(path):
            raise OutputExistsError(f'{option} {path} exists and is not a {what} written by tripled_basicsr, so it is '
                                    f'never replaced, not even with --overwrite. Choose another path.')
    if not os.path.isdir(os.path.dirname(path)):
        raise OutputExistsError(f'{option}: folder {os.path.dirname(path)} does not exist; create it first.')
    return path


def _first_line_json(path, limit=4096):
    try:
        with open(path, 'rb') as f:
            line = f.readline(limit)
        obj = json.loads(line.decode('utf-8'))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def check_append_file(path, header, sources=(), option='the file'):
    """Raise unless we may append to ``path``: it does not exist yet, or it is a regular file
    whose first line is our ``header`` (same ``format``). Returns the absolute path.

    ``header``: a dict with a ``format`` key, written as the file's first line on creation."""
    path = _file_target(path, sources, option)
    if os.path.lexists(path):
        first = _first_line_json(path) if os.path.isfile(path) else None
        if first is None or first.get('format') != header['format']:
            raise OutputExistsError(f'{option} {path} exists and is not a {header["format"]} file this project '
                                    f'created (its first line is not our header), so nothing is appended to it. '
                                    f'Choose a new path (a file that does not exist yet).')
    return path


def open_owned_append(path, header, sources=(), option='the file'):
    """Open ``path`` for appending text lines under :func:`check_append_file`'s rule: a new file
    is created exclusively (a file that appears meanwhile is not ours) and gets ``header`` as its
    first JSON line."""
    path = check_append_file(path, header, sources, option)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    except FileExistsError:
        path = check_append_file(path, header, sources, option)
        return open(path, 'a', encoding='utf-8')
    f = os.fdopen(fd, 'a', encoding='utf-8')
    f.write(json.dumps(header) + '\n')
    f.flush()
    return f
