"""docs/gen_figures.py draws every figure the docs show, and the committed PNGs are its output."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
IMAGE = re.compile(r"!\[[^\]]*\]\((img/[^)\s]+\.png)\)")


def _gen_figures():
    spec = importlib.util.spec_from_file_location("gen_figures", DOCS / "gen_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _images_shown() -> set[str]:
    return {m for page in DOCS.glob("*.md") for m in IMAGE.findall(page.read_text())}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("img")
    return out, _gen_figures().main(out, quick=True)


def test_every_figure_is_drawn_as_png(drawn):
    out, written = drawn
    assert written, "gen_figures wrote nothing"
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_every_image_in_the_docs_comes_from_the_script(drawn):
    out, written = drawn
    names = {p.name for p in written}
    shown = _images_shown()
    assert shown, "no images found in docs/*.md"
    for img in shown:
        assert Path(img).name in names, f"{img} is shown in the docs but gen_figures.py does not draw it"
        assert (DOCS / img).is_file(), f"{img}: run `python docs/gen_figures.py`"


def test_committed_images_are_small_and_used():
    shown = {Path(i).name for i in _images_shown()}
    for png in (DOCS / "img").glob("*.png"):
        assert png.stat().st_size < 200_000, f"{png.name} is {png.stat().st_size} bytes"
        assert png.name in shown, f"docs/img/{png.name} is not shown on any page"
