"""Which FAISS index to use for how many vectors, and the few operations whose details depend on it.

Policy: exact ``IndexIDMap2(IndexFlatIP)`` up to ``settings.ann_threshold`` vectors, an inverted-file
index (``IndexIVFFlat``, inner product, ~4·√n lists) past it. Measured with ``bench/retrieve.py`` on
clustered 384-d data (see its docstring): at 1M vectors IVF answers in ≈1.5 ms on one core with
recall@10 ≈ 0.995; against HNSW (M=32) at 100k it matched recall and latency while building 4–5×
faster, and — unlike HNSW — it deletes by id natively and keeps recall under filters.

Why not ``IndexIDMap2(IndexIVFFlat)``: ``IndexIDMap::remove_ids`` compacts its id map assuming the
inner index renumbers like a flat index; IVF doesn't, so after a delete *every later id is wrong*
(checked on faiss 1.15). IVF stores the chunk ids itself (``add_with_ids``), and a hashtable direct
map makes ``remove_ids`` and ``reconstruct`` work by chunk id. Consequences for callers:

* get the ids with :func:`index_ids` (an IVF index has no ``id_map``);
* delete with :func:`remove_ids` (the hashtable map needs an ``IDSelectorArray``, not a ``Batch``);
* search with :func:`search`, which widens ``nprobe`` under a filter so filtered queries keep recall;
* an IVF index must be trained first: :func:`build_from_vectors` does plan + train + add;
* :func:`retune` resets nprobe for the current size after large adds/deletes;
* :func:`needs_rebuild` says when the kind or the list count no longer fits the size.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from rag.config import Settings

FLAT = "flat"
IVF = "ivf"
# k-means gets this many training points per list: enough for stable centroids, and it keeps
# training at 1M vectors to about a minute on two cores.
TRAIN_POINTS_PER_LIST = 64
MIN_POINTS_PER_LIST = 39  # below this faiss warns that k-means is under-determined
# Auto nprobe is a latency budget: probe enough lists to scan about SCAN_BUDGET vectors (≈1.5 ms
# on one core of the dev box), never fewer than MIN_NPROBE lists. On the benchmark's mixture data
# this gave recall@10 0.998 at 100k (42 of 1024 lists) and 0.995 at 1M (17 of 4096 lists).
SCAN_BUDGET = 4096
MIN_NPROBE = 16
# Up to this many allowed ids a filtered IVF query is answered exactly from their reconstructed
# vectors (reconstructing costs ~2 µs an id; past a few hundred the widened probe is cheaper).
EXACT_FILTER_MAX = 512
HASHTABLE = faiss.DirectMap.Hashtable  # type: ignore[attr-defined]  # (missing from faiss's stubs)


@dataclass(frozen=True)
class IndexPlan:
    """What to build for a given size; ``to_manifest()`` is what the index manifest records."""

    kind: str  # FLAT or IVF
    dim: int
    metric: str = "ip"
    nlist: int = 0
    nprobe: int = 0
    sized_for: int = 0  # the vector count the plan (or a described index) is for

    def to_manifest(self) -> dict[str, Any]:
        return asdict(self)


def _pow2(x: float) -> int:
    return 1 << max(0, round(math.log2(max(x, 1.0))))


def _nlist_for(n: int) -> int:
    """~4·√n lists (the usual rule), a power of two, with at least MIN_POINTS_PER_LIST points each."""
    cap = max(1, n // MIN_POINTS_PER_LIST)
    nlist = _pow2(4 * math.sqrt(max(n, 1)))
    while nlist > cap and nlist > 1:
        nlist //= 2
    return max(1, min(nlist, 1 << 16))


def plan_index(dim: int, n_expected: int, settings: Settings) -> IndexPlan:
    """The index for ``n_expected`` vectors: Flat up to ``settings.ann_threshold``, IVF past it.

    ``settings.ivf_nlist`` / ``settings.ivf_nprobe`` (0 or absent = automatic) override the counts.
    """
    if n_expected <= settings.ann_threshold:
        return IndexPlan(kind=FLAT, dim=dim, sized_for=n_expected)
    nlist = int(getattr(settings, "ivf_nlist", 0) or 0) or _nlist_for(n_expected)
    nprobe = int(getattr(settings, "ivf_nprobe", 0) or 0) or auto_nprobe(nlist, n_expected)
    return IndexPlan(kind=IVF, dim=dim, nlist=nlist, nprobe=min(nprobe, nlist), sized_for=n_expected)


def auto_nprobe(nlist: int, n: int) -> int:
    """Lists to probe so that a query scans about SCAN_BUDGET of ``n`` vectors spread over ``nlist``."""
    return min(nlist, max(MIN_NPROBE, math.ceil(SCAN_BUDGET * nlist / max(n, 1))))


def retune(index: faiss.Index, settings: Settings) -> int:
    """Re-derive an IVF index's nprobe from its current size (call after adding or deleting many
    vectors: the lists grow with the index until ``needs_rebuild`` says to re-cluster). Returns it."""
    ivf = _as_ivf(index)
    if ivf is None:
        return 0
    fixed = int(getattr(settings, "ivf_nprobe", 0) or 0)
    ivf.nprobe = min(ivf.nlist, fixed) if fixed else auto_nprobe(ivf.nlist, int(index.ntotal))
    return int(ivf.nprobe)


def index_from_plan(plan: IndexPlan) -> faiss.Index:
    if plan.kind == FLAT:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(plan.dim))
    quantizer = faiss.IndexFlatIP(plan.dim)
    ivf = faiss.IndexIVFFlat(quantizer, plan.dim, plan.nlist, faiss.METRIC_INNER_PRODUCT)
    # (faiss's Python wrapper keeps ``quantizer`` alive as long as ``ivf``)
    ivf.nprobe = plan.nprobe
    ivf.set_direct_map_type(HASHTABLE)
    return ivf


def build_faiss_index(dim: int, n_expected: int, settings: Settings) -> faiss.Index:
    """An empty index suited to ``n_expected`` vectors (IVF comes back untrained: see
    :func:`train_index`, or use :func:`build_from_vectors`). Describe it with :func:`describe_index`."""
    return index_from_plan(plan_index(dim, n_expected, settings))


def _as_ivf(index: faiss.Index) -> Any | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def describe_index(index: faiss.Index) -> dict[str, Any]:
    """The manifest entry for a live index: kind, metric, dim and, for IVF, nlist/nprobe."""
    ivf = _as_ivf(index)
    if ivf is None:
        return IndexPlan(kind=FLAT, dim=index.d, sized_for=int(index.ntotal)).to_manifest()
    return IndexPlan(
        kind=IVF, dim=index.d, nlist=int(ivf.nlist), nprobe=int(ivf.nprobe), sized_for=int(index.ntotal)
    ).to_manifest()


def train_index(index: faiss.Index, vectors: np.ndarray, seed: int = 0) -> None:
    """Train an IVF index's centroids on a sample of ``vectors`` (a no-op for Flat)."""
    ivf = _as_ivf(index)
    if ivf is None or ivf.is_trained:
        return
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(x) < ivf.nlist:
        raise ValueError(
            f"IVF with {ivf.nlist} lists needs at least that many training vectors, got {len(x)}"
        )
    want = ivf.nlist * TRAIN_POINTS_PER_LIST
    if len(x) > want:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), size=want, replace=False))]
    ivf.cp.seed = seed
    ivf.cp.max_points_per_centroid = TRAIN_POINTS_PER_LIST
    ivf.train(x)


