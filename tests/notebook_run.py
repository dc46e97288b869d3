"""Executing a notebook in a real Jupyter kernel (nbclient) and reading its outputs back, for
the tests that prove what a notebook user sees."""

from __future__ import annotations

from pathlib import Path

import pytest


def execute_notebook(nb, cwd: Path, timeout: int, env: dict[str, str] | None = None):
    """Run every cell of `nb` (in place) in a fresh python3 kernel started in `cwd`, with
    `env` added to the environment and matplotlib's own notebook backend (no MPLBACKEND);
    skips the test when nbclient, ipykernel or matplotlib is missing."""
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("matplotlib")
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    with pytest.MonkeyPatch.context() as m:
        m.delenv("MPLBACKEND", raising=False)  # the kernel's own (inline) backend
        for k, v in (env or {}).items():
            m.setenv(k, v)
        client.execute()
    return nb


def outputs_with(cell, mime: str) -> list:
    """The outputs of `cell` that carry data of type `mime`."""
    return [o for o in cell.outputs if mime in o.get("data", {})]


def stream_text(cell, name: str | None = "stdout") -> str:
    """Everything `cell` wrote to stdout (`name="stderr"`: to stderr; None: to either)."""
    return "".join(o["text"] for o in cell.outputs
                   if o["output_type"] == "stream" and name in (None, o["name"]))
