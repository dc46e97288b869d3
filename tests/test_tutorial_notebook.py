"""examples/tutorial.ipynb, the lesson-5 tutorial (docs/tutorial.md) as a notebook: stored
without outputs, and run top to bottom in a real Jupyter kernel (quick mode, on the shared
MovieLens data through the library's own download code) it shows a notebook user what issue
15 promises: progress widgets and an HTML epoch table for every fit, each plot once, and
lr_find's suggestion in one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from notebook_run import execute_notebook, outputs_with, stream_text

from minifast import Printer, fit

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "tutorial.ipynb"
ML = ROOT.parent / "shared" / "data" / "movielens"

FITS = ["embdot-fit", "bias-fit", "net", "fit"]  # the cells that train, by cell id
PLOTS = ["lr-find", "plot-lr", "plot-loss", "preds", "pca-plot"]  # the cells that draw
WIDGET = "application/vnd.jupyter.widget-view+json"

nbformat = pytest.importorskip("nbformat")


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_stored_clean_with_one_settings_cell():
    nb = read_notebook()
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), (
        "examples/tutorial.ipynb is stored without outputs: clear them (Jupyter: Edit > Clear "
        "Outputs of All Cells) before committing")
    assert [c.id for c in code if "MINIFAST_QUICK" in c.source] == ["settings"]
    assert "MINIFAST_QUICK=1" in nb.cells[0].source  # documented where a reader starts
    assert set(FITS + PLOTS) <= {c.id for c in code}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    if not (ML / "ml-latest-small").is_dir():
        pytest.skip("shared MovieLens data absent")
    nb = read_notebook()
    cwd = tmp_path_factory.mktemp("tutorial")
    execute_notebook(nb, cwd, timeout=120, env={
        "MINIFAST_QUICK": "1",
        "MINIFAST_MOVIELENS_DIR": str(ML),  # download_movielens finds the data here
        "MINIFAST_MOVIELENS_URL": "http://127.0.0.1:9",  # and never reaches the network
        "MINIFAST_CACHE": str(cwd / "cache"),
    })
    return {c.id: c for c in nb.cells if c.cell_type == "code"}


def test_every_cell_ran_without_error(executed):
    assert all(c.execution_count is not None for c in executed.values())
    assert not [o for c in executed.values() for o in c.outputs if o["output_type"] == "error"]


def text_table_columns(tiny_model, tiny_data) -> list[str]:
    """The header of the text epoch table of a fit without metrics, as a terminal shows it."""
    lines = []
    fit(tiny_model, tiny_data, 1, torch.optim.SGD(tiny_model.parameters(), 0.01), F.mse_loss,
        callbacks=[Printer(write=lines.append)], verbose=False, progress=False)
    return lines[0].split()


@pytest.mark.parametrize("name", FITS)
def test_each_fit_shows_widget_bars_and_an_html_table(executed, name, tiny_model, tiny_data):
    cell = executed[name]
    assert outputs_with(cell, WIDGET)
    tables = [o["data"]["text/html"] for o in outputs_with(cell, "text/html")
              if "minifast-epochs" in o["data"]["text/html"]]
    assert len(tables) == cell.source.count("fit(")  # one table per fit, updated in place
    columns = text_table_columns(tiny_model, tiny_data)
    for html in tables:
        assert re.findall(r"<th>(.*?)</th>", html) == columns
        rows = [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", html)]
        assert len(rows) == 1  # quick mode: one epoch per fit
        assert re.fullmatch(r"0 \d+\.\d{5} \d+\.\d{5} \d+:\d\d", " ".join(rows[0]))
    assert "trn_loss" not in stream_text(cell, None)  # no text table beside the HTML one


def test_each_plot_shown_once(executed):
    shown = {name: len(outputs_with(c, "image/png")) for name, c in executed.items()}
    assert shown == {name: int(name in PLOTS) for name in executed}


def test_lr_find_says_its_suggestion_in_one_line(executed):
    assert re.fullmatch(r"lr_find: suggested lr \d\.\d\de[-+]\d\d \(steepest descent of the "
                        r"smoothed loss\); learn.sched.plot\(\) shows the curve\n",
                        stream_text(executed["lr-find"]))
