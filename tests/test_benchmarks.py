"""Smoke tests of the benchmark scripts (tiny runs, no timings asserted): they must keep
running against the library as it changes. A data-set name that does not exist makes them
use a synthetic problem of ml-latest-small's shape."""

import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    threads = torch.get_num_threads()  # the scripts set their own
    monkeypatch.syspath_prepend(str(BENCH))
    yield
    torch.set_num_threads(threads)
    for name in ("collab_speed", "page_faults", "problem", "scale_25m", "sparse_crossover", "topn"):
        sys.modules.pop(name, None)


def test_collab_speed_prints_the_table_with_page_faults(bench, capsys):
    import collab_speed

    collab_speed.main(["--reps", "1", "--bs", "8192", "--settings", "fused", "--in-process",
                       "--warmup", "0", "--data", "no-such-data"])
    out = capsys.readouterr().out
    assert "synthetic_ratings" in out and "page faults/step" in out
    rows = [line for line in out.splitlines() if line.startswith("| fused | 8192 |")]
    assert [r.split("|")[3].strip() for r in rows] == ["minifast", "lean", "dataloader"]
    lean = next(r for r in rows if "| lean |" in r)
    assert lean.rstrip(" |").endswith("1.000 (1.000-1.000)")
    assert "paired × lean (IQR)" in out


def test_page_faults_runs_each_combination_in_its_own_process(bench, capsys):
    import page_faults

    page_faults.main(["--reps", "1", "--bs", "8192", "--loops", "minifast", "--data",
                      "no-such-data"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| minifast |")]
    assert [tuple(c.strip() for c in r.split("|")[2:4]) for r in rows] == [
        ("default", "glibc"), ("default", "kept"), ("fused", "glibc"), ("fused", "kept")]


def test_scale_25m_small_reports_every_mode(bench, capsys):
    import scale_25m

    assert scale_25m.main(["--scale", "small", "--modes", "dense", "sparse", "coalesce",
                           "--threads", "1", "--surprise"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines()
            if line.startswith("| ") and " M |" in line}
    assert {"dense", "sparse", "coalesce"} <= rows.keys()
    assert "LazyAdam" in out and "CoalesceLazyAdam" in out
    assert "sparse / dense = " in out
    # the row-wise step and the coalescing one compute the same lazy Adam
    mse = {m: float(rows[m].split("|")[5].split()[0]) for m in ("sparse", "coalesce")}
    assert mse["sparse"] == pytest.approx(mse["coalesce"], abs=1e-4)
    assert "surprise SVD" in out  # its row, or "not installed"
    assert "time to validation MSE within a factor of the noise floor" in out and "s to <= 1.10x" in out
    with pytest.raises(SystemExit):
        scale_25m.main(["--scale", "huge"])


def test_sparse_crossover_prints_each_cell_with_the_auto_rule(bench, capsys):
    import sparse_crossover

    sparse_crossover.main(["--quick", "--reps", "2", "--steps", "5"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 671")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].split("|")]
    assert float(cells[6]) > 0 and cells[7] == "False"  # lesson-sized tables stay dense


def test_topn_compares_every_system_on_one_split(bench, capsys):
    import topn

    code = topn.main(["--data", "no-such-data", "--seeds", "2", "--no-anchors"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    labels = [r.split("|")[1].strip() for r in rows[1:]]
    assert len(labels) == 2 and labels[0] == "popularity"
    assert labels[1].startswith("minifast softmax")  # "(ItemSetMF)" when the recipe uses it
    pop, mine = ([float(c) for c in r.split("|")[2:7]] for r in rows[1:])
    assert pop[0] == pop[1]  # one deterministic run: mean == worst
    assert 0 < mine[1] <= mine[0] <= 1 and 0 < mine[3] <= mine[2] <= 1
    assert ("target met" in out) == (code == 0) and "no-such-data:" in out


def test_topn_anchors_score_through_the_same_metric(bench, capsys):
    pytest.importorskip("implicit")
    import topn

    topn.main(["--data", "no-such-data", "--seeds", "1"])
    out = capsys.readouterr().out
    labels = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")]
    assert {"implicit ALS (issue's setting)", "implicit BPR (tuned)"} <= set(labels)


def test_topn_search_never_sees_the_validation_rows(bench, capsys, monkeypatch):
    import topn

    seen_splits = []
    real = topn.Split

    def spy(cf, val):
        sp = real(cf, val)
        seen_splits.append(sp)
        return sp

    monkeypatch.setattr(topn, "Split", spy)
    monkeypatch.setattr(topn, "MINIFAST_GRID", [dict(topn.RECIPES["ml100k"], epochs=1),
                                                dict(topn.RECIPES["ml100k"], epochs=2)])
    assert topn.main(["search", "--data", "no-such-data", "--no-anchors"]) == 0
    out = capsys.readouterr().out
    assert out.count("\nndcg ") == 2 and "best minifast: ndcg" in out
    outer, inner = seen_splits
    # the search trains and scores on the outer training rows only
    assert inner.cf.n == len(outer.trn)
    assert inner.seen.indices.size + inner.heldout.indices.size == len(outer.trn)