def build_from_vectors(
    ids: np.ndarray, vectors: np.ndarray, settings: Settings, seed: int = 0
) -> faiss.Index:
    """Plan for ``len(ids)``, train if needed, add: the one call a rebuild from SQL needs."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = build_faiss_index(x.shape[1], len(ids), settings)
    train_index(index, x, seed=seed)
    if len(ids):
        index.add_with_ids(x, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def needs_rebuild(index: faiss.Index, n: int, settings: Settings) -> bool:
    """True when ``n`` vectors call for another kind, or for ≥2× / ≤½ the IVF lists (data grew ~4× or
    shrank ~4× since training). Between ½·threshold and threshold either kind is kept (hysteresis)."""
    ivf = _as_ivf(index)
    if ivf is None:
        return n > settings.ann_threshold
    if n <= settings.ann_threshold // 2:
        return True
    want = plan_index(index.d, max(n, settings.ann_threshold + 1), settings).nlist
    return want >= 2 * ivf.nlist or 2 * want <= ivf.nlist


def index_ids(index: faiss.Index) -> np.ndarray:
    """Every id stored in a Flat-IDMap2 or IVF index (int64, unordered)."""
    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = _as_ivf(index)
    if ivf is None:
        return np.arange(index.ntotal, dtype=np.int64)
    inv = ivf.invlists
    parts = [
        faiss.rev_swig_ptr(inv.get_ids(lst), inv.list_size(lst)).copy()
        for lst in range(ivf.nlist)
        if inv.list_size(lst)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def remove_ids(index: faiss.Index, ids: Collection[int] | np.ndarray) -> int:
    """Delete ids from either kind (absent ids are ignored); returns how many were removed."""
    arr = np.ascontiguousarray(
        np.fromiter(ids, dtype=np.int64) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64
    )
    if not len(arr):
        return 0
    ivf = _as_ivf(index)
    if ivf is not None and ivf.direct_map.type == HASHTABLE:
        # the hashtable raises on unknown ids, so drop those first
        arr = arr[np.isin(arr, index_ids(index))]
        if not len(arr):
            return 0
        return int(index.remove_ids(faiss.IDSelectorArray(len(arr), faiss.swig_ptr(arr))))
    return int(index.remove_ids(faiss.IDSelectorBatch(len(arr), faiss.swig_ptr(arr))))


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    allowed_ids: Collection[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products for each query row: (scores, ids), each (nq, k), id -1 where fewer.

    With ``allowed_ids`` only those ids can come back. On IVF a filter that keeps a share f of the
    vectors probes nprobe/f lists, because the allowed neighbours are spread over more lists; a
    filter of at most EXACT_FILTER_MAX ids is answered exactly from the reconstructed vectors.
    """
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    nq = q.shape[0]
    empty = (np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64))
    if k <= 0 or index.ntotal == 0:
        return empty
    ivf = _as_ivf(index)
    if allowed_ids is None:
        return index.search(q, k)
    allowed = np.asarray(
        np.fromiter(allowed_ids, dtype=np.int64) if not isinstance(allowed_ids, np.ndarray) else allowed_ids,
        dtype=np.int64,
    )
    if not len(allowed):
        return empty
    if ivf is not None and len(allowed) <= EXACT_FILTER_MAX:
        return _exact_over(index, q, k, np.unique(allowed))
    sel, _keepalive = _selector(allowed)
    if ivf is None:
        params = faiss.SearchParameters()
    else:
        params = faiss.SearchParametersIVF()
        share = min(1.0, len(allowed) / max(index.ntotal, 1))
        params.nprobe = min(ivf.nlist, math.ceil(ivf.nprobe / share))
    params.sel = sel
    return index.search(q, k, params=params)


