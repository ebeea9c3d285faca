"""``--index-type auto``: the tier rule, exactness of the SQfp16 tier, training on a random sample,
tuning nprobe/efSearch to a target recall, and re-deciding the type as an index grows.

Real FAISS on seeded clustered vectors; every approximate result is checked against exact search.
"""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from frozenlens.errors import IndexInputError
from frozenlens.retriever import AutoPolicy, VectorIndex, recommend_factory
from frozenlens.retriever.choice import factory_for, ivfpq_factory, parse_bytes
from frozenlens.retriever.tuning import build, exact_top_k, measure, recall_at_k, tune

from .test_retriever import _one_faiss_thread, clustered, exact, unit  # noqa: F401 - the autouse fixture


def chunks_of(ids: np.ndarray, x: np.ndarray, size: int = 3000):
    return lambda: ((ids[i : i + size], x[i : i + size]) for i in range(0, len(ids), size))


POLICY = AutoPolicy(1 << 40, target_recall=0.95, queries=100)


def test_tiers_follow_size_and_memory():
    assert recommend_factory(0, 512) == "SQfp16"
    assert recommend_factory(0, 5120) == "SQfp16"
    assert recommend_factory(100_000, 512) == "SQfp16" and recommend_factory(1_000_000, 512) == "HNSW32"
    assert recommend_factory(10_000, 5120) == "SQfp16" and recommend_factory(10_001, 5120) == "HNSW32"
    # 500k x 512 exact needs ~1 GB: a 100 MB budget falls through HNSW to IVF-PQ with the widest codes that fit
    small = AutoPolicy(100 << 20)
    assert recommend_factory(500_000, 512, small) == "OPQ64,IVF2048,PQ64"
    assert recommend_factory(500_000, 512, AutoPolicy(20 << 20)) == "OPQ16,IVF2048,PQ16"
    # forced small tiers (what the integration test uses)
    tiny = AutoPolicy(1 << 30, exact_max=10, hnsw_max=100)
    assert [recommend_factory(n, 64, tiny) for n in (10, 11, 100, 101)] == ["SQfp16", "HNSW32", "HNSW32",
                                                                             "OPQ16,IVF32,PQ16,Refine(SQfp16)"]
    assert factory_for("flat", 10**9, 64) == "Flat"  # the name means Flat; auto's exact tier is SQfp16
    assert factory_for("auto", 10, 64) == "SQfp16"
    assert factory_for("flat", 10**9, 64) == "Flat" and factory_for("hnsw", 0, 64) == "HNSW32"
    assert factory_for("IVF64,SQ8", 0, 64) == "IVF64,SQ8" and factory_for("ivfpq", 0, 64) == ivfpq_factory(10**6, 64)
    for n in (0, 50, 5_000, 2_000_000, 50_000_000):
        VectorIndex.create(64, recommend_factory(n, 64, small))  # every answer is a valid factory
    with pytest.raises(IndexInputError):
        AutoPolicy(1 << 30, exact_max=10, hnsw_max=5)


def test_parse_bytes():
    assert parse_bytes("4GB") == 4 << 30
    assert parse_bytes("512m") == 512 << 20 and parse_bytes("1.5 GiB") == 3 << 29 and parse_bytes("1000") == 1000
    for bad in ("", "lots", "4XB", "0", "-1GB"):
        with pytest.raises(IndexInputError):
            parse_bytes(bad)


def test_sqfp16_is_exact_for_float16_vectors_filtered_remove_reconstruct():
    x = clustered(1, 3000, 640).astype(np.float16).astype(np.float32)  # as the product feeds FAISS
    ids = np.arange(3000, dtype=np.int64) * 3 + 7
    sq, flat = VectorIndex.create(640, "SQfp16"), VectorIndex.create(640, "Flat")
    for vi in (sq, flat):
        vi.add(ids, x)
    q = clustered(2, 20, 640)
    np.testing.assert_array_equal(sq.search(q, 10)[1], flat.search(q, 10)[1])
    np.testing.assert_allclose(sq.search(q, 10)[0], exact(x, ids, q, 10)[0], atol=1e-5)
    np.testing.assert_array_equal(sq.reconstruct(ids[:50]), x[:50])  # lossless
    allowed = ids[::7]
    got = sq.search_filtered(q[0], 10, allowed_ids=allowed)
    np.testing.assert_array_equal(got[1], exact(x[::7], allowed, q[:1], 10)[1][0])
    got = sq.search_filtered(q[0], 10, accept=lambda i: i % 2 == 1)
    odd = ids % 2 == 1
    np.testing.assert_array_equal(got[1], exact(x[odd], ids[odd], q[:1], 10)[1][0])
    assert sq.remove(ids[:1000]) == 1000
    np.testing.assert_array_equal(sq.search(q, 10)[1], exact(x[1000:], ids[1000:], q, 10)[1])


def test_pca_to_more_than_1024_dims_trains():
    vi = VectorIndex.create(1280, "PCA1100,SQ8")
    assert vi.train_threshold == 2560
    x = unit(np.random.default_rng(0).standard_normal((2600, 1280)).astype(np.float32))
    vi.add(np.arange(2600), x)
    assert vi.is_trained and len(vi) == 2600


