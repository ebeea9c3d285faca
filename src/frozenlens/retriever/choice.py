"""Which FAISS index type for a collection: the one owner of the tier rule and of the index-type names.

:func:`recommend_factory` picks a factory string from the collection size ``n``,
the dimension and a memory budget, in three tiers (rules learnt from
autofaiss's ``get_optimal_index_keys_v2``: exact while it fits and is fast
enough, a graph next, compressed IVF last; its numbers are re-derived here):

* **exact** (``n <= exact_max`` and the codes fit the budget):
  ``"SQfp16"``. The product feeds FAISS the float16 vectors its database
  stores, so ``SQfp16`` is lossless for them (recall exactly Flat's) at half
  the bytes, and faster one query at a time: 0.61-0.70x Flat's query time at
  n >= 20k for H = 640 ... 5120 (docs/benchmarks.md, "Wide vectors") and
  1.9x / 2.4x Flat's batch-1 QPS at 100k / 1M x 512 ("Index types"). Batches
  of 256 are faster on Flat (BLAS), but searches come one query at a time.
  ``exact_max`` defaults to ``EXACT_WORK // dim`` (100k vectors at 512-d):
  one query over 100k x 512 takes ~9 ms on one core with Flat, ~5 ms with
  SQfp16 (the 10 ms target of issue 14, with a margin for these noisy
  machines), and exact time grows with n * d (1M x 512: 127 / 54 ms).
* **graph** (``n <= hnsw_max``, default 10M, and ``4*d + 8 + 2*M*4`` bytes
  per vector fit): ``"HNSW32"``; ``efSearch`` is tuned to a target recall
  (100k x 512: efSearch 64 for recall@10 0.96 at ~0.2 ms per query).
* **compressed** (otherwise): ``"OPQ{m},IVF{nlist},PQ{m},Refine(SQfp16)"``
  with nlist the power of two nearest ``4*sqrt(n)`` (clamped to [16, 2**18])
  and m the largest divisor of dim not above ``min(64, dim // 4)`` whose
  codes fit the budget (m + 16 bytes per vector for the id and its hashtable
  entry, plus ``2*d + 40`` for the exact re-ranking codes and their id map).
  PQ codes alone cap recall: measured at 100k x 512 on embedding-shaped
  data, PQ64 reaches recall@10 0.66 at most, even at nprobe = nlist. The
  ``Refine(SQfp16)`` suffix re-scores the ``k * k_factor`` best PQ
  candidates exactly (:mod:`._refine`), and ``nprobe`` and ``k_factor`` are
  tuned to the target recall. When even the smallest re-ranked codes do not
  fit the budget, the factory has no suffix (PQ codes only, the widest that
  fit); the tuner then keeps the best nprobe and reports a missed target.
* **compressed, lists on disk** (even ``MIN_RAM_CODE`` = 8-byte PQ codes in
  RAM exceed the budget): the inverted lists (codes and ids) go to a
  memory-mapped file (:mod:`._ondisk`), so the codes are the widest (m as
  above without a budget) and only the direct map and id array (~64 bytes per
  vector measured) and, when ``2*d + 104`` bytes per vector fit, the exact
  re-ranking codes stay in RAM (:func:`lists_on_disk`). ``--index-type ivfpq-ondisk`` asks for it.

The names a user may give (``--index-type``) are :data:`INDEX_TYPES`; anything
else is taken as a FAISS factory string.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from frozenlens.errors import IndexInputError

AUTO = "auto"
#: user-facing index-type names -> what they mean (``auto`` re-decides as the collection grows)
INDEX_TYPES = {
    AUTO: "exact, HNSW or OPQ+IVF-PQ by collection size and memory budget, re-decided as it grows",
    "flat": "exact brute force (Flat)",
    "hnsw": "HNSW32 graph",
    "ivfpq": "OPQ + IVF + PQ with exact re-ranking, sized for the collection at creation",
    "ivfpq-ondisk": "as ivfpq, with the inverted lists in a memory-mapped file (indexes larger than RAM)",
}
#: the narrowest PQ codes (bytes per vector) ``auto`` keeps in RAM; below, the lists go to disk
MIN_RAM_CODE = 8
#: FAISS factory suffix of exact re-ranking of an IVF-PQ shortlist
REFINE = ",Refine(SQfp16)"
#: n * dim of the largest exact index: ~10 ms per query on one core (module doc)
EXACT_WORK = 100_000 * 512
HNSW_MAX = 10_000_000
HNSW_M = 32
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"4GB"``, ``"512m"``, ``"1.5 GiB"``, ``"1000000"`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*?)(?:i?[bB])?\s*", str(text))
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in _UNITS:
        raise IndexInputError(f"not a memory size: {text!r} (e.g. 4GB, 512MB)")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise IndexInputError(f"memory size must be positive, got {text!r}")
    return value


def default_memory_budget() -> int:
    """Half the machine's physical RAM (4 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30


