"""One search at a time per output name: an exclusive lock on ``OUTPUT/.NAME.lock``.

The lock is an ``flock`` (``msvcrt.locking`` on Windows) held for the whole
search; the operating system drops it when the process ends, however it ends,
so a killed search leaves no stale lock. While holding it, a search removes the
temporary files that an earlier, killed search of the same name left behind.
Folders created for the lock are removed again when the search fails and leaves
them empty (e.g. for bad input found in the set-up).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from .output_files import OutputPaths
from .settings import SearchInputError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


def _try_lock(descriptor: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


class OutputLock:
    """``with OutputLock(paths):`` holds the output name's lock, or raises SearchInputError if another search does."""

    def __init__(self, paths: OutputPaths) -> None:
        self.paths = paths
        self._descriptor: int | None = None
        self._created: list[Path] = []  # the folders made for the lock, deepest first

    def __enter__(self) -> OutputLock:
        path = self.paths.lock
        try:
            missing = path.parent
            while not missing.exists():
                self._created.append(missing)
                missing = missing.parent
            path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                if not _try_lock(descriptor):
                    os.close(descriptor)
                    raise SearchInputError(
                        f"another dada-search is writing {self.paths.policy.stem!r} to {str(path.parent)!r} "
                        f"(it holds {str(path)!r}); wait for it to finish or choose another --name or --output"
                    )
                # The holder before us may have removed the file between our open and our lock: retry on the new one.
                if os.path.exists(path) and os.path.samestat(os.fstat(descriptor), os.stat(path)):
                    break
                os.close(descriptor)
        except OSError as error:
            raise SearchInputError(f"cannot create the lock file {str(path)!r}: {error.strerror or error}") from None
        self._descriptor = descriptor
        remove_stale_temporaries(self.paths)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._descriptor is not None:
            if fcntl is not None:  # (Windows cannot remove an open file: the unlocked file stays there)
                self.paths.lock.unlink(missing_ok=True)
            os.close(self._descriptor)
            self._descriptor = None
        if kind is not None:
            for folder in self._created:
                try:
                    folder.rmdir()  # only when empty
                except OSError:
                    break


def remove_stale_temporaries(paths: OutputPaths) -> list[Path]:
    """Remove the temporary files of atomic writes to this search's files; returns what was removed.

    Call only while holding the lock: then no write of ours is in progress.
    """
    random = "?" * 8  # tempfile's random part
    patterns = [(paths.policy.parent, f".{target.name}.{random}.tmp") for target in (paths.policy, paths.parameters)]
    if paths.checkpoint.is_dir():
        patterns += [(paths.checkpoint, f".*.{random}.tmp")]
    removed = []
    for folder, pattern in patterns:
        for path in folder.glob(pattern):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
