import numpy as np
import pytest

from minifast.collab.synthetic import _rating_moments, synthetic_ratings


def test_shape_ids_and_values():
    df, floor = synthetic_ratings(200, 300, 5000, rank=5, seed=1)
    assert list(df.columns) == ["userId", "movieId", "rating"] and len(df) == 5000
    assert df.userId.between(1, 200).all() and df.movieId.between(1, 300).all()
    assert set(np.unique(df.rating)) <= set(np.arange(0.5, 5.01, 0.5))
    assert not df.duplicated(["userId", "movieId"]).any()
    assert 0 < floor < 0.8**2 + 1 / 48
    df2, floor2 = synthetic_ratings(200, 300, 5000, rank=5, seed=1)
    assert df.equals(df2) and floor == floor2
    assert not df.equals(synthetic_ratings(200, 300, 5000, rank=5, seed=2)[0])


def test_popularity_is_skewed():
    df, _ = synthetic_ratings(500, 1000, 20000, seed=0, alpha=1.0)
    counts = np.sort(df.movieId.value_counts().to_numpy())[::-1]
    assert counts[:100].sum() > 0.4 * len(df)  # top 10% of items hold most ratings


def test_noise_floor_is_the_bayes_mse():
    rng = np.random.default_rng(0)
    mean = rng.uniform(0, 5.5, 50)
    e, var = _rating_moments(mean, 0.7)
    draws = np.clip(np.round((mean[:, None] + 0.7 * rng.standard_normal((50, 40000))) * 2) / 2, 0.5, 5)
    np.testing.assert_allclose(draws.mean(1), e, atol=0.02)
    np.testing.assert_allclose(draws.var(1), var, atol=0.03)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_users must be positive"):
        synthetic_ratings(0, 10, 10)
    with pytest.raises(ValueError, match="exceeds"):
        synthetic_ratings(3, 3, 10)
    with pytest.raises(ValueError, match="noise"):
        synthetic_ratings(3, 3, 5, noise=0)
