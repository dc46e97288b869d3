"""Where the process reports to: a Jupyter kernel, a terminal, or a log file (CI).

`fit` and the reporting callbacks ask this module how to show progress: widget bars and an
HTML epoch table in a notebook, text bars in a terminal, no bars in a log. IPython is never
imported here: a notebook kernel has already imported it, so finding it in `sys.modules` is
both the test and free.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import TextIO

__all__ = ["in_notebook", "in_ci", "has_widgets", "default_progress"]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (Jupyter, JupyterLab, VS Code, Colab: a ZMQ kernel shell);
    False in a terminal IPython, a plain script, or a worker process."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # a half-imported or stubbed IPython: not a kernel we can draw in
        return False
    if shell is None:
        return False
    if any(c.__name__ == "ZMQInteractiveShell" for c in type(shell).__mro__):
        return True
    return "IPKernelApp" in getattr(shell, "config", {})


def in_ci() -> bool:
    """True when the `CI` environment variable is set to anything but "", "0" or "false"
    (GitHub Actions, GitLab CI and most others set `CI=true`)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def has_widgets() -> bool:
    """True when ipywidgets is installed (tqdm's notebook bars need it)."""
    return importlib.util.find_spec("ipywidgets") is not None


def default_progress(stream: TextIO | None = None) -> bool:
    """Whether `fit` shows progress bars when not told: always in a notebook (the bars are
    widgets, not log lines); in a terminal (`stream`, default stderr, is a tty) unless `CI`
    is set; never when the output goes to a file or a pipe."""
    if in_notebook():
        return True
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not in_ci()
