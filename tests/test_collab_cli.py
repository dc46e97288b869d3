"""The command line (`python -m minifast.collab` / `minifast-collab`) and the lesson 5 example."""

from __future__ import annotations

import importlib.util
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from minifast.collab.__main__ import RECIPES, apply_recipe, build_parser, main

ML = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# How far above the noise floor the offline default may end, as a fraction of the floor.
# Measured (seed 42): 0.5868 against the floor 0.5474, 7.2 % above; on ml-latest-small's shape
# (the default before) it ended 0.39 above, 72 %.
MARGIN = 0.10
needs_data = pytest.mark.skipif(not (ML / "ml-latest-small-2016").is_dir(),
                                reason="shared MovieLens data absent")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test here may reach the network or the user's cache."""
    monkeypatch.delenv("MINIFAST_MOVIELENS_DIR", raising=False)
    monkeypatch.setenv("MINIFAST_MOVIELENS_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MINIFAST_CACHE", str(tmp_path / "cache"))


def write_csv(tmp_path) -> Path:
    rng = np.random.RandomState(0)
    n = 1500
    df = pd.DataFrame({"who": rng.randint(0, 40, n), "what": rng.randint(0, 60, n),
                       "stars": rng.randint(1, 6, n)})
    f = tmp_path / "mine.csv"
    df.to_csv(f, index=False)
    return f


