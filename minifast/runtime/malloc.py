"""Keep glibc's malloc from handing a training step's buffers back to the kernel every step.

Why. Every step of a model with dense embedding gradients frees and allocates the same large
buffers: each table's gradient (1.9 MB for ml-latest-small's 9,724 items x 50 factors), and
with torch's default (for-loop) Adam a few temporaries of the same size per table. PyTorch
gets CPU memory from the C library's `malloc`. glibc adapts two thresholds as a process runs:
a block of at least `M_MMAP_THRESHOLD` gets a fresh `mmap` of its own (128 kB at start,
raised to the size of each such block freed, up to 32 MB), and free memory at the top of the
heap beyond `M_TRIM_THRESHOLD` (twice the former) is given back to the kernel. Which of
those a step's buffers hit depends on the allocation history, so in some processes they go
back to the kernel every step and return as freshly zeroed pages, one page fault per 4 kB:
measured on ml-latest-small (bs 64, 2 threads, `benchmarks/page_faults.py`), 1,200-1,400
page faults and ~2,700 µs a step with torch's default Adam instead of under 1 and ~750 µs;
with fused Adam, some runs had 12-90 page faults and +15-45 % a step (the
documentation's Performance page, "Page faults").

What. `keep_freed_memory()` (`set_malloc_thresholds()`) fixes both thresholds at the top of
glibc's own adaptive range, 32 MB and 64 MB, where glibc itself settles once the process
has freed one 32 MB block: blocks under 32 MB come from the heap, and up to 64 MB of freed
memory stays there for the next step. `fit` calls it by default when the model is on the CPU
(`fit(..., keep_freed_memory=False)` leaves malloc alone). `release_freed_memory()`
(`malloc_trim(0)`) gives the heap's free memory back to the system, for when a process is
done training and wants its footprint small; `fit` does not call it (it costs milliseconds,
and the next run would fault the memory back in).

The catch. glibc can neither report its thresholds nor return to adapting them once they
are set, so they stay set for the rest of the process. What that costs is bounded: at most
64 MB of free memory at the top of the heap is kept instead of being trimmed, and blocks of
128 kB to 32 MB that glibc's adaptation had not yet moved into the heap live there. Where the C
library is not glibc (macOS, Windows, musl) nothing is changed and the functions return False.
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
    """From now on, keep freed buffers under 32 MB in the heap for reuse, and up to 64 MB of
    free memory before glibc trims the heap (see the module docstring). `enabled=False` does
    nothing, so callers can write `keep_freed_memory(cond)`. Returns whether glibc's
    thresholds are set."""
    return set_malloc_thresholds() if enabled else False
