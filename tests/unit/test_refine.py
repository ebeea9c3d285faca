"""IVF-PQ with exact re-ranking (``,Refine(SQfp16)``): the tuner reaches a recall target that PQ codes
alone cannot, with ``nprobe`` and ``k_factor`` recorded; results are re-scored exactly and survive
save/load, removal, filtering and sharded builds.

Real FAISS on seeded clustered float16-valued vectors (as the product feeds FAISS); every figure is
checked against brute force.
"""

from __future__ import annotations

import numpy as np
import pytest

from frozenlens.errors import IndexInputError
from frozenlens.retriever import AutoPolicy, VectorIndex
from frozenlens.retriever.choice import REFINE, bytes_per_vector, ivfpq_factory
from frozenlens.retriever.tuning import K_FACTORS, build, measure, recall_at_k, tune

from .test_index_auto import chunks_of
from .test_retriever import _one_faiss_thread, clustered, exact  # noqa: F401 - the autouse fixture

PQ = "IVF64,PQ4"
REFINED = PQ + REFINE
POLICY = AutoPolicy(1 << 40, target_recall=0.95, queries=100)


@pytest.fixture(scope="module")
def data():
    x = clustered(21, 12_000, 32, centres=150, noise=2.0).astype(np.float16).astype(np.float32)
    ids = np.random.default_rng(2).permutation(40_000)[:12_000].astype(np.int64)
    return ids, x


def test_refine_reaches_the_target_pq_alone_cannot(data):
    ids, x = data
    chunks = chunks_of(ids, x)
    plain, refined = build(PQ, 32, chunks), build(REFINED, 32, chunks)
    assert plain.k_factor is None and refined.k_factor is not None
    t_plain = tune(plain, chunks, POLICY)
    t = tune(refined, chunks, POLICY)
    assert not t_plain.reached and t_plain.recall < 0.8  # 4-byte codes: far from exact
    assert t.reached and t.recall >= 0.95 and t.knob == "nprobe"
    assert (refined.nprobe, refined.k_factor) == (t.value, t.k_factor) and t.k_factor in K_FACTORS
    assert t.to_json()["k_factor"] == t.k_factor
    # the smallest k_factor at that nprobe: the next smaller one misses on the same queries
    assert measure(refined, chunks, POLICY, seed=0).recall == pytest.approx(t.recall)
    if t.k_factor > 1:
        refined.k_factor = t.k_factor // 2
        assert measure(refined, chunks, POLICY, seed=0).recall < 0.95
        refined.k_factor = t.k_factor
    # independent check against brute force, and the scores are exact (not PQ estimates)
    q = clustered(22, 60, 32, centres=150, noise=2.0)
    scores, found = refined.search(q, 10)
    assert recall_at_k(found, exact(x, ids, q, 10)[1]) >= 0.9
    rows = np.searchsorted(np.sort(ids), found)
    by_id = x[np.argsort(ids)]
    np.testing.assert_allclose(scores, np.einsum("mkd,md->mk", by_id[rows], q), atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-7)  # best first


def test_refined_index_saves_loads_removes_filters(data, tmp_path):
    ids, x = data
    chunks = chunks_of(ids, x)
    vi = build(REFINED, 32, chunks)
    vi.nprobe, vi.k_factor = 16, 8
    q = clustered(23, 20, 32, centres=150, noise=2.0)
    vi.save(tmp_path / "r.faiss")
    back = VectorIndex.load(tmp_path / "r.faiss")
    assert (back.factory, back.nprobe, back.k_factor, len(back)) == (REFINED, 16, 8, 12_000)
    np.testing.assert_array_equal(back.search(q, 10)[1], vi.search(q, 10)[1])
    np.testing.assert_array_equal(back.reconstruct(ids[:20]), x[:20])  # lossless from the refinement codes
    # a small allowed set is answered exactly
    allowed = np.sort(ids[::50])
    keep = np.isin(ids, allowed)
    got = back.search_filtered(q[0], 10, allowed_ids=allowed)
    np.testing.assert_array_equal(got[1], exact(x[keep], ids[keep], q[:1], 10)[1][0])
    got = back.search_filtered(q[0], 10, accept=lambda a: a % 2 == 0)
    assert len(got[1]) == 10 and np.all(got[1] % 2 == 0)
    # removal reaches both the IVF lists and the refinement codes
    assert back.remove(ids[:3000]) == 3000 and len(back) == 9000
    assert not np.isin(back.search(q, 50)[1], ids[:3000]).any()
    with pytest.raises(Exception, match="not in the vector index"):
        back.reconstruct(ids[:1])
    np.testing.assert_array_equal(back.reconstruct(ids[3000:3005]), x[3000:3005])
    back.add(ids[:10], x[:10])
    assert np.isin(ids[:10], back.ids()).all()


def test_sharded_refined_build_equals_one_go(data):
    ids, x = data
    chunks = chunks_of(ids, x, 1000)
    whole, sharded = build(REFINED, 32, chunks), build(REFINED, 32, chunks, shard=3500)
    np.testing.assert_array_equal(sharded.ids(), np.sort(ids))
    q = clustered(24, 40, 32, centres=150, noise=2.0)
    for vi in (whole, sharded):
        vi.nprobe, vi.k_factor = 8, 4
    s1, i1 = whole.search(q, 10)
    s2, i2 = sharded.search(q, 10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)


def test_k_factor_only_on_refined_indexes():
    with pytest.raises(IndexInputError):
        VectorIndex.create(16, "IVF16,PQ4").k_factor = 4
    assert VectorIndex.create(16, "IVF16,PQ4").k_factor is None


def test_compressed_tier_re_ranks_when_the_codes_fit():
    # 20M x 512 beyond HNSW's tier: PQ64 + float16 re-ranking codes need ~23 GB
    n = 20_000_000
    assert ivfpq_factory(n, 512) == "OPQ64,IVF16384,PQ64" + REFINE
    assert ivfpq_factory(n, 512, n * bytes_per_vector("ivfpq-refine", 512, 64)) == "OPQ64,IVF16384,PQ64" + REFINE
    # just below: the widest PQ whose re-ranked codes fit
    assert ivfpq_factory(n, 512, n * bytes_per_vector("ivfpq-refine", 512, 64) - 1) == "OPQ32,IVF16384,PQ32" + REFINE
    # no room for re-ranking codes at all: PQ codes only, as wide as fit
    assert ivfpq_factory(n, 512, n * 80) == "OPQ64,IVF16384,PQ64"
