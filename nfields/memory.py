"""How much host memory there is, so that work which cannot fit is refused before it starts."""

from __future__ import annotations

import os

from .errors import NfieldsError


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def gigabytes(count: float) -> str:
    """`count` bytes as '12.3 GB' (GiB), for messages."""
    return f"{count / 2 ** 30:.1f} GB"




def check_memory(need: float, what: str, advice: str) -> None:
    """NfieldsError, before any of it is allocated, when `need` bytes for `what` exceed the memory available."""
    available = available_memory()
    if need > available:
        raise NfieldsError(f"{what} takes {gigabytes(need)}, more than the {gigabytes(available)} of memory "
                           f"available; {advice}.")


__all__ = ["available_memory", "gigabytes", "check_memory"]
