"""Index choice by size: Flat below the threshold, IVF above; deletions and filters work in both."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from rag.config import Settings
from rag.index import ann

DIM = 32


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((16, DIM)).astype(np.float32)
    x = centers[rng.integers(0, 16, n)] + 0.4 * rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


@pytest.fixture
def settings() -> Settings:
    return Settings(ann_threshold=200)


def test_policy_picks_flat_below_and_ivf_above(settings: Settings) -> None:
    small = ann.plan_index(DIM, 200, settings)
    big = ann.plan_index(DIM, 5000, settings)
    assert small.kind == ann.FLAT and big.kind == ann.IVF
    assert 1 <= big.nprobe <= big.nlist and 5000 // big.nlist >= ann.MIN_POINTS_PER_LIST
    assert isinstance(ann.build_faiss_index(DIM, 200, settings), faiss.IndexIDMap2)
    ivf = ann.build_faiss_index(DIM, 5000, settings)
    assert isinstance(ivf, faiss.IndexIVFFlat) and not ivf.is_trained
    manifest = big.to_manifest()
    assert manifest["kind"] == "ivf" and manifest["nlist"] == big.nlist and manifest["metric"] == "ip"


def test_settings_override_ivf_counts() -> None:
    s = Settings(ann_threshold=10)
    object.__setattr__(s, "ivf_nlist", 8)  # the fields may not exist yet: read with getattr
    object.__setattr__(s, "ivf_nprobe", 3)
    plan = ann.plan_index(DIM, 1000, s)
    assert (plan.nlist, plan.nprobe) == (8, 3)


@pytest.mark.parametrize("n", [150, 3000])
def test_build_search_delete_filter(settings: Settings, n: int) -> None:
    x = _clustered(n)
    ids = np.arange(n, dtype=np.int64) * 7 + 100  # chunk ids are not positions
    index = ann.build_from_vectors(ids, x, settings)
    assert ann.describe_index(index)["kind"] == (ann.FLAT if n <= settings.ann_threshold else ann.IVF)
    assert index.ntotal == n
    assert sorted(ann.index_ids(index).tolist()) == ids.tolist()

    scores, found = ann.search(index, x[:20], 5)
    assert (found[:, 0] == ids[:20]).all()  # each vector finds itself
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)

    gone = ids[:10]
    assert ann.remove_ids(index, np.concatenate([gone, [10**9]])) == 10  # an unknown id is ignored
    assert index.ntotal == n - 10
    _, found = ann.search(index, x[:10], 10)
    assert not np.isin(found, gone).any()
    assert set(ann.index_ids(index).tolist()) == set(ids[10:].tolist())
    _, found = ann.search(index, x[10:11], 1)
    assert found[0, 0] == ids[10]  # the survivors' ids are intact after a delete

    allowed = ids[50:90]
    _, found = ann.search(index, x[12:14], 5, allowed_ids=set(allowed.tolist()))
    assert np.isin(found[found >= 0], allowed).all() and (found >= 0).all()
    big_allowed = ids[10 : n // 2]
    _, found = ann.search(index, x[12:13], 5, allowed_ids=big_allowed)
    assert found[0, 0] == ids[12] and np.isin(found, big_allowed).all()
    _, found = ann.search(index, x[:1], 3, allowed_ids=[])
    assert (found == -1).all()


def test_ivf_round_trips_through_serialisation(settings: Settings) -> None:
    x = _clustered(2000, seed=3)
    ids = np.arange(2000, dtype=np.int64) + 1
    index = ann.build_from_vectors(ids, x, settings)
    ann.remove_ids(index, ids[:5])
    loaded = faiss.deserialize_index(faiss.serialize_index(index))
    assert ann.describe_index(loaded) == ann.describe_index(index)
    assert ann.remove_ids(loaded, ids[5:7]) == 2  # deletes by id still work after a reload
    np.testing.assert_allclose(loaded.reconstruct(int(ids[100])), x[100], atol=1e-6)
    _, found = ann.search(loaded, x[5:8], 1)
    assert found[2, 0] == ids[7] and not np.isin(found, ids[:7]).any()


def test_ivf_recall_close_to_exact(settings: Settings) -> None:
    x = _clustered(4000, seed=4)
    q = _clustered(50, seed=5)
    ids = np.arange(4000, dtype=np.int64)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(x)
    _, truth = exact.search(q, 10)
    _, found = ann.search(ann.build_from_vectors(ids, x, settings), q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.9


def test_needs_rebuild(settings: Settings) -> None:
    flat = ann.build_from_vectors(np.arange(100), _clustered(100), settings)
    assert not ann.needs_rebuild(flat, 200, settings)
    assert ann.needs_rebuild(flat, 201, settings)
    ivf = ann.build_from_vectors(np.arange(2000), _clustered(2000), settings)
    assert not ann.needs_rebuild(ivf, 2000, settings)
    assert ann.needs_rebuild(ivf, 40_000, settings)  # grew far beyond what its lists were sized for
    assert ann.needs_rebuild(ivf, 300, settings)  # shrank far below it: too many lists
    just_above = ann.build_from_vectors(np.arange(250), _clustered(250), settings)
    assert ann.describe_index(just_above)["kind"] == ann.IVF
    assert not ann.needs_rebuild(just_above, 150, settings)  # hysteresis band: keep IVF
    assert ann.needs_rebuild(just_above, 99, settings)  # well below the threshold: back to Flat


def test_training_needs_enough_vectors(settings: Settings) -> None:
    index = ann.build_faiss_index(DIM, 5000, settings)
    with pytest.raises(ValueError, match="training"):
        ann.train_index(index, _clustered(3))


@pytest.mark.parametrize("n", [150, 9000])  # Flat; IVF with a filter too big for the exact path
def test_filter_never_leaks_ids_outside_the_allowed_set(settings: Settings, n: int) -> None:
    x = _clustered(n, seed=6)
    ids = np.arange(n, dtype=np.int64) * 1000 + 5  # sparse ids: the bitmap selector spans them
    index = ann.build_from_vectors(ids, x, settings)
    allowed = ids[: max(3, ann.EXACT_FILTER_MAX + 1)] if n > ann.EXACT_FILTER_MAX else ids[:3]
    _, found = ann.search(index, x[-5:], 10, allowed_ids=allowed)  # queries whose best match is excluded
    assert np.isin(found[found >= 0], allowed).all()
    assert (found[:, : min(10, len(allowed))] >= 0).all()  # and the allowed ones are still found
    _, found = ann.search(index, x[-5:], 10, allowed_ids=np.concatenate([[-7], allowed]))  # batch selector
    assert np.isin(found[found >= 0], allowed).all()


def test_auto_nprobe_is_a_scan_budget(settings: Settings) -> None:
    assert ann.auto_nprobe(1024, 100_000) == 42  # ~4k vectors scanned
    assert ann.auto_nprobe(4096, 1_000_000) == 17
    assert ann.auto_nprobe(16384, 10**7) == ann.MIN_NPROBE
    assert ann.auto_nprobe(8, 100) == 8  # never more than the lists
    index = ann.build_from_vectors(np.arange(3000), _clustered(3000), settings)
    ann.remove_ids(index, np.arange(2000))
    assert ann.retune(index, settings) == ann.auto_nprobe(faiss.extract_index_ivf(index).nlist, 1000)
    assert ann.retune(ann.build_from_vectors(np.arange(10), _clustered(10), settings), settings) == 0


def test_saving_an_index_that_grew_retunes_its_nprobe(settings: Settings, tmp_path: Path) -> None:
    from rag.index.vectors import VectorIndex

    vi = VectorIndex(tmp_path, DIM, "test-model", settings)
    vi.index = ann.build_from_vectors(np.arange(3000), _clustered(3000), settings)
    nlist = faiss.extract_index_ivf(vi.index).nlist
    vi.add(np.arange(3000, 12000), _clustered(9000, seed=1))  # 4x the vectors in the same lists
    vi.save()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["index"]["nprobe"] == ann.auto_nprobe(nlist, 12000) < ann.auto_nprobe(nlist, 3000)
