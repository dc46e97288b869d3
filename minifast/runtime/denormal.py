"""Flush denormal floats to zero on CPU, on every thread that does the arithmetic.

Floats below float32's smallest normal number are *denormal*, and x86 CPUs compute with them
far more slowly; training embeddings with Adam and L2 weight decay produces them in bulk in
rows the data rarely touches. The CPU's flush-to-zero / denormals-are-zero modes make such
values exactly 0, which no model's output can tell apart.

`torch.set_flush_denormal(True)` sets the mode on the calling thread only, while PyTorch's
CPU kernels run on an OpenMP pool whose workers copied the mode once, when they were created.
`flush_denormal` therefore also runs a tiny parallel region through torch's own libgomp in
which every worker sets the mode itself, checks it took, and later restores what it had.
Where that is not possible it falls back to the calling thread and says so in the returned
`FlushState`; nothing is raised. `fit` uses it by default when the model is on the CPU
(`fit(..., flush_denormal=False)` turns it off) and restores every thread's mode after. Why
and how much, measured: the docs' Performance page, "Denormals".
"""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
from collections.abc import Iterator

import torch
from attrs import define, field

__all__ = ["FlushState", "denormals_flushed", "flush_denormal", "set_flush_denormal"]

# The smallest positive double is denormal: multiplying it by one gives 0 only when the CPU
# treats denormal inputs as zero. Python floats are computed with the same SSE unit (and the
# same MXCSR bits) as torch's CPU kernels, so this probes the calling thread's mode. The
# operands are module globals so the compiler cannot fold the product away.
_TINY = 5e-324
_ONE = 1.0
_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_lock = threading.Lock()


def denormals_flushed() -> bool:
    """Whether the calling thread currently flushes denormal floats to zero."""
    return _TINY * _ONE == 0.0


@define
class FlushState:
    """What `set_flush_denormal` did: `supported` (the CPU has the mode), `threads` (how many
    threads now have the requested mode, the caller included), `workers` (whether torch's
    OpenMP worker threads were reached; False means the calling thread only), `previous`
    (each reached thread's mode before, keyed by its OpenMP thread number; -1 is the caller
    when no pool was reached), and `reason` (why the workers were not reached, if not)."""

    enabled: bool
    supported: bool
    threads: int = 0
    workers: bool = False
    previous: dict = field(factory=dict)
    reason: str = ""


def _openmp_library():
    """torch's OpenMP runtime (GNU libgomp, or a runtime with its GOMP_* entry points), or a
    string saying why it cannot be used."""
    if "OpenMP" not in torch.__config__.parallel_info().split("parallel backend:")[-1]:
        return "torch's intra-op parallel backend is not OpenMP"
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if line.rstrip().endswith(".so") or ".so." in line}
    except OSError:
        return "cannot read /proc/self/maps to find the OpenMP runtime"
    for path in sorted(paths):
        name = path.rsplit("/", 1)[-1]
        if name.startswith(("libgomp", "libiomp5", "libomp")):
            try:
                lib = ctypes.CDLL(path)  # already loaded: dlopen returns the same library
                lib.GOMP_parallel.argtypes = [_CALLBACK, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                lib.GOMP_parallel.restype = None
                lib.omp_get_thread_num.restype = ctypes.c_int
                return lib
            except (OSError, AttributeError):
                continue
    return "no OpenMP runtime with GOMP_parallel is loaded"


_omp = None


def _on_every_thread(fn) -> dict:
    """Run `fn()` once on each thread of the calling thread's OpenMP team (the threads torch's
    kernels run on); returns `{omp thread number: fn's result}`."""
    global _omp
    if _omp is None:
        _omp = _openmp_library()
    if isinstance(_omp, str):
        raise OSError(_omp)
    lib, results, errors = _omp, {}, []

    def body(_data):  # runs on every team thread; ctypes takes the GIL for each call
        try:
            results[lib.omp_get_thread_num()] = fn()
        except BaseException as e:  # an exception must not unwind through C frames
            errors.append(e)

    cb = _CALLBACK(body)
    lib.GOMP_parallel(cb, None, max(1, torch.get_num_threads()), 0)
    if errors:
        raise errors[0]
    return results


def set_flush_denormal(enabled: bool = True, workers: bool = True) -> FlushState:
    """Flush denormal floats to zero (or stop) on the calling thread and, with `workers`, on
    every thread of torch's OpenMP pool. Returns what was done, including each thread's
    previous mode (for `restore`); never raises for an unsupported platform."""
    enabled = bool(enabled)
    with _lock:
        before = denormals_flushed()
        if not torch.set_flush_denormal(enabled):
            # This CPU has no FTZ/DAZ (torch returns False); nothing changed.
            return FlushState(enabled, False, 0, False, {}, "this CPU has no flush-to-zero mode")
        state = FlushState(enabled, True, 1, False, {-1: before})
        if not workers:
            state.reason = "workers=False: the calling thread only"
            return state
        if torch.get_num_threads() <= 1:  # one intra-op thread: the caller is the team
            state.workers = True
            return state

        def flip():
            was = denormals_flushed()
            torch.set_flush_denormal(enabled)
            return was, denormals_flushed()

        try:
            res = _on_every_thread(flip)
        except OSError as e:
            state.reason = str(e)
            return state
        state.previous = {k: was for k, (was, _now) in res.items()}
        # The caller is team thread 0 and was already switched above: its previous is `before`.
        state.previous[0] = before
        state.threads = sum(now == enabled for _was, now in res.values())
        state.workers = state.threads == len(res) and len(res) >= torch.get_num_threads()
        if not state.workers:
            state.reason = f"only {state.threads} of {torch.get_num_threads()} threads switched"
        return state


def restore(state: FlushState) -> None:
    """Put every thread `set_flush_denormal` reached back in the mode it had before."""
    if not state.supported:
        return
    with _lock:
        torch.set_flush_denormal(state.previous.get(0, state.previous.get(-1, False)))
        if not state.workers or torch.get_num_threads() <= 1:
            return
        default = state.previous.get(0, False)

        def back():
            torch.set_flush_denormal(state.previous.get(_omp.omp_get_thread_num(), default))

        with contextlib.suppress(OSError):
            _on_every_thread(back)


@contextlib.contextmanager
def flush_denormal(enabled: bool = True, workers: bool = True) -> Iterator[FlushState]:
    """Flush denormals to zero inside the block (on every intra-op thread, see the module
    docs); every thread's previous mode is restored on exit. `enabled=False` is a no-op
    block, so callers can write `with flush_denormal(cond):`. Yields the `FlushState`."""
    if not enabled:
        yield FlushState(False, False, 0, False, {}, "disabled")
        return
    state = set_flush_denormal(True, workers)
    try:
        yield state
    finally:
        restore(state)


if sys.platform != "linux":  # /proc/self/maps is Linux's; elsewhere the caller-only fallback
    _omp = "finding the OpenMP runtime is only implemented on Linux"
