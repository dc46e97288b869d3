"""Keep glibc's malloc from handing a training step's buffers back to the kernel every step.

Every step frees and allocates the same large buffers (each embedding table's gradient, the
optimiser's temporaries). glibc adapts its mmap and trim thresholds as a process runs, and
depending on that history a step's buffers can go back to the kernel every step and return as
freshly zeroed pages: page faults that cost more than the arithmetic. `keep_freed_memory()`
(`set_malloc_thresholds()`) fixes both thresholds at the top of glibc's own adaptive range
(`MMAP_THRESHOLD`, `TRIM_THRESHOLD`), so those buffers stay in the heap for the next step;
`fit` calls it by default when the model is on the CPU (`fit(..., keep_freed_memory=False)`
leaves malloc alone). `release_freed_memory()` (`malloc_trim(0)`) gives the heap's free
memory back when a process is done training.

The catch: glibc can neither report its thresholds nor go back to adapting them, so they stay
set for the rest of the process (the memory that costs is bounded by `TRIM_THRESHOLD`).
Where the C library is not glibc nothing is changed and the functions return False. The
measurements are on the docs' Performance page, "Page faults".
"""

from __future__ import annotations

import ctypes
import functools
import platform

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory", "release_freed_memory",
           "set_malloc_thresholds"]

#: glibc's largest dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX), in bytes
MMAP_THRESHOLD = 32 << 20
#: twice the mmap threshold: the trim threshold glibc itself pairs with it
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


@functools.cache
def _glibc():
    """The process's glibc as a ctypes library, or None where the C library is another."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def set_malloc_thresholds(mmap_threshold: int = MMAP_THRESHOLD,
                          trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Fix glibc's `M_MMAP_THRESHOLD` and `M_TRIM_THRESHOLD` (bytes) for this process.

    True when glibc took both (setting the same values again is harmless: `fit` does it at
    every call); False where the C library is not glibc or glibc refused a value.
    """
    for name, v in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**31:
            raise ValueError(f"{name} must be a number of bytes in [0, 2**31), got {v!r}")
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap_threshold))) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold)))


def release_freed_memory() -> bool:
    """Give the heap's free memory back to the system (`malloc_trim(0)`); False where there
    is no glibc or nothing could be released."""
    libc = _glibc()
    return bool(libc.malloc_trim(ctypes.c_size_t(0))) if libc is not None else False


def keep_freed_memory(enabled: bool = True) -> bool:
    """From now on, keep freed buffers under `MMAP_THRESHOLD` in the heap for reuse, and up to
    `TRIM_THRESHOLD` of free memory before glibc trims the heap (see the module docstring). `enabled=False` does
    nothing, so callers can write `keep_freed_memory(cond)`. Returns whether glibc's
    thresholds are set."""
    return set_malloc_thresholds() if enabled else False
