import csv

import pytest
import torch
import torch.nn.functional as F

from minifast import Callback, CSVLogger, EarlyStopping, ProgressBar, SaveBestModel, fit, safe_load


class FakeVals(Callback):
    """Overrides the validation loss with a scripted sequence (order < monitors)."""

    order = -5

    def __init__(self, seq):
        self.seq = seq

    def on_validate_end(self, vals):
        vals[0] = self.seq[self.state.epoch]


def run(model, data, n, cbs):
    return fit(model, data, n, torch.optim.SGD(model.parameters(), 0.01), F.mse_loss,
               callbacks=cbs, verbose=False)


def test_early_stopping_waits_patience(tiny_model, tiny_data):
    seq = [1.0, 0.9, 0.95, 0.91, 0.92, 0.5, 0.4]
    res = run(tiny_model, tiny_data, 7, [FakeVals(seq), EarlyStopping(patience=3)])
    assert [h["val_loss"] for h in res.history] == seq[:5]
    assert res.state.stopped


def test_early_stopping_max_mode_and_bad_monitor(tiny_model, tiny_data):
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="cannot monitor 'accuracy'"):
        run(tiny_model, tiny_data, 1, [EarlyStopping(monitor="accuracy")])


def test_save_best_model_keeps_best(tiny_model, tiny_data, tmp_path):
    seq = [1.0, 0.5, 0.7]
    saved = []

    class Spy(Callback):
        order = 100

        def on_epoch_end(self, vals):
            saved.append({k: v.clone() for k, v in self.state.model.state_dict().items()})

    path = tmp_path / "best.pt"
    run(tiny_model, tiny_data, 3, [FakeVals(seq), SaveBestModel(path), Spy()])
    best = safe_load(path)
    assert all(torch.equal(best[k], saved[1][k]) for k in best)
    assert not all(torch.equal(best[k], saved[2][k]) for k in best)


def test_csv_logger_rows(tiny_model, tiny_data, tmp_path):
    path = tmp_path / "log" / "train.csv"
    res = run(tiny_model, tiny_data, 2, [CSVLogger(path)])
    rows = list(csv.DictReader(path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert float(rows[1]["val_loss"]) == pytest.approx(res.history[1]["val_loss"])
    run(tiny_model, tiny_data, 1, [CSVLogger(path, append=True)])
    assert len(list(csv.DictReader(path.open()))) == 3


def test_progress_bar_runs_and_closes(tiny_model, tiny_data, capsys):
    bar = ProgressBar()
    res = run(tiny_model, tiny_data, 2, [bar])
    assert bar.epoch_bar is None and bar.batch_bar is None
    assert len(res.history) == 2
    assert "epoch" in capsys.readouterr().err


def test_recorder_records_lrs_and_epochs(tiny_model, tiny_data):
    res = run(tiny_model, tiny_data, 2, [])
    rec = res.recorder
    assert len(rec.lrs) == 2 * len(tiny_data.trn_dl) and set(rec.lrs) == {0.01}
    assert [e["epoch"] for e in rec.epochs] == [0, 1]
    assert rec.moms[0] == 0
    sd = rec.state_dict()
    from minifast import Recorder

    r2 = Recorder()
    r2.load_state_dict(sd)
    assert r2.losses == rec.losses and r2.epochs == rec.epochs