def test_cli_on_a_csv_trains_saves_and_recommends(tmp_path, capsys):
    f = write_csv(tmp_path)
    rc = main(["--data", str(f), "--user-col", "who", "--item-col", "what", "--rating-col",
               "stars", "--factors", "4", "--cycles", "1", "--out", str(tmp_path / "out"),
               "--user", "7", "-n", "3", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "mine: 1500 ratings, 40 users, 60 items, scores 1..5" in out
    assert "trn_loss  val_loss   ndcg@10" in out and "validation MSE" in out
    assert (tmp_path / "out" / "models" / "mine-dotbias.pt").is_file()
    rec = out.split("top 3 recommendations for user 7:")[1].strip().splitlines()
    assert rec[0].split() == ["item", "score"] and len(rec) == 4


@needs_data
def test_cli_on_a_movielens_folder_with_titles(tmp_path, capsys):
    rc = main(["--data", str(ML / "ml-latest-small-2016"), "--max-rows", "3000", "--cycles", "1",
               "--model", "net", "--out", str(tmp_path), "--name", "m", "-n", "2",
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and (tmp_path / "models" / "m.pt").is_file()
    assert "top 2 recommendations for user 1:" in out and "title" in out


@needs_data
def test_cli_features_model_uses_the_genres_and_the_penalty_options(tmp_path, capsys):
    rc = main(["--data", str(ML / "ml-100k"), "--max-rows", "3000", "--cycles", "1",
               "--model", "features", "--emb-l2", "1", "--emb-l2-bias", "0.1",
               "--emb-l2-alpha", "0.5", "--wd", "0", "--out", str(tmp_path), "--name", "f",
               "-n", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and (tmp_path / "models" / "f.pt").is_file(), out
    assert "top 2 recommendations for user" in out and "title" in out
    sd = torch.load(tmp_path / "models" / "f.pt", weights_only=True)
    assert sd["item_features"].shape[1] == 19  # ml-100k's genres (incl. "unknown")
    assert sd["item_feat.weight"].abs().sum() > 0  # the genre map trained


def test_offline_default_gets_close_to_the_noise_floor_and_prints_it(tmp_path, capsys):
    """A newcomer's first run: no data, no options; synthetic ratings and their recipe."""
    rc = main(["--out", str(tmp_path), "-n", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    floor = float(re.search(r"noise floor MSE (\d+\.\d+)", out).group(1))
    m = re.search(r"validation MSE (\d+\.\d+), RMSE \d+\.\d+ \(noise floor of this synthetic "
                  r"set: (\d+\.\d+)\)", out)
    assert m, out
    mse = float(m.group(1))
    assert float(m.group(2)) == floor
    assert mse < floor * (1 + MARGIN), out


def test_recipes_fill_only_unset_options():
    args = build_parser().parse_args([])
    apply_recipe(args, RECIPES["real"])  # real data: the lesson's SGDR recipe, unchanged
    assert (args.factors, args.bs, args.lr, args.wd, args.emb_l2, args.schedule, args.cycles,
            args.cycle_len, args.cycle_mult) == (50, 64, 1e-2, 2e-4, None, "sgdr", 2, 1, 2)
    args = build_parser().parse_args(["--bs", "32", "--schedule", "sgdr"])
    apply_recipe(args, RECIPES["synthetic"])
    assert (args.bs, args.schedule) == (32, "sgdr")  # given options win
    assert args.factors == RECIPES["synthetic"]["factors"]
    assert args.emb_l2 == RECIPES["synthetic"]["emb_l2"] and args.cycle_len > 1
    args = build_parser().parse_args(["--emb-l2", "0.3"])
    apply_recipe(args, RECIPES["synthetic"])  # the penalty's options go together
    assert (args.emb_l2, args.emb_l2_bias, args.emb_l2_alpha) == (0.3, None, 0.0)


@pytest.mark.parametrize("args, msg", [
    (["--data", "synthetic", "--model", "features"], "--model features uses the movies' genres"),
    (["--data", "synthetic", "--emb-l2-alpha", "0.5"], "pass emb_l2 too"),
])
def test_cli_features_and_penalty_errors(tmp_path, capsys, args, msg):
    rc = main([*args, "--max-rows", "500", "--cycles", "1", "--out", str(tmp_path),
               "--no-progress"])
    assert rc == 2 and msg in capsys.readouterr().err


def test_cli_unseen_user_gets_baseline_recommendations(tmp_path, capsys):
    f = write_csv(tmp_path)
    rc = main(["--data", str(f), "--user-col", "who", "--item-col", "what", "--rating-col",
               "stars", "--factors", "2", "--cycles", "1", "--out", str(tmp_path),
               "--user", "12345", "-n", "2", "--no-progress"])
    assert rc == 0
    assert "user 12345 (unseen in training: by the baseline" in capsys.readouterr().out


@pytest.mark.parametrize("args, msg", [
    (["--data", "/no/such/file.csv"], "no such file or MovieLens folder"),
    (["--data", "{csv}", "--rating-col", "star"], "not found in mine.csv (columns: ['who', 'what', 'stars']); rating column 'star' not found in mine.csv; did you mean 'stars'"),
    (["--data", "{csv}", "--user-col", "who", "--item-col", "what", "--rating-col", "stars",
      "--factors", "0"], "n_factors must be a positive integer"),
    (["--data", "{csv}", "--user-col", "who", "--item-col", "what", "--rating-col", "stars",
      "--bs", "0"], "bs (batch size) must be a positive integer"),
    (["--data", "ml-latest-small"], "could not download http://127.0.0.1:9/ml-latest-small.zip"),
    (["--data", "ml-nope"], "unknown MovieLens data set 'ml-nope'"),
])
def test_cli_bad_input_is_one_line_error(tmp_path, capsys, args, msg):
    f = write_csv(tmp_path)
    args = [a.replace("{csv}", str(f)) for a in args]
    assert main(args + ["--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minifast-collab: error: ") and msg in err
    assert "Traceback" not in err


def test_module_entry_point_runs(tmp_path):
    r = subprocess.run([sys.executable, "-m", "minifast.collab", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "minifast-collab" in r.stdout and "--data" in r.stdout


@needs_data
def test_lesson5_example_quick(tmp_path):
    spec = importlib.util.spec_from_file_location("lesson5", EXAMPLES / "movielens_lesson5.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(ML / "ml-latest-small-2016", quick=True, verbose=False, plots=tmp_path)
    for k in ("learner", "dot", "dotbias", "net"):
        assert math.isfinite(out[k])
    # The lesson's point: biases and a sigmoid range beat a bare dot product.
    assert out["dotbias"] < out["dot"]
    assert len(out["interpretation"]["best"]) == 10
    assert (tmp_path / "pred_vs_actual.png").is_file() and (tmp_path / "movies_pca.png").is_file()