def test_build_trains_ivf_on_a_random_sample_not_the_first_vectors():
    # the first 12k vectors sit in one region, the last 12k in another: training on the first ones
    # would put every centroid in the first region
    a, b = clustered(3, 12_000, 32, centres=4), -clustered(4, 12_000, 32, centres=4)
    x = np.concatenate([a, b])
    ids = np.arange(len(x), dtype=np.int64)
    vi = build("IVF64,Flat", 32, chunks_of(ids, x))
    assert vi.is_trained and vi.train_threshold < len(x)
    centroids = faiss.extract_index_ivf(vi._main.index).quantizer.reconstruct_n(0, 64)
    near_b = (centroids @ b[:3000].T).max(axis=1) > (centroids @ a[:3000].T).max(axis=1)
    assert 12 <= near_b.sum() <= 52  # about half; training on the first 12k would give none


@pytest.mark.parametrize("factory, knob", [("IVF256,Flat", "nprobe"), ("HNSW32", "ef_search")])
def test_tune_picks_the_smallest_value_reaching_the_target(factory, knob):
    x = clustered(5, 20_000, 32, centres=200, noise=2.0)
    ids = np.arange(len(x), dtype=np.int64) + 100
    chunks = chunks_of(ids, x)
    vi = build(factory, 32, chunks)
    t = tune(vi, chunks, POLICY)
    assert t.knob == knob and t.reached and t.recall >= 0.95 and getattr(vi, knob) == t.value
    # smallest: the next smaller candidate misses the target on the same queries
    again = measure(vi, chunks, POLICY, seed=0)
    assert again.recall == pytest.approx(t.recall)
    if t.value > (1 if knob == "nprobe" else 16):
        setattr(vi, knob, t.value // 2)
        assert measure(vi, chunks, POLICY, seed=0).recall_low < 0.95  # the rule tune() applies
    # an independent check of the recall figure against brute force
    setattr(vi, knob, t.value)
    q = clustered(6, 50, 32, centres=200, noise=2.0)
    assert recall_at_k(vi.search(q, 10)[1], exact(x, ids, q, 10)[1]) >= 0.85


def test_unreachable_target_keeps_the_best_value_and_says_so(caplog):
    x = clustered(7, 12_000, 16, centres=100)
    ids = np.arange(len(x), dtype=np.int64)
    chunks = chunks_of(ids, x)
    vi = build("OPQ4,IVF16,PQ4x4", 16, chunks)  # 2 bytes per vector: far from exact
    t = tune(vi, chunks, AutoPolicy(1 << 30, target_recall=1.0, queries=50))
    assert not t.reached and t.recall < 1.0 and t.value == vi.nprobe
    assert "misses the target" in caplog.text


def test_exact_top_k_over_chunks_matches_brute_force():
    x = clustered(8, 5000, 24)
    ids = np.random.default_rng(0).permutation(10_000)[:5000].astype(np.int64)
    q = clustered(9, 30, 24)
    np.testing.assert_array_equal(exact_top_k(q, chunks_of(ids, x, 700), 10), exact(x, ids, q, 10)[1])


def test_tuned_values_survive_save_and_load(tmp_path):
    x = clustered(10, 20_000, 32, centres=200, noise=2.0)
    ids = np.arange(len(x), dtype=np.int64)
    chunks = chunks_of(ids, x)
    vi = build("IVF256,Flat", 32, chunks)
    t = tune(vi, chunks, POLICY)
    vi.save(tmp_path / "v.faiss")
    back = VectorIndex.load(tmp_path / "v.faiss")
    assert back.nprobe == t.value and back.factory == "IVF256,Flat"
    assert measure(back, chunks, POLICY, seed=0).recall == pytest.approx(t.recall)


@pytest.mark.parametrize("factory", ["IVF64,Flat", "OPQ8,IVF64,PQ8", "IVF64,PQ8,Refine(SQfp16)"])
def test_sharded_and_merged_build_equals_one_go(factory):
    x = clustered(11, 12_000, 32, centres=100).astype(np.float16).astype(np.float32)
    ids = np.random.default_rng(1).permutation(50_000)[:12_000].astype(np.int64)
    chunks = chunks_of(ids, x, 1000)
    whole = build(factory, 32, chunks)
    sharded = build(factory, 32, chunks, shard=3500)  # shards of 4000, the last one partial
    assert len(sharded) == len(whole) == 12_000
    np.testing.assert_array_equal(sharded.ids(), np.sort(ids))
    q = clustered(12, 40, 32, centres=100)
    for vi in (whole, sharded):
        vi.nprobe = 8
    s1, i1 = whole.search(q, 10)
    s2, i2 = sharded.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=1e-5, atol=1e-6)
    # the merged index still reconstructs, removes and filters by id (its direct map was rebuilt)
    np.testing.assert_allclose(sharded.reconstruct(ids[:5]), whole.reconstruct(ids[:5]), atol=1e-6)
    assert sharded.remove(ids[:100]) == 100 and len(sharded) == 11_900
    assert not np.isin(sharded.search(q, 10)[1], ids[:100]).any()
    allowed = ids[100:2000]
    got = sharded.search_filtered(q[0], 5, allowed_ids=allowed)[1]
    assert np.isin(got, allowed).all() and len(got) == 5


def test_merge_refuses_overlapping_ids_and_non_ivf():
    x = clustered(13, 3000, 16)
    ids = np.arange(3000, dtype=np.int64)
    vi = build("IVF16,Flat", 16, chunks_of(ids, x))
    shard = vi.empty_like()
    shard.add(ids[:10], x[:10])
    with pytest.raises(IndexInputError):
        vi.merge(shard)
    with pytest.raises(IndexInputError):
        VectorIndex.create(16, "Flat").empty_like()