@dataclass(frozen=True)
class AutoPolicy:
    """How ``auto`` decides and tunes: a memory budget in bytes, the recall@``k`` to reach, tier sizes."""

    memory_budget: int
    target_recall: float = 0.95
    #: largest exact collection; None: ``EXACT_WORK // dim``
    exact_max: int | None = None
    hnsw_max: int = HNSW_MAX
    k: int = 10
    #: held-out queries for tuning and for measuring recall
    queries: int = 256

    def __post_init__(self) -> None:
        if self.memory_budget < 1 or not 0 < self.target_recall <= 1 or self.k < 1 or self.queries < 1:
            raise IndexInputError(f"invalid auto-index policy {self}")
        if self.exact_max is not None and not 0 <= self.exact_max <= self.hnsw_max:
            raise IndexInputError(f"need 0 <= exact_max <= hnsw_max, got {self.exact_max}, {self.hnsw_max}")

    @classmethod
    def default(cls) -> AutoPolicy:
        return cls(default_memory_budget())

    def to_json(self) -> dict[str, float | int | None]:
        return {"memory_budget": self.memory_budget, "target_recall": self.target_recall,
                "exact_max": self.exact_max, "hnsw_max": self.hnsw_max, "k": self.k, "queries": self.queries}

    @classmethod
    def from_json(cls, data: dict[str, float | int | None]) -> AutoPolicy:
        return cls(int(data["memory_budget"]), float(data.get("target_recall", 0.95)),
                   None if data.get("exact_max") is None else int(data["exact_max"]),
                   int(data.get("hnsw_max", HNSW_MAX)),
                   int(data.get("k", 10)), int(data.get("queries", 256)))


def bytes_per_vector(tier: str, dim: int, m: int = 0) -> int:
    """Approximate RAM per vector of a tier (codes + id + structure); tiers
    ``exact``, ``hnsw``, ``ivfpq`` (PQ codes only), ``ivfpq-refine`` and, with the
    inverted lists on disk, ``ondisk`` and ``ondisk-refine``."""
    if tier == "exact":
        return 2 * dim + 8
    if tier == "hnsw":
        return 4 * dim + 8 + 2 * HNSW_M * 4
    if tier.startswith("ondisk"):
        # the direct map's hashtable entry and the sorted id array: 64 MiB anonymous memory measured at
        # 1 M (docs/benchmarks.md, "On-disk inverted lists"); + the refinement codes and their id map
        return 64 + (2 * dim + 40 if tier == "ondisk-refine" else 0)
    codes = m + 16  # PQ codes, the id in the inverted list, its hashtable entry
    if tier == "ivfpq-refine":
        return codes + 2 * dim + 40  # + float16 codes, their id and id-map entry
    return codes


def exact_factory(dim: int) -> str:
    """The exact tier's factory (any ``dim``: see the module doc)."""
    return "SQfp16"


def ivfpq_factory(n: int, dim: int, memory_budget: int | None = None, *, on_disk: bool = False) -> str:
    """``"OPQ{m},IVF{nlist},PQ{m}"`` plus :data:`REFINE` when it fits, for ``n`` vectors (see module doc);
    ``on_disk``: for inverted lists on disk (only the RAM parts count)."""
    nlist = min(1 << 18, max(16, 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))))
    cap = max(1, min(64, dim // 4))
    divisors = [d for d in range(cap, 0, -1) if dim % d == 0]
    if on_disk:
        refine = memory_budget is None or n * bytes_per_vector("ondisk-refine", dim) <= memory_budget
        return f"OPQ{divisors[0]},IVF{nlist},PQ{divisors[0]}" + (REFINE if refine else "")
    for tier, suffix in (("ivfpq-refine", REFINE), ("ivfpq", "")):
        for d in divisors:
            if memory_budget is None or n * bytes_per_vector(tier, dim, d) <= memory_budget:
                return f"OPQ{d},IVF{nlist},PQ{d}{suffix}"
    m = divisors[-1]
    return f"OPQ{m},IVF{nlist},PQ{m}"


def recommend_factory(n: int, dim: int, policy: AutoPolicy | None = None) -> str:
    """A factory string for ``n`` vectors of dimension ``dim`` under ``policy`` (see module doc).

    Without a policy there is no memory limit and the default tier sizes apply.
    """
    if n < 0 or dim < 1:
        raise IndexInputError(f"need n >= 0 and dim >= 1, got n={n}, dim={dim}")
    budget = math.inf if policy is None else policy.memory_budget
    exact_max = EXACT_WORK // dim if policy is None or policy.exact_max is None else policy.exact_max
    hnsw_max = HNSW_MAX if policy is None else policy.hnsw_max
    if n <= exact_max and n * bytes_per_vector("exact", dim) <= budget:
        return exact_factory(dim)
    if n <= hnsw_max and n * bytes_per_vector("hnsw", dim) <= budget:
        return f"HNSW{HNSW_M}"
    if policy is None:
        return ivfpq_factory(n, dim)
    return ivfpq_factory(n, dim, policy.memory_budget, on_disk=lists_on_disk(AUTO, n, dim, policy))


def lists_on_disk(index_type: str, n: int, dim: int, policy: AutoPolicy | None = None) -> bool:
    """Whether an index of ``index_type`` keeps its IVF inverted lists on disk at ``n`` vectors:
    ``ivfpq-ondisk`` always; ``auto`` when even :data:`MIN_RAM_CODE`-byte codes in RAM exceed the budget."""
    name = index_type.strip()
    if name == "ivfpq-ondisk":
        return True
    narrowest = min(MIN_RAM_CODE, max(1, min(64, dim // 4)))
    return name == AUTO and policy is not None and n * bytes_per_vector("ivfpq", dim, narrowest) > policy.memory_budget


def factory_for(index_type: str, n: int, dim: int, policy: AutoPolicy | None = None) -> str:
    """The factory string an ``--index-type`` value means for ``n`` vectors now
    (a name of :data:`INDEX_TYPES`, else a FAISS factory string taken as given)."""
    name = index_type.strip()
    if name == AUTO:
        return recommend_factory(n, dim, policy)
    if name == "flat":
        return "Flat"
    if name == "hnsw":
        return f"HNSW{HNSW_M}"
    if name in ("ivfpq", "ivfpq-ondisk"):
        return ivfpq_factory(max(n, 1_000_000), dim, None if policy is None else policy.memory_budget,
                             on_disk=name == "ivfpq-ondisk")
    return name