def _selector(allowed: np.ndarray) -> tuple[Any, np.ndarray]:
    """A bitmap selector when the ids are small non-negative ints (SQL keys: building it is ~1 ms for
    100k ids, against ~10 ms for the hash set of ``IDSelectorBatch``), else a batch selector. The
    array returned alongside must outlive the search."""
    lo, hi = int(allowed.min()), int(allowed.max())
    if lo >= 0 and hi < max(1 << 23, 64 * len(allowed)):
        bits = np.zeros(hi + 1, dtype=bool)
        bits[allowed] = True
        bitmap = np.packbits(bits, bitorder="little")
        return faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)), bitmap  # n is in bytes
    arr = np.ascontiguousarray(allowed)
    return faiss.IDSelectorBatch(len(arr), faiss.swig_ptr(arr)), arr


def _exact_over(
    index: faiss.Index, q: np.ndarray, k: int, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    try:
        vecs = index.reconstruct_batch(allowed)
    except RuntimeError:  # some allowed ids aren't in the index (SQL ahead of FAISS): skip them
        allowed = allowed[np.isin(allowed, index_ids(index))]
        if not len(allowed):
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        vecs = index.reconstruct_batch(allowed)
    sims = q @ vecs.T
    kk = min(k, len(allowed))
    top = np.argsort(-sims, axis=1, kind="stable")[:, :kk]
    scores = np.full((len(q), k), -np.inf, np.float32)
    ids = np.full((len(q), k), -1, np.int64)
    scores[:, :kk] = np.take_along_axis(sims, top, axis=1)
    ids[:, :kk] = allowed[top]
    return scores, ids
