"""Folder listing for readers: an unreadable folder raises TruthSetError naming it instead of looking empty.

`pathlib.Path.glob` skips folders it may not read, so a `chmod 000` split would read as "no images";
`Path.is_file` raises a bare PermissionError. These helpers turn both into one message naming the folder.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path, PurePosixPath

from gradsum.errors import TruthSetError

#: characters that make a pattern part a wildcard (as in `glob`)
_WILDCARDS = frozenset("*?[")


def unreadable(path: Path, error: OSError) -> TruthSetError:
    """The error for a file or folder the operating system refuses to read."""
    return TruthSetError(f"{path}: not readable ({error.strerror or error})")


def list_folder(folder: Path) -> list[os.DirEntry[str]]:
    """The entries of `folder`, sorted by name; an unreadable folder raises TruthSetError naming it."""
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except FileNotFoundError:
        raise TruthSetError(f"{folder}: no such folder") from None
    except OSError as error:
        raise unreadable(folder, error) from None


def exists(path: Path) -> bool:
    """True when `path` exists; a parent folder that may not be searched raises TruthSetError naming it."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as error:
        raise unreadable(path.parent, error) from None
    return True


def is_folder(path: Path) -> bool:
    """True when `path` is a folder (see `exists` for unreadable parents)."""
    return exists(path) and path.is_dir()


def glob_files(root: Path, pattern: str) -> list[Path]:
    """The files under `root` matching a relative glob `pattern` (`*`, `?`, `[...]`, `**`), sorted.

    Unlike `Path.glob`, a folder on the way that may not be read raises TruthSetError naming it.
    """
    folders = [root]
    parts = PurePosixPath(pattern).parts
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if part == "**":
            folders = [found for folder in folders for found in _with_subfolders(folder)]
        elif not _WILDCARDS & set(part):
            folders = [
                folder / part
                for folder in folders
                if exists(folder / part) and (last or (folder / part).is_dir())
            ]
        else:
            folders = [
                Path(entry.path)
                for folder in folders
                for entry in list_folder(folder)
                if fnmatch.fnmatchcase(entry.name, part) and (last or entry.is_dir())
            ]
    return sorted(path for path in folders if path.is_file())


def _with_subfolders(folder: Path) -> list[Path]:
    found = [folder]
    for entry in list_folder(folder):
        if entry.is_dir():
            found.extend(_with_subfolders(Path(entry.path)))
    return found
