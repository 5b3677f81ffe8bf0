"""Atomic file writes (a kill at any moment leaves the old file or the new one, never half of one) and
JSON reads that fail with one sentence."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import NfieldsError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | os.PathLike, what: str) -> Any:
    """The JSON value in `path`; a missing, unreadable or malformed file is an NfieldsError naming `what`."""
    try:
        return json.loads(Path(path).read_text())
    except OSError as error:
        raise NfieldsError(f"cannot read {what} '{path}' ({error.strerror}).") from None
    except ValueError as error:
        raise NfieldsError(f"{what} '{path}' is not valid JSON ({error}).") from None


def refuse_replacing_cwd(out: Path) -> None:
    """--overwrite never replaces the folder we stand in, or one above it."""
    here = Path.cwd().resolve()
    if out.resolve() == here or out.resolve() in here.parents:
        raise NfieldsError(f"'{out}' holds the current folder, so --overwrite cannot replace it; run from "
                           f"another folder or choose another --out.")
