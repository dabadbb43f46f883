"""One run, one writer: an OS lock on a run folder.

``RunLock(folder).acquire()`` takes an exclusive ``fcntl.flock`` on ``<folder>/run.lock``
and writes who holds it (pid, host, start time, command line) into the file. The OS
releases the lock when the process ends, however it ends (an exit, an exception, kill -9),
so a lock left by a crash is stale by itself: the next run takes it. A second process on
the same folder gets RunFolderBusy at once, whose one-line message names the holder.
flock works on local filesystems; on some network filesystems it locks per machine only.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = "run.lock"


class RunFolderBusy(Exception):
    """Another live process holds the run folder's lock; the message names it."""


def holder_line() -> str:
    """Who this process is, for the lock file: pid, host, start time and command."""
    command = shlex.join(getattr(sys, "orig_argv", sys.argv))
    return (f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {command}")


class RunLock:
    """The lock of one run folder, held from acquire() until release() or the process ends."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.fh = None

    def acquire(self) -> RunLock:
        """Take the lock (RunFolderBusy if a live process holds it) and write who holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "a process that has not written its name yet"
            fh.close()
            pid = holder.split()[1] if holder.startswith("pid ") else "ITS_PID"
            raise RunFolderBusy(f"the run folder {self.folder} is in use by another run "
                                f"({holder}); wait for it to end, stop it (kill {pid}: it "
                                "saves and exits), or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(holder_line() + "\n")
        fh.flush()
        self.fh = fh
        return self

    def release(self) -> None:
        if self.fh is not None:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
