"""Private files: var/ and everything in it are readable by the service's user only."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

# New files 0600 and directories 0700: the database, its -wal and -shm, the secret key, the
# outbox and the previews all hold working manage and unsubscribe links.
PRIVATE_UMASK = 0o077


def private_process() -> None:
    """Make every file this process creates private, whoever creates it (SQLite, the mailer)."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path) -> None:
    """Create `path` (and its parents) as 0700, tightening it if it already exists."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def secure_var_dir(var_dir: Path) -> None:
    """Tighten an existing var/: the directory and those below it 0700, every file 0600.

    A var/ left by an older version, or copied with a loose umask, is fixed at start.
    """
    private_dir(var_dir)
    for root, dirs, names in os.walk(var_dir):
        for name in dirs:
            _chmod(Path(root, name), 0o700)
        for name in names:
            _chmod(Path(root, name), 0o600)


def _chmod(path: Path, mode: int) -> None:
    if path.is_symlink():  # a link's target may be anywhere: leave it alone
        return
    # Removed meanwhile: an -shm goes away when the last connection closes.
    with contextlib.suppress(FileNotFoundError):
        path.chmod(mode)
