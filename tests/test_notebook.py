"""Notebook first (issue 15): where progress goes (widgets in a notebook, text bars in a
terminal, nothing in a CI log), the epoch table as HTML in a notebook with the text table's
numbers, each plot shown once, and lr_find's one line; proved in a real Jupyter kernel by
executing a notebook with nbclient."""

from __future__ import annotations

import io
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from notebook_run import execute_notebook, outputs_with, stream_text

import minifast as mf
from minifast import Printer, fit
from minifast.callbacks import format_time
from minifast.runtime import notebook

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ detecting the environment


def fake_ipython(monkeypatch, shell_class_name: str | None, config=None):
    """Put a stand-in IPython module in sys.modules whose get_ipython() returns an instance of
    a class of that name (None: no shell)."""
    mod = types.ModuleType("IPython")
    shell = None if shell_class_name is None else type(shell_class_name, (), {"config": config or {}})()
    mod.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", mod)


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_in_notebook_only_in_a_kernel(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not notebook.in_notebook()  # IPython not even imported
    fake_ipython(monkeypatch, None)
    assert not notebook.in_notebook()  # imported, but no shell running
    fake_ipython(monkeypatch, "TerminalInteractiveShell")
    assert not notebook.in_notebook()
    fake_ipython(monkeypatch, "ZMQInteractiveShell")
    assert notebook.in_notebook()
    fake_ipython(monkeypatch, "Shell", config={"IPKernelApp": {}})  # a kernel's own subclass
    assert notebook.in_notebook()


def test_default_progress_terminal_ci_log_and_notebook(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    monkeypatch.delenv("CI", raising=False)
    assert notebook.default_progress(Tty())
    assert not notebook.default_progress(io.StringIO())  # a log file or a pipe
    for ci in ("true", "1"):
        monkeypatch.setenv("CI", ci)
        assert not notebook.default_progress(Tty())
    monkeypatch.setenv("CI", "false")
    assert notebook.default_progress(Tty())
    monkeypatch.setenv("CI", "true")
    fake_ipython(monkeypatch, "ZMQInteractiveShell")
    assert notebook.default_progress(io.StringIO())  # a notebook run in CI: widgets, not logs


def test_fit_shows_bars_by_default_in_a_notebook(tiny_model, tiny_data, monkeypatch, capsys):
    def run():
        fit(tiny_model, tiny_data, 1, torch.optim.SGD(tiny_model.parameters(), 0.01), F.mse_loss,
            verbose=False)
        return capsys.readouterr().err

    monkeypatch.setattr(notebook, "in_notebook", lambda: False)
    assert "epoch" not in run()  # pytest's stderr is no terminal: no bars
    monkeypatch.setattr(notebook, "in_notebook", lambda: True)  # (the bars are text here)
    assert "epoch" in run()


# ------------------------------------------------------------------ the epoch table


def test_html_table_has_the_text_tables_columns_and_numbers(tiny_model, tiny_data, monkeypatch,
                                                             capsys):
    pytest.importorskip("IPython")

    def mae(preds, y):
        return (preds.view(-1) - y.view(-1)).abs().mean()

    def run(printer):
        torch.manual_seed(0)
        model = type(tiny_model)()
        fit(model, tiny_data, 2, torch.optim.SGD(model.parameters(), 0.01), F.mse_loss, [mae],
            callbacks=[printer], verbose=False, progress=False)

    lines = []
    run(Printer(write=lines.append))
    monkeypatch.setattr("minifast.callbacks.recording.in_notebook", lambda: True)
    html_printer = Printer()
    run(html_printer)
    capsys.readouterr()  # IPython's display() outside a kernel prints a repr
    table = html_printer._table
    assert table.names == lines[0].split() == ["epoch", "trn_loss", "val_loss", "mae", "time"]
    text_rows = [ln.split() for ln in lines[1:]]
    assert [r[:-1] for r in table.rows] == [r[:-1] for r in text_rows]  # the time may differ
    assert re.fullmatch(r"\d+:\d\d", table.rows[0][-1])
    assert table.to_html().count("<tr>") == 2 and "<th>mae</th>" in table.to_html()
    monkeypatch.setattr("minifast.callbacks.recording.in_notebook", lambda: False)
    assert Printer(write=print).write is print


# ------------------------------------------------------------------ lr_find's one line


def test_lr_find_says_its_suggestion_in_one_line(tiny_model, tiny_data, capsys):
    learn = mf.Learner(tiny_data, tiny_model)
    sugg = learn.lr_find(progress=False)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out == (f"lr_find: suggested lr {sugg:.2e} (steepest descent of the smoothed loss); "
                   "learn.sched.plot() shows the curve\n")
    learn.lr_find(progress=False, verbose=False)
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------ a real notebook


SETUP = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import json
import numpy as np
import torch
import minifast as mf

rng = np.random.RandomState(0)
cats = np.stack([rng.randint(0, 30, 800), rng.randint(0, 20, 800)], 1).astype(np.int64)
y = (3 + rng.randn(800) * 0.5).astype(np.float32)
data = mf.ColumnarModelData.from_arrays(".", mf.get_cv_idxs(len(y)), cats, y, bs=32, seed=1)

class Dot(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.u, self.i = torch.nn.Embedding(30, 4), torch.nn.Embedding(20, 4)
    def forward(self, cats, conts):
        return (self.u(cats[:, 0]) * self.i(cats[:, 1])).sum(1, keepdim=True) + 3

torch.manual_seed(0)
learn = mf.Learner(data, Dot())
"""

CELLS = {
    "fit": "learn.fit(1e-2, 2)",
    "epochs": "print(json.dumps(learn.recorder.epochs))",
    "plot_loss": "learn.sched.plot_loss()",
    "plot_lr": "learn.sched.plot_lr()",
    "lr_find": "learn.lr_find()\nlearn.sched.plot()",
}


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP)] + [nbformat.v4.new_code_cell(c)
                                                     for c in CELLS.values()]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    execute_notebook(nb, tmp_path_factory.mktemp("nb"), timeout=120)
    return dict(zip(CELLS, nb.cells[1:]))


def test_notebook_fit_shows_widget_bars_and_an_html_table(executed):
    cell = executed["fit"]
    assert outputs_with(cell, "application/vnd.jupyter.widget-view+json")
    tables = [o for o in outputs_with(cell, "text/html") if "<table" in o["data"]["text/html"]]
    assert len(tables) == 1  # one table, updated in place (display_id), not one per epoch
    html = tables[0]["data"]["text/html"]
    assert re.findall(r"<th>(.*?)</th>", html) == ["epoch", "trn_loss", "val_loss", "time"]
    rows = [re.findall(r"<td>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", html)]
    epochs = json.loads(stream_text(executed["epochs"]))
    assert rows == [[str(e["epoch"]), f"{e['trn_loss']:.5f}", f"{e['val_loss']:.5f}",
                     format_time(e["time"])] for e in epochs]
    assert "trn_loss" not in stream_text(cell, None)  # no text table beside the HTML one


@pytest.mark.parametrize("name", ["plot_loss", "plot_lr", "lr_find"])
def test_notebook_shows_each_plot_once(executed, name):
    assert len(outputs_with(executed[name], "image/png")) == 1


def test_notebook_lr_find_prints_its_line(executed):
    text = stream_text(executed["lr_find"])
    assert re.fullmatch(r"lr_find: suggested lr \d\.\d\de[-+]\d\d \(steepest descent of the "
                        r"smoothed loss\); learn.sched.plot\(\) shows the curve\n", text)
