"""The documentation's code runs, its shown outputs are real, and the site builds strictly.

Every ```python block of every page in docs/ is executed, page by page, in order, in one
namespace per page (so a page reads like a notebook). Use ```py for code that is shown but not
run (outlines, commands that need data you do not ship). Lines `--8<-- "file:section"`
(pymdownx.snippets) are resolved as mkdocs resolves them, so code included from examples/ runs
here too.

A ```text block holding `--8<-- "docs/snippets/NAME.txt"` shows the output of the python block
just before it; this test checks the file against a fresh run (numbers to 1 %, times ignored).
After a deliberate change, regenerate them: `python tests/test_docs.py --update [PAGE.md]`.

Files under `docs/snippets/runs/` are different: the saved output of a longer run (real data,
minutes of training) made by a command that the page states next to them, e.g.
`python examples/movielens_lesson5.py ... > docs/snippets/runs/lesson5.txt`. Pages show them
(whole or by line range, `--8<-- "docs/snippets/runs/lesson5.txt:12:16"`) but this test does
not rerun them; it checks that every range included is inside the file and not empty.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
SNIPPET = re.compile(r'^[ \t]*--8<-- "([^"]+)"[ \t]*$', re.M)
PAGES = sorted(p.name for p in DOCS.glob("*.md"))
RUNS = "docs/snippets/runs/"


def resolve_snippets(text: str) -> str:
    """Replace `--8<-- "path[:section]"` lines with the file (or its marked section)."""

    def include(m: re.Match) -> str:
        spec = m.group(1)
        path, _, section = spec.partition(":")
        body = (ROOT / path).read_text()
        if section:
            start = re.search(rf"--8<-- \[start:{re.escape(section)}\][^\n]*\n", body)
            end = re.search(rf"[^\n]*--8<-- \[end:{re.escape(section)}\]", body)
            assert start and end, f"section {section!r} not marked in {path}"
            body = body[start.end() : end.start()]
            body = "\n".join(ln for ln in body.splitlines() if "--8<-- [" not in ln) + "\n"
        return body.rstrip("\n")

    return SNIPPET.sub(include, text)


def blocks(page: str) -> list[tuple[str, str]]:
    """`(language, code)` of every fenced block of `page`, in order (snippets unresolved)."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer((DOCS / page).read_text())]


def run_page(page: str) -> dict[str, str]:
    """Run the page's python blocks in order; return the output each shown output file should
    hold (`docs/snippets/NAME.txt` -> stdout of the python block before it)."""
    ns: dict = {"__name__": f"docs_{Path(page).stem}"}
    outputs, last = {}, None
    old_cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            for i, (lang, code) in enumerate(blocks(page)):
                if lang == "python":
                    buf = io.StringIO()
                    with contextlib.redirect_stdout(buf):
                        exec(compile(resolve_snippets(code), f"docs/{page}#block{i}", "exec"), ns)
                    last = buf.getvalue()
                elif lang == "text":
                    for inc in SNIPPET.findall(code):
                        if inc.startswith("docs/snippets/") and not inc.startswith(RUNS):
                            assert last is not None, f"{page}: {inc} follows no python block"
                            outputs[inc] = last
        finally:
            os.chdir(old_cwd)
    return outputs


_TIME = re.compile(r"^\d+:\d\d(:\d\d)?$")


def _same_output(expected: str, got: str, numbers: bool) -> str | None:
    """None when `got` matches `expected` token by token; else the first difference."""
    e_lines, g_lines = expected.strip().splitlines(), got.strip().splitlines()
    if len(e_lines) != len(g_lines):
        return f"{len(g_lines)} lines instead of {len(e_lines)}"
    for el, gl in zip(e_lines, g_lines, strict=True):
        et, gt = el.split(), gl.split()
        if len(et) != len(gt):
            return f"line {gl!r} instead of {el!r}"
        for a, b in zip(et, gt, strict=True):
            if a == b or (_TIME.match(a) and _TIME.match(b)):  # (float("nan") != itself)
                continue
            try:
                fa, fb = float(a), float(b)
            except ValueError:
                if a != b:
                    return f"line {gl!r} instead of {el!r}"
                continue
            if numbers and not math.isclose(fa, fb, rel_tol=1e-2, abs_tol=1e-4):
                return f"line {gl!r} instead of {el!r}"
    return None


@pytest.fixture(autouse=True)
def _agg_backend(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs_and_outputs_match(page):
    import torch

    from minifast import default_device

    torch.manual_seed(0)
    outputs = run_page(page)
    # The shown figures come from a CPU run; on another device only the layout must match.
    numbers = default_device().type == "cpu"
    for inc, got in outputs.items():
        path = ROOT / inc
        assert path.is_file(), f"{inc} missing: run `python tests/test_docs.py --update`"
        diff = _same_output(path.read_text(), got, numbers)
        assert diff is None, (
            f"{page}: the output shown from {inc} no longer matches a fresh run ({diff}); "
            f"if the change is intended, run `python tests/test_docs.py --update`"
        )


def test_run_outputs_included_exist():
    """Every `docs/snippets/runs/FILE[:start:end]` a page includes names lines of FILE."""
    found = 0
    for page in PAGES:
        for spec in SNIPPET.findall((DOCS / page).read_text()):
            if not spec.startswith(RUNS):
                continue
            path, *rng = spec.split(":")
            lines = (ROOT / path).read_text().splitlines()
            found += 1
            if rng:
                start, end = int(rng[0]), int(rng[1]) if len(rng) > 1 else len(lines)
                assert 1 <= start <= end <= len(lines), f"{page}: {spec} is outside {path}"
                assert any(ln.strip() for ln in lines[start - 1 : end]), f"{page}: {spec} is empty"
    assert found or not (DOCS / "snippets" / "runs").is_dir()


def test_snippets_resolve():
    text = resolve_snippets('--8<-- "examples/custom_callback.py:plateau"')
    assert text.startswith("class PlateauStopper(Callback):") and "--8<--" not in text


def test_output_comparison_can_fail():
    table = "epoch  trn_loss  val_loss  time\n    0   0.50000   0.40000  0:01\n"
    assert _same_output(table, table.replace("0:01", "0:03"), True) is None
    assert _same_output(table, table.replace("0.40000", "0.40100"), True) is None
    assert _same_output(table, table.replace("0.40000", "0.45000"), True) is not None
    assert _same_output(table, table.replace("val_loss", "l1_loss"), True) is not None
    assert _same_output(table, table + "    1   0.1  0.1  0:01\n", True) is not None
    assert _same_output("loss is nan", "loss is nan", True) is None
    assert _same_output("loss is nan", "loss is inf", True) is not None


def test_mkdocs_build_strict(tmp_path):
    if not os.environ.get("CI"):  # CI installs the docs extra: there a missing one must fail
        pytest.importorskip("mkdocs")
        pytest.importorskip("mkdocstrings")
        pytest.importorskip("material")
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert "WARNING" not in log, log
    assert (tmp_path / "site" / "api" / "index.html").is_file()


if __name__ == "__main__":
    if sys.argv[1:2] != ["--update"] or not set(sys.argv[2:]) <= set(PAGES):
        sys.exit("usage: python tests/test_docs.py --update [PAGE.md ...]   (rewrites "
                 "docs/snippets/*.txt of those pages, default all)")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import torch

    for page in sys.argv[2:] or PAGES:
        torch.manual_seed(0)
        for inc, text in run_page(page).items():
            (ROOT / inc).parent.mkdir(parents=True, exist_ok=True)
            (ROOT / inc).write_text(text)
            print(f"wrote {inc} ({len(text.splitlines())} lines) from docs/{page}")
