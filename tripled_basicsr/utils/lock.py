"""An exclusive lock on a directory, so two runs cannot interleave their writes there.

``fcntl.flock`` on ``<dir>/.lock``: the kernel releases it when the holder exits, crashes
or is killed (SIGKILL included), so a stale lock can never block a later run; the file
itself stays (deleting a lock file races with a second acquirer) and only records the
holder's pid for the error message. POSIX only (the project targets Linux).
"""
import fcntl
import os
import socket
import sys


class LockedError(RuntimeError):
    pass


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

    def acquire(self):
        if self._fd is not None:
            return self
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(f'{self.what} {self.directory} is in use by another run ({holder}); two runs on one '
                              f'{self.what} would interleave their writes. Wait for it to finish, stop it, or use '
                              f'another {self.what}.{" " + self.hint if self.hint else ""}') from None
        os.ftruncate(fd, 0)
        os.write(fd, f'pid {os.getpid()} on {socket.gethostname()}: {" ".join(sys.argv)[:300]}\n'.encode())
        self._fd = fd
        return self

    def release(self):
        if self._fd is not None:
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
