"""An exclusive lock on a directory, so two runs cannot interleave their writes there.

``fcntl.flock`` on ``<dir>/.lock``: the kernel releases it when the holder exits, crashes
or is killed (SIGKILL included), so a stale lock can never block a later run; the file
itself stays (deleting a lock file races with a second acquirer) and only records the
holder's pid for the error message. POSIX only (the project targets Linux).

A run that created the directory and fails before writing anything else leaves nothing
behind: ``release`` removes the lock file and the directory when they are all there is.
The lock file is unlinked while still locked, and ``acquire`` re-checks that the file it
locked is still the one at the path, so this cannot let two runs hold the lock at once.
"""
import fcntl
import os
import socket
import sys


class LockedError(RuntimeError):
    pass


def open_lock_file(path):
    """Open (creating) the lock file ``path`` for reading and writing, never through a link:
    a symbolic link, a hard-linked file, a FIFO or anything else that is not a plain file of
    one name is refused (the holder's line is written into the file, so writing through a
    planted link would change a user's file). Returns the descriptor."""
    import errno
    import stat
    flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, 'O_NOFOLLOW', 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockedError(f'{path} is a symbolic link; a lock file of ours is a plain file. Remove the link '
                              f'(nothing was written through it).') from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise LockedError(f'{path} is not a plain file of ours (a {"hard-linked file" if stat.S_ISREG(st.st_mode) else "special file"}); '
                          f'nothing was written to it. Remove it.')
    return fd


class DirLock:
    """``with DirLock(path, what='work dir'):`` -> exclusive, non-blocking; a second holder
    gets ``LockedError`` naming the directory and the pid that holds it.

    Args:
        directory (str): created when missing.
        what (str): how the directory is called in the error message (e.g. 'work_dir').
        hint (str): what to do, appended to the error message.
    """

    LOCK_NAME = '.lock'

    def __init__(self, directory, what='directory', hint=''):
        self.directory = os.path.abspath(os.fspath(directory))
        self.path = os.path.join(self.directory, self.LOCK_NAME)
        self.what, self.hint = what, hint
        self._fd = None
        self._created = False

    def acquire(self):
        if self._fd is not None:
            return self
        self._created = not os.path.isdir(self.directory)
        while True:
            os.makedirs(self.directory, exist_ok=True)
            try:
                fd = open_lock_file(self.path)
            except FileNotFoundError:  # the directory was removed by a releasing holder meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_holder(fd)
                os.close(fd)
                raise LockedError(f'{self.what} {self.directory} is in use by another run ({holder}); two runs on '
                                  f'one {self.what} would interleave their writes. Wait for it to finish, stop it, '
                                  f'or use another {self.what}.{" " + self.hint if self.hint else ""}') from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed the file after we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, f'pid {os.getpid()} on {socket.gethostname()}: {" ".join(sys.argv)[:300]}\n'.encode())
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
            try:
                if self._created and os.listdir(self.directory) == [self.LOCK_NAME]:
                    os.unlink(self.path)  # still locked here: see the module docstring
                    os.rmdir(self.directory)
            except OSError:
                pass
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def held(self):
        return self._fd is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def _read_holder(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 512).decode(errors='replace').strip()
    except OSError:
        text = ''
    return text or 'holder unknown'
