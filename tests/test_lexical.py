"""BM25 lexical index: ranking, incremental add/remove, filters, persistence."""

from __future__ import annotations

import itertools
import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rag.index.lexical import DATA_FILE, MANIFEST_FILE, LexicalIndex, LexicalIndexError
from rag.index.vectors import ids_checksum
from rag.text import stem, tokenize

DOCS = {
    1: "The lighthouse keeper trimmed the lamp every evening before the storm.",
    2: "A xylophone has wooden bars struck with mallets.",
    3: "Storms batter the lighthouse; the keeper's lamp must burn all night.",
    4: "Granite blocks were dovetailed so the tower could resist the sea.",
    5: "The keeper wrote in the log about the lamp, the storm and the tower.",
}


@pytest.fixture
def index() -> LexicalIndex:
    return LexicalIndex.from_pairs(DOCS.items())


def test_tokenize_lowercases_drops_stopwords_and_stems() -> None:
    assert tokenize("The Runners were RUNNING to their houses") == ["runner", "run", "hous"]
    assert tokenize("snake_case and café naïve 2024") == ["snake", "case", "café", "naïv", "2024"]


@pytest.mark.parametrize(
    ("word", "stemmed"),
    [("caresses", "caress"), ("ponies", "poni"), ("agreed", "agre"), ("hopping", "hop"), ("filing", "file"),
     ("relational", "relat"), ("generalization", "general"), ("adjustment", "adjust"), ("sky", "sky"),
     ("generously", "generous"), ("dying", "die")],
)  # fmt: skip
def test_snowball_english_examples(word: str, stemmed: str) -> None:
    assert stem(word) == stemmed


def test_rare_term_ranks_its_document_first(index: LexicalIndex) -> None:
    hits = index.search("who plays the xylophone?", k=3)
    assert hits[0][0] == 2
    assert len(hits) == 1  # no other document shares a term with the query


def test_scores_rank_by_term_overlap_and_stems_match(index: LexicalIndex) -> None:
    hits = index.search("stormy lamps of a lighthouse keeper", k=5)
    ids = [i for i, _ in hits]
    assert set(ids[:2]) == {1, 3}  # both have lighthouse + keeper + lamp + storm
    assert 5 in ids and 2 not in ids
    assert all(a[1] >= b[1] for a, b in itertools.pairwise(hits))


def test_unknown_and_stopword_queries_return_nothing(index: LexicalIndex) -> None:
    assert index.search("quantum chromodynamics", 5) == []
    assert index.search("the and of", 5) == []
    assert index.search("lamp", 0) == []
    assert LexicalIndex().search("lamp", 5) == []


def test_remove_and_replace(index: LexicalIndex) -> None:
    assert index.remove([2, 99]) == 1
    assert len(index) == 4 and 2 not in index
    assert index.search("xylophone", 5) == []
    index.add([(4, "a xylophone in the granite tower")])  # replaces doc 4
    assert len(index) == 4
    assert [i for i, _ in index.search("xylophone", 5)] == [4]
    assert index.search("dovetailed", 5) == []


def test_allowed_ids_filter(index: LexicalIndex) -> None:
    assert {i for i, _ in index.search("keeper lamp", 5, allowed_ids={3, 4})} == {3}
    assert index.search("keeper lamp", 5, allowed_ids=set()) == []
    assert [i for i, _ in index.search("keeper lamp", 5, allowed_ids=np.array([5]))] == [5]


def test_ties_break_by_id() -> None:
    idx = LexicalIndex.from_pairs([(9, "alpha beta"), (3, "alpha beta"), (5, "alpha beta")])
    assert [i for i, _ in idx.search("alpha", 2)] == [3, 5]


def _random_docs(n: int, seed: int) -> dict[int, str]:
    rng = random.Random(seed)
    words = [f"w{j}" for j in range(300)]
    return {i: " ".join(rng.choices(words, k=rng.randint(0, 30))) for i in range(n)}


