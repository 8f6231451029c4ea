"""Atomic file writing: nothing half-written is ever left under its final name."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write JSON with sorted keys, so equal objects give equal bytes."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder that becomes `path` only if the block finishes without error.

    An interrupted or failed block leaves no folder at `path` (and any previous one untouched
    unless the block succeeded and `overwrite` is set).
    """
    target = Path(path)
    _recover_swap(target)
    _remove_stale_staging(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, target)


#: `tempfile.mkdtemp`'s staging name for `name`: `.name.` + 8 random characters + `.partial`.
_STAGING = r"\.{}\.[a-z0-9_]{{8}}\.partial"


def _remove_stale_staging(target: Path) -> None:
    """Delete (naming them) the staging folders a killed write of `target` left: only one process writes a
    given target, so a staging folder of it that exists now was abandoned."""
    if not target.parent.is_dir():
        return
    staging = re.compile(_STAGING.format(re.escape(target.name)))
    for path in target.parent.iterdir():
        if staging.fullmatch(path.name):
            log.warning("removing %s, left by an interrupted write", path)
            shutil.rmtree(path, ignore_errors=True)


def _recover_swap(target: Path) -> None:
    """Finish what a process killed between `atomic_directory`'s two renames left: the previous folder
    moved aside as `.<name>.old` and nothing yet at `target`. It is put back, so nothing is lost."""
    old = target.with_name(f".{target.name}.old")
    if not old.exists():
        return
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        log.warning("restoring %s from %s, moved aside by an interrupted replacement", target, old)
        os.replace(old, target)


def read_json_object(
    path: str | os.PathLike[str], error: type[Exception], what: str = "JSON file"
) -> dict[str, Any]:
    """The JSON object in `path`; a missing, unreadable or non-object file raises `error` naming it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {what} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: unreadable {what} ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: {what} is not a JSON object")
    return data


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
