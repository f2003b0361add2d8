"""Small file helpers shared by the commands: atomic writes and output-path checks."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["UsageError", "output_file", "write_atomic", "write_json"]


class UsageError(ValueError):
    """Bad user input: the CLI reports it in one line and exits with code 2."""


def write_atomic(path: Path, write: Callable[[Path], Any], suffix: str) -> None:
    """Write through a temporary file in the same folder, then rename (never half-written)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def output_file(path: str | Path, option: str = "--json") -> Path:
    """Check that ``path`` can be written as a file (creating its folder); return it."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {str(path)!r} is a directory; give a file path")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the folder of {str(path)!r}: {e.strerror}") from None
    if not os.access(p.parent, os.W_OK):
        raise UsageError(f"cannot write to the folder of {str(path)!r}")
    return p


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    p = output_file(path)
    write_atomic(p, lambda t: t.write_text(json.dumps(data, indent=2) + "\n"), ".json")
    return p
