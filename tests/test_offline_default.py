"""`python -m minifast.collab` with no arguments works offline: synthetic ratings stand in."""

import pytest

from minifast.collab.__main__ import main


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.delenv("MINIFAST_MOVIELENS_DIR", raising=False)
    monkeypatch.setenv("MINIFAST_MOVIELENS_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MINIFAST_CACHE", str(tmp_path / "cache"))


def test_default_data_falls_back_to_synthetic_offline(tmp_path, capsys):
    rc = main(["--max-rows", "3000", "--cycles", "1", "--factors", "4", "--out", str(tmp_path),
               "-n", "2", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "could not download" in err and "synthetic" in err
    assert "noise floor MSE" in out and "synthetic: 3000 ratings" in out
    assert (tmp_path / "models" / "synthetic-dotbias.pt").is_file()
    assert "top 2 recommendations" in out


def test_explicit_synthetic_and_explicit_download_stay_distinct(tmp_path, capsys):
    assert main(["--data", "synthetic", "--max-rows", "2000", "--cycles", "1", "--factors", "2",
                 "--out", str(tmp_path), "-n", "1", "--no-progress"]) == 0
    assert "could not download" not in capsys.readouterr().err
    # naming the data set explicitly keeps the clear offline error
    assert main(["--data", "ml-latest-small", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "could not download" in capsys.readouterr().err
