"""RatingBlend: the least-squares weights, predictions in any member order, clipping, the
errors for bad input, and member_predictions on real learners (fallback for unknown ids)."""

import numpy as np
import pytest
from conftest import grid_cf

from minifast.collab import (
    RatingBlend,
    UnknownIdError,
    autorec_learner,
    member_predictions,
)


def test_fit_recovers_exact_weights():
    rng = np.random.RandomState(0)
    a, b = rng.uniform(1, 5, 200), rng.uniform(1, 5, 200)
    blend = RatingBlend.fit({"a": a, "b": b}, 0.5 + 0.3 * a + 0.6 * b)
    assert blend.names == ("a", "b")
    np.testing.assert_allclose(blend.weights, [0.3, 0.6], atol=1e-10)
    assert isinstance(blend.weights, tuple)
    assert blend.intercept == pytest.approx(0.5, abs=1e-9)


def test_blend_of_independent_errors_beats_each_member():
    rng = np.random.RandomState(1)
    y = rng.uniform(1, 5, 5000)
    noisy = {k: y + rng.normal(0, s, len(y)) for k, s in (("a", 0.9), ("b", 1.0))}
    blend = RatingBlend.fit(noisy, y)
    err = {k: np.sqrt(np.mean((v - y) ** 2)) for k, v in noisy.items()}
    assert np.sqrt(np.mean((blend.predict(noisy) - y) ** 2)) < 0.8 * min(err.values())


def test_predict_takes_members_in_any_order_and_clips():
    rng = np.random.RandomState(2)
    a, b = rng.uniform(1, 5, 50), rng.uniform(1, 5, 50)
    blend = RatingBlend.fit({"a": a, "b": b}, 2 * a - b, y_range=(1, 5))
    out = blend.predict({"b": b, "a": a})
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, np.clip(2 * a - b, 1, 5), atol=1e-5)
    assert out.min() >= 1 and out.max() <= 5


@pytest.mark.parametrize("preds, match", [
    ({"a": np.ones(5)}, "missing \\['b'\\] and have extra \\[\\]"),
    ({"a": np.ones(5), "b": np.ones(5), "c": np.ones(5)}, "extra \\['c'\\]"),
    ({"a": np.ones(5), "b": np.ones(4)}, "'b' have 4 values, the others 5"),
    ({"a": np.ones((5, 1)), "b": np.ones(5)}, "'a' must be 1-D"),
    ({"a": np.ones(5), "b": np.r_[1.0, np.nan, 1, 1, 1]}, "'b' are not finite \\(position 1"),
    ({}, "non-empty mapping"),
])
def test_predict_names_what_is_wrong(preds, match):
    blend = RatingBlend(("a", "b"), [0.5, 0.5], 0.0)
    with pytest.raises(ValueError, match=match):
        blend.predict(preds)


def test_fit_refuses_bad_ratings_and_too_few():
    a = np.arange(10.0)
    with pytest.raises(ValueError, match="ratings has 9 values, the predictions 10"):
        RatingBlend.fit({"a": a}, a[:9])
    with pytest.raises(ValueError, match="ratings must be finite"):
        RatingBlend.fit({"a": a}, np.r_[a[:9], np.inf])
    with pytest.raises(ValueError, match="needs more than 3 ratings, got 3"):
        RatingBlend.fit({"a": a[:3], "b": a[:3]}, a[:3])
    with pytest.raises(ValueError, match="y_range must be"):
        RatingBlend.fit({"a": a}, a, y_range=(5, 1))
    with pytest.raises(ValueError, match="non-empty mapping"):
        RatingBlend.fit([a], a)


def _two_learners(tmp_path):
    """`(cf, df, val, mf, ae)`: a factorisation model and an AutoRec, one epoch each on
    `grid_cf`, every 7th rating held out."""
    cf, df = grid_cf(tmp_path)
    val = np.arange(0, len(df), 7)
    mf = cf.get_learner(4, val, 32, seed=0)
    mf.fit(1e-2, 1, verbose=False, progress=False)
    ae = autorec_learner(cf, val, 8, n_hid=6, seed=0)
    ae.fit(1e-2, 1, verbose=False, progress=False)
    return cf, df, val, mf, ae


def test_member_predictions_of_real_learners(tmp_path):
    cf, df, val, mf, ae = _two_learners(tmp_path)
    users, items = np.r_[df.u.to_numpy()[val], 999], np.r_[df.i.to_numpy()[val], 500]
    preds = member_predictions({"mf": mf, "ae": ae}, users, items)
    assert list(preds) == ["mf", "ae"]
    np.testing.assert_allclose(preds["mf"], mf.predict_ratings(users, items, fallback=True))
    np.testing.assert_allclose(preds["ae"], ae.predict_ratings(users, items, fallback=True))
    assert np.isfinite(preds["ae"]).all()  # user 999 is unknown: the fallback, no error
    held = {k: v[:-1] for k, v in preds.items()}
    blend = RatingBlend.fit(held, df.r.to_numpy()[val], y_range=(1, 5))
    assert blend.predict(held).shape == (len(val),)


def test_member_predictions_refuses_what_cannot_predict(tmp_path):
    with pytest.raises(TypeError, match="learner 'x' \\(object\\) has no predict_ratings"):
        member_predictions({"x": object()}, [1], [2])
    with pytest.raises(ValueError, match="non-empty mapping"):
        member_predictions({}, [1], [2])


def test_member_predictions_without_fallback_names_the_unknown_id(tmp_path):
    cf, df = grid_cf(tmp_path)
    mf = cf.get_learner(4, np.arange(0, len(df), 7), 32, seed=0)
    with pytest.raises(UnknownIdError, match="999"):
        member_predictions({"mf": mf}, [999], [500], fallback=False)


def test_a_blend_made_by_hand_is_checked():
    with pytest.raises(ValueError, match="one number per member \\(2: \\['a', 'b'\\]\\)"):
        RatingBlend(("a", "b"), [1.0], 0.0)
    with pytest.raises(ValueError, match="y_range must be"):
        RatingBlend(("a",), [1.0], 0.0, y_range=(1, 1))


def test_blends_compare_by_value():
    a = np.arange(10.0)
    one, two = (RatingBlend.fit({"a": a}, 2 * a + 1) for _ in range(2))
    assert one == two and one != RatingBlend(("a",), [2.0], 0.5)
    assert one.weights == pytest.approx((2.0,)) and "RatingBlend(names=('a',)" in repr(one)


def test_predict_matrix_is_the_blend_of_every_pair(tmp_path):
    cf, _, _, mf, ae = _two_learners(tmp_path)
    blend = RatingBlend(("ae", "mf"), [0.7, 0.4], -0.2, y_range=(1, 5))
    out = blend.predict_matrix({"mf": mf, "ae": ae, "unused": object()}, cf, items_per_chunk=5)
    assert out.shape == (cf.n_items, cf.n_users) and out.dtype == np.float32
    uu, ii = np.meshgrid(cf.idx2user, cf.idx2item)
    each = member_predictions({"mf": mf, "ae": ae}, uu.ravel(), ii.ravel())
    np.testing.assert_allclose(out, blend.predict(each).reshape(out.shape), rtol=1e-6)
    with pytest.raises(ValueError, match="lacks the blend's member\\(s\\) \\['mf'\\]"):
        blend.predict_matrix({"ae": ae}, cf)
    with pytest.raises(ValueError, match="items_per_chunk"):
        blend.predict_matrix({"mf": mf, "ae": ae}, cf, items_per_chunk=0)
