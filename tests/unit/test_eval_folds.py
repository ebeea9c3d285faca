"""Cross-validation folds, hold-out parts and the intervals of bench/rerank_cv.py."""

from __future__ import annotations

import numpy as np
import pytest

from frozenlens.errors import EvalError
from frozenlens.eval.folds import hash_unit, holdout, kfold
from frozenlens.eval.intervals import cluster_bootstrap, macro_mean, t975, t_interval

STAMPS = [f"images/things/stamp-{i:03d}.png" for i in range(785)]


def test_kfold_is_a_partition_of_equal_folds() -> None:
    folds = kfold(STAMPS, 5, seed=15)
    assert folds.shape == (785,)
    assert set(folds.tolist()) == {0, 1, 2, 3, 4}  # every stamp in exactly one fold 0..4
    assert sorted(np.bincount(folds).tolist()) == [157] * 5
    tests = [{s for s, f in zip(STAMPS, folds, strict=True) if f == k} for k in range(5)]
    assert set().union(*tests) == set(STAMPS)
    assert all(not (tests[a] & tests[b]) for a in range(5) for b in range(a + 1, 5))


def test_kfold_is_deterministic_and_depends_on_seed_and_keys_only() -> None:
    a = kfold(STAMPS, 5, seed=15)
    assert np.array_equal(a, kfold(list(STAMPS), 5, seed=15))
    assert not np.array_equal(a, kfold(STAMPS, 5, seed=16))
    # the order the keys come in does not matter: a stamp keeps its fold
    shuffled = list(reversed(STAMPS))
    b = dict(zip(shuffled, kfold(shuffled, 5, seed=15), strict=True))
    assert all(b[s] == f for s, f in zip(STAMPS, a, strict=True))
    # not the listing order: the first 157 stamps are spread over all folds
    assert len(set(a[:157].tolist())) == 5


def test_kfold_refuses_bad_input() -> None:
    with pytest.raises(EvalError):
        kfold(STAMPS, 1, seed=0)
    with pytest.raises(EvalError):
        kfold(["a", "b", "a"], 2, seed=0)
    with pytest.raises(EvalError):
        kfold(["a", "b"], 3, seed=0)


def test_holdout_fraction_is_stable_and_matches_split_by_image() -> None:
    from frozenlens.reranker.data import split_by_image

    part = holdout(STAMPS, 0.1, seed=1015)
    assert 50 <= part.sum() <= 110  # about 78
    assert np.array_equal(part, holdout(STAMPS, 0.1, seed=1015))
    # stable as the collection grows: old keys keep their side
    assert np.array_equal(holdout([*STAMPS, "new.png"], 0.1, seed=1015)[:-1], part)
    # split_by_image's values from before it used holdout (BLAKE2b of "seed:id")
    assert np.flatnonzero(split_by_image(range(20), 0.3, seed=0)).tolist() == [1, 2, 4, 6, 10, 15]
    assert 0.0 <= hash_unit("x", 3) < 1.0 and hash_unit("x", 3) != hash_unit("x", 4)
    with pytest.raises(EvalError):
        holdout(STAMPS, 1.0, seed=0)


def test_t_interval_against_the_t_table() -> None:
    assert t975(4) == pytest.approx(2.776)
    assert t975(40) == pytest.approx(2.021, abs=1e-3)
    assert t975(120) == pytest.approx(1.980, abs=1e-3)
    m, lo, hi = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776 * np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5)
    assert (m, lo, hi) == pytest.approx((3.0, 3.0 - half, 3.0 + half))
    with pytest.raises(EvalError):
        t_interval([1.0])


def test_cluster_bootstrap_resamples_whole_clusters() -> None:
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(100), 4)
    groups = np.tile(np.array(["de", "en", "fr", "ja"]), 100)
    # every query of a cluster has the same value: resampling clusters must see 100 units, not 400
    per_cluster = rng.normal(1.0, 1.0, 100)
    values = per_cluster[clusters]
    est, lo, hi = cluster_bootstrap(values, clusters, groups, replicates=4000, seed=1)
    assert est == pytest.approx(per_cluster.mean())
    se = per_cluster.std(ddof=1) / np.sqrt(100)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    # constant values: a zero-width interval at the value
    assert cluster_bootstrap(np.full(400, 0.5), clusters, groups, replicates=200) == pytest.approx((0.5, 0.5, 0.5))


def test_macro_mean_averages_groups_not_queries() -> None:
    values = np.array([1.0, 1.0, 1.0, 0.0])
    groups = np.array(["a", "a", "a", "b"])
    assert macro_mean(values, np.arange(4), groups) == pytest.approx(0.5)