def test_incremental_updates_score_exactly_like_a_rebuild() -> None:
    """Adds, replacements and deletes across segment merges give the same scores as a fresh build."""
    docs = _random_docs(3000, seed=1)
    idx = LexicalIndex()
    items = list(docs.items())
    for start in range(0, len(items), 700):  # several batches: main segment, delta, merges
        idx.add(items[start : start + 700])
    rng = random.Random(2)
    gone = rng.sample(sorted(docs), 1500)  # enough tombstones to trigger a merge
    idx.remove(gone)
    for i in gone:
        del docs[i]
    for i in rng.sample(sorted(docs), 50):
        docs[i] = f"w1 w2 replaced {i}"
        idx.add([(i, docs[i])])
    fresh = LexicalIndex.from_pairs(docs.items())
    assert len(idx) == len(fresh) == len(docs)
    assert idx.checksum() == fresh.checksum() == ids_checksum(list(docs))
    for q in ["w1 w2", "w17 w250 w3", "replaced w9", "w299"]:
        a, b = idx.search(q, 20), fresh.search(q, 20)
        assert [i for i, _ in a] == [i for i, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], rtol=1e-9)


def test_persistence_round_trip(index: LexicalIndex, tmp_path: Path) -> None:
    index.remove([4])
    index.add([(7, "a brand new xylophone lamp")])
    manifest = index.save(tmp_path / "lex")
    assert manifest["count"] == 5 and manifest["checksum"] == ids_checksum([1, 2, 3, 5, 7])
    on_disk = json.loads((tmp_path / "lex" / MANIFEST_FILE).read_text())
    assert on_disk == manifest
    loaded = LexicalIndex.load(tmp_path / "lex")
    assert len(loaded) == 5 and loaded.checksum() == index.checksum()
    for q in ["xylophone lamp", "keeper storm", "tower"]:
        assert loaded.search(q, 5) == index.search(q, 5)
    loaded.add([(8, "xylophone orchestra")])  # a loaded index keeps growing its vocabulary
    assert loaded.search("orchestra", 3)[0][0] == 8
    assert not list((tmp_path / "lex").glob("*.tmp"))


def test_load_rejects_missing_or_torn_files(index: LexicalIndex, tmp_path: Path) -> None:
    with pytest.raises(LexicalIndexError):
        LexicalIndex.load(tmp_path / "nothing")
    folder = tmp_path / "lex"
    index.save(folder)
    data = folder / DATA_FILE
    data.write_bytes(data.read_bytes()[:-10])  # as if a newer data file landed without its manifest
    with pytest.raises(LexicalIndexError, match="manifest"):
        LexicalIndex.load(folder)


def test_reconcile_with_database_ids(index: LexicalIndex) -> None:
    db = {1: DOCS[1], 3: DOCS[3], 10: "ten xylophones", 11: "eleven lamps"}
    added, removed = index.reconcile(np.array(sorted(db)), lambda ids: [(int(i), db[int(i)]) for i in ids])
    assert (added, removed) == (2, 3)
    assert index.checksum() == ids_checksum(list(db))
    assert index.search("xylophone", 3)[0][0] == 10


def test_an_index_saved_by_the_porter_tokenizer_is_rejected_so_it_rebuilds(
    index: LexicalIndex, tmp_path: Path
) -> None:
    folder = tmp_path / "lex"
    index.save(folder)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    (folder / MANIFEST_FILE).write_text(json.dumps({**manifest, "tokenizer": "words-nostop-porter-1"}))
    with pytest.raises(LexicalIndexError, match="tokenizer"):
        LexicalIndex.load(folder)


def test_stemming_on_many_threads_agrees_with_one() -> None:
    suffixes = ("", "s", "ing", "ed", "er")
    words = [f"{w}{s}" for w in ("light", "keep", "flash", "guid", "warn") for s in suffixes]
    expected = [stem(w) for w in words]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(lambda _: [stem(w) for w in words], range(64))) == [expected] * 64
