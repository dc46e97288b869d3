"""Export for serving (issue 15): `learn.export(path)` -> `minifast.load_learner(path)` predicts
the same numbers in a fresh process that has neither the data nor the model's source file;
bad files and bad inputs fail clearly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import minifast as mf
from minifast import CheckpointError, Learner, ModelData, load_learner

ROOT = Path(__file__).resolve().parents[1]

# A user's own model, in a script of its own: exported there, then the script is deleted and a
# fresh process loads the file, so nothing of the model's code can be imported back.
TRAIN = textwrap.dedent("""
    import sys
    import numpy as np, torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from sklearn.datasets import load_digits
    from minifast import Learner, ModelData

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                      nn.Dropout(0.2), nn.Linear(32, 10))
        def forward(self, x):
            return self.body(x / 16)

    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    dl = lambda a, b, shuffle: DataLoader(TensorDataset(a, b), batch_size=64, shuffle=shuffle)
    learn = Learner(ModelData(sys.argv[1], dl(x[:1500], y[:1500], True), dl(x[1500:], y[1500:], False)),
                    Net(), opt_fn=torch.optim.Adam)
    learn.fit(3e-3, 2, verbose=False, progress=False)
    learn.export(sys.argv[2])
    np.save(sys.argv[3], x[1500:].numpy())
    np.save(sys.argv[4], learn.predict_array(x[1500:]))
""")
SERVE = textwrap.dedent("""
    import sys
    import numpy as np
    import minifast
    learner = minifast.load_learner(sys.argv[1])
    np.save(sys.argv[3], learner.predict(np.load(sys.argv[2])))
    print(learner.info["model"])
""")


def _run(script: Path, *args, cwd: Path) -> str:
    out = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_export_then_load_in_a_fresh_process_without_data_or_model_code(tmp_path):
    work, serve = tmp_path / "train", tmp_path / "serve"
    work.mkdir()
    serve.mkdir()
    (work / "train.py").write_text(TRAIN)
    _run(work / "train.py", work, serve / "net.mf", serve / "x.npy", serve / "expected.npy", cwd=work)
    (work / "train.py").unlink()  # the model's source is gone
    (serve / "serve.py").write_text(SERVE)
    name = _run(serve / "serve.py", "net.mf", "x.npy", "got.npy", cwd=serve)
    assert name.strip() == "Net"
    expected, got = np.load(serve / "expected.npy"), np.load(serve / "got.npy")
    assert got.shape == expected.shape == (297, 10)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)  # eval mode: no dropout, BN stats
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_one_row_and_many_rows(tmp_path, tiny_model, tiny_data):
    learn = Learner(tiny_data, tiny_model)
    learn.fit(1e-2, 1, verbose=False, progress=False)
    ex = load_learner(learn.export(tmp_path / "dot.mf"))
    cats = np.array([[1, 2], [3, 4], [29, 19]])
    conts = np.zeros((3, 0), np.float32)
    want = learn.predict_array(cats, conts)
    np.testing.assert_allclose(ex.predict(cats, conts), want, atol=1e-6)
    np.testing.assert_allclose(ex.predict(cats[:1], conts[:1]), want[:1], atol=1e-6)
    big = np.tile(cats, (30_000, 1))  # more rows than one chunk
    np.testing.assert_allclose(ex.predict(big, np.zeros((len(big), 0), np.float32))[-3:], want,
                               atol=1e-6)
    assert ex.predict(cats.tolist(), conts).dtype == np.float32  # lists, ints of any width


def test_bad_inputs_are_named(tmp_path, tiny_model, tiny_data):
    ex = load_learner(Learner(tiny_data, tiny_model).export(tmp_path / "dot.mf"))
    with pytest.raises(ValueError, match="takes 2 input"):
        ex.predict(np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match=r"input 0 must have shape \[n, 2\].*got \(3, 3\)"):
        ex.predict(np.zeros((3, 3), np.int64), np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match=r"different numbers of rows \[3, 2\]"):
        ex.predict(np.zeros((3, 2), np.int64), np.zeros((2, 0), np.float32))


def test_missing_foreign_and_future_files_are_refused(tmp_path, tiny_model, tiny_data):
    with pytest.raises(FileNotFoundError, match="no export file"):
        load_learner(tmp_path / "nope.mf")
    torch.save({"a": 1}, tmp_path / "weights.pt")  # a state dict is not an export
    with pytest.raises(CheckpointError, match="not a minifast export file.*learn.export"):
        load_learner(tmp_path / "weights.pt")
    path = Learner(tiny_data, tiny_model).export(tmp_path / "dot.mf")
    with zipfile.ZipFile(path) as z:  # the same program with a header from a newer minifast
        items = {n: z.read(n) for n in z.namelist()}
    newer = tmp_path / "newer.mf"
    with zipfile.ZipFile(newer, "w") as z:
        for n, data in items.items():
            z.writestr(n, data.replace(b'"version": 1', b'"version": 99')
                       if n.endswith("minifast.json") else data)
    with pytest.raises(CheckpointError, match="version 99; this minifast reads"):
        load_learner(newer)


class Branchy(nn.Module):
    """Python control flow on a tensor's value: torch.export cannot trace it."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x):
        return self.lin(x) if x.sum() > 0 else -self.lin(x)


def test_an_untraceable_model_is_refused_with_why(tmp_path):
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    dl = DataLoader(TensorDataset(x, y), batch_size=8)
    learn = Learner(ModelData(tmp_path, dl, dl), Branchy())
    with pytest.raises(ValueError, match="could not trace Branchy.forward.*control flow"):
        learn.export(tmp_path / "b.mf")
    assert not (tmp_path / "b.mf").exists()
    assert not list(tmp_path.glob(".b.mf.*.tmp"))  # no temp file left behind


def test_info_must_be_json(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="info must be JSON-able"):
        mf.export_model(tiny_model, (torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 0)),
                        tmp_path / "x.mf", info={"bad": object()})
