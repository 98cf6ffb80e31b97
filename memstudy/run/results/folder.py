"""Where results go: one writer per results folder, checked output paths, and files that are whole or absent.

- `FolderLock`: an exclusive `flock` on `DIR/.memstudy.lock`, held by a sweep (or a report) for as long as it
  writes into DIR. The kernel drops the lock with the process, so a killed sweep never leaves a stale lock;
  the file itself stays (it names the last holder and is ignored by git). A second writer gets one line
  naming the holder: its pid, host, command and start time, which the holder writes into the file.
- `results_folder` and `output_file`: a bad path (empty, a file where a folder belongs or the reverse,
  a missing parent, no permission) is a one-line `PathError` before anything is written, and nothing
  creates a folder it was not asked to create.
- `replace_atomically` / `write_text_atomically`: a file is written under a temporary name in its own
  folder, then renamed over the target, so a crash never leaves half a file.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import sys
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".memstudy.lock"


class PathError(ValueError):
    """A path cannot be used as asked (bad name, missing folder, permission, a file is in use); one line."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


# --- checks ---------------------------------------------------------------------------------------------

def results_folder(text: str | os.PathLike, what: str, create: bool = True, create_parents: bool = False) -> Path:
    """The folder `text` ready for writing: created if missing (only it, or its parents too when
    `create_parents`), else a PathError naming `what` (e.g. "--out")."""
    if not str(text).strip():
        raise PathError(f"{what}: empty folder name")
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise PathError(f"{what} {path} is a file, not a folder")
    if not path.exists():
        parent = path.parent
        if not create:
            raise PathError(f"{what} {path}: no such folder")
        if not create_parents and not parent.is_dir():
            problem = "is a file, not a folder" if parent.exists() else "does not exist"
            raise PathError(f"{what} {path}: its parent folder {parent} {problem} (create it first)")
        try:
            path.mkdir(parents=create_parents, exist_ok=True)
        except OSError as exc:
            raise PathError(f"{what} {path}: cannot create the folder ({_reason(exc)})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PathError(f"{what} {path}: no permission to write in this folder")
    return path


def output_file(text: str | os.PathLike, what: str) -> Path:
    """A file path we may write (it need not exist): a PathError naming `what` if it cannot be."""
    if not str(text).strip():
        raise PathError(f"{what}: empty file name")
    path = Path(text)
    if str(text).endswith(os.sep) or path.is_dir():
        raise PathError(f"{what} {path} is a folder, not a file")
    parent = path.parent
    if not parent.is_dir():
        problem = "is a file, not a folder" if parent.exists() else "does not exist"
        raise PathError(f"{what} {path}: its folder {parent} {problem}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PathError(f"{what} {path}: no permission to write in {parent}")
    if path.exists() and not path.is_file():
        raise PathError(f"{what} {path} exists and is not a regular file")
    return path


# --- whole files or none ----------------------------------------------------------------------------------

def temporary_name(path: Path) -> Path:
    """A name beside `path` for writing it: hidden, unique to this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextlib.contextmanager
def replace_atomically(path: str | os.PathLike) -> Iterator[Path]:
    """`with replace_atomically(p) as tmp:` write `tmp`; on success it is renamed to `p`, on error removed.
    An OSError becomes a one-line PathError."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise PathError(f"{path}: cannot write ({_reason(exc)})") from None
    except BaseException:
        _remove(tmp)
        raise


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    with replace_atomically(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


# --- one writer per folder ----------------------------------------------------------------------------------

def _command_line() -> str:
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return " ".join(argv)[:300]


class FolderLock:
    """Exclusive, non-blocking ownership of a results folder (see the module docstring).

    `with FolderLock(folder, "sweep"):` ... ; raises PathError when another process holds it or the lock file
    cannot be made (a read-only folder)."""

    def __init__(self, folder: str | os.PathLike, purpose: str):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PathError(f"{self.folder}: cannot write here ({_reason(exc)})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise PathError(f"{self.folder} is in use by {self.holder()}; wait for it to finish or stop it "
                                "(one writer per results folder)") from None
            raise PathError(f"{self.folder}: cannot lock {self.path.name} ({_reason(exc)})") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                  "command": _command_line(),
                  "since": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode("utf-8"), 0)
        self._fd = fd
        return self

    def holder(self) -> str:
        """Who holds the lock, as written into the lock file by the holder (best effort)."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
            return (f"a memstudy {info['purpose']} (pid {info['pid']} on {info['host']}, since {info['since']}: "
                    f"{info['command']})")
        except (OSError, ValueError, KeyError, TypeError):
            return "another process (it has not written its name yet)"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


__all__ = ["FolderLock", "LOCK_NAME", "PathError", "output_file", "replace_atomically", "results_folder",
           "temporary_name", "write_text_atomically"]
