"""Parallel prefill: the chunk KV cache's bound and invalidation, RoPE re-positioning of cached keys,
and the answering pass over an assembled cache (real SmolLM2 for the slow ones)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import DynamicCache, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from rag.config import Settings
from rag.core import Rag
from rag.generate.generator import Generator
from rag.generate.kvcache import (
    KV,
    ChunkKVCache,
    KVDisk,
    UnitKey,
    file_name,
    key_of,
    model_folder,
    rope_of,
    shift_keys,
)
from tests.conftest import MODELS_CACHE
from tests.factories import TOPICS, make_sources


def unit(n_tokens: int, layers: int = 2) -> KV:
    """A unit's KV: per layer (1, kvH=2, n, D=8) float32 keys and values (128 bytes per token-layer)."""
    return tuple((torch.zeros(1, 2, n_tokens, 8), torch.zeros(1, 2, n_tokens, 8)) for _ in range(layers))


def random_unit(n_tokens: int, seed: int, layers: int = 2) -> KV:
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.randn(1, 2, n_tokens, 8, generator=g), torch.randn(1, 2, n_tokens, 8, generator=g))
                 for _ in range(layers))


def assert_same_kv(a: KV | None, b: KV) -> None:
    assert a is not None and len(a) == len(b)
    for (ka, va), (kb, vb) in zip(a, b, strict=True):
        assert torch.equal(ka, kb) and torch.equal(va, vb)


def unit_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.kv"))


def test_cache_evicts_least_recently_used_within_its_bound() -> None:
    size = 2 * 2 * (2 * 10 * 8 * 4)  # layers x (k, v) x bytes of a 10-token unit
    cache = ChunkKVCache(max_bytes=3 * size)
    keys = [UnitKey.of(i, [i, i + 1]) for i in range(4)]
    for key in keys[:3]:
        cache.put(key, unit(10))
    assert cache.nbytes == 3 * size and cache.get(keys[0]) is not None  # 0 is now the most recent
    cache.put(keys[3], unit(10))
    assert cache.nbytes <= cache.max_bytes and len(cache) == 3
    assert cache.get(keys[1]) is None  # the least recently used went
    assert all(cache.get(k) is not None for k in (keys[0], keys[2], keys[3]))
    cache.put(UnitKey.of(9, [9]), unit(100))  # larger than the whole bound: not kept, nothing evicted
    assert len(cache) == 3 and cache.nbytes == 3 * size
    assert (cache.hits, cache.misses) == (4, 1)


def test_retain_drops_units_of_deleted_and_changed_chunks() -> None:
    cache = ChunkKVCache(max_bytes=1 << 20)
    cache.put(UnitKey.of(1, [1, 2], "old text"), unit(4))
    cache.put(UnitKey.of(2, [5], "kept"), unit(4))
    cache.put(UnitKey.of(3, [6], "deleted"), unit(4))
    cache.put(UnitKey.of(None, [7]), unit(1))  # glue, shared by every prompt
    assert cache.chunk_ids() == {1, 2, 3}
    cache.retain({1: "new text under the same id", 2: "kept"})
    assert cache.chunk_ids() == {2} and len(cache) == 2
    assert cache.nbytes == sum(2 * k.numel() * 4 for kv in (unit(4), unit(1)) for k, _ in kv)


def test_a_fresh_cache_reads_units_back_from_disk_and_keeps_them_in_memory(tmp_path: Path) -> None:
    key, kv = UnitKey.of(7, [1, 2, 3], "chunk seven"), random_unit(5, seed=1)
    ChunkKVCache(1 << 20, KVDisk(tmp_path, 1 << 20)).put(key, kv)
    assert [p.name for p in unit_files(tmp_path)] == [file_name(key)]
    fresh = ChunkKVCache(1 << 20, KVDisk(tmp_path, 1 << 20))  # another process: memory empty
    assert len(fresh) == 0 and fresh.chunk_ids() == {7}
    assert_same_kv(fresh.get(key), kv)
    assert (fresh.hits, fresh.disk_hits, fresh.misses) == (1, 1, 0) and len(fresh) == 1
    assert_same_kv(fresh.get(key), kv)  # now from memory
    assert fresh.disk_hits == 1
    assert fresh.get(UnitKey.of(7, [1, 2, 4], "chunk seven")) is None and fresh.misses == 1


def test_disk_evicts_least_recently_used_files_within_its_bound(tmp_path: Path) -> None:
    keys = [UnitKey.of(i, [i], f"text {i}") for i in range(5)]
    probe = KVDisk(tmp_path / "probe", 1 << 20)
    probe.put(keys[0], unit(10))
    size = probe.nbytes
    disk = KVDisk(tmp_path / "kv", 3 * size)
    for key in keys[:3]:
        disk.put(key, unit(10))
    assert disk.get(keys[0]) is not None  # 0 is now the most recent
    disk.put(keys[3], unit(10))
    assert disk.nbytes == sum(p.stat().st_size for p in unit_files(disk.folder)) <= 3 * size
    assert disk.get(keys[1]) is None and disk.chunk_ids() == {0, 2, 3}
    disk.put(keys[4], unit(100))  # larger than the whole bound: not written, nothing evicted
    assert len(unit_files(disk.folder)) == 3
    reopened = KVDisk(disk.folder, 2 * size)  # a smaller bound: the oldest file by mtime goes
    assert reopened.nbytes <= 2 * size and len(unit_files(disk.folder)) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_a_damaged_file_is_a_miss_and_is_removed(tmp_path: Path, damage: str) -> None:
    key = UnitKey.of(3, [4, 5], "three")
    KVDisk(tmp_path, 1 << 20).put(key, random_unit(4, seed=2))
    (path,) = unit_files(tmp_path)
    raw = path.read_bytes()
    damaged = {"truncate": raw[: len(raw) // 2], "flip": raw[:-1] + bytes([raw[-1] ^ 1]),
               "garbage": b"not a unit"}[damage]
    path.write_bytes(damaged)
    cache = ChunkKVCache(1 << 20, KVDisk(tmp_path, 1 << 20))
    assert cache.get(key) is None and cache.misses == 1
    assert not path.exists() and cache.disk is not None and cache.disk.nbytes == 0


def test_retain_removes_the_files_of_deleted_and_changed_chunks(tmp_path: Path) -> None:
    cache = ChunkKVCache(1 << 20, KVDisk(tmp_path, 1 << 20))
    cache.put(UnitKey.of(1, [1, 2], "old text"), unit(4))
    cache.put(UnitKey.of(2, [5], "kept"), unit(4))
    cache.put(UnitKey.of(3, [6], "deleted"), unit(4))
    cache.put(UnitKey.of(None, [7]), unit(1))
    fresh = ChunkKVCache(1 << 20, KVDisk(tmp_path, 1 << 20))  # knows the files from their names only
    fresh.retain({1: "new text under the same id", 2: "kept"})
    assert fresh.chunk_ids() == {2}
    assert {p.name for p in unit_files(tmp_path)} == {file_name(UnitKey.of(2, [5], "kept")),
                                                      file_name(UnitKey.of(None, [7]))}


def test_no_disk_tier_where_it_is_off(tmp_path: Path) -> None:
    assert KVDisk.open(tmp_path / "kv", 0) is None and not (tmp_path / "kv").exists()
    assert KVDisk.open(tmp_path / "kv", 1 << 20) is not None


def test_an_int8_generator_does_not_share_the_fp32_ones_units() -> None:
    """Same weights file, same first-parameter dtype: only the linear layers' classes tell them apart."""
    from types import SimpleNamespace

    from rag.generate.weights import quantize_int8

    def tiny() -> torch.nn.Module:
        model = torch.nn.Sequential(torch.nn.Embedding(8, 4), torch.nn.Linear(4, 4))
        model.config = SimpleNamespace(_name_or_path="/models/same")  # type: ignore[assignment]
        return model

    fp32 = model_folder("m", tiny(), [1, 2])
    assert model_folder("m", tiny(), [1, 2]) == fp32
    assert model_folder("m", quantize_int8(tiny()), [1, 2]) != fp32
    assert model_folder("m", tiny(), [1, 3]) != fp32  # another instruction prefix


def test_a_changed_text_is_another_key() -> None:
    assert UnitKey.of(3, [1, 2, 3], "a") != UnitKey.of(3, [1, 2, 4], "b")
    assert UnitKey.of(3, [1, 2, 3], "a") == UnitKey.of(3, [1, 2, 3], "a")


def test_shifting_rotated_keys_equals_rotating_at_the_new_position() -> None:
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0)
    rotary = LlamaRotaryEmbedding(config)
    assert rope_of(type("M", (), {"base_model": type("B", (), {"rotary_emb": rotary})()})()) is rotary
    torch.manual_seed(0)
    raw = torch.randn(1, 2, 5, 16)  # (1, kvH, n, D) before RoPE
    positions = torch.arange(7, 12)[None]

    def rotated(pos: torch.Tensor) -> torch.Tensor:
        cos, sin = rotary(raw, pos)
        return apply_rotary_pos_emb(raw, raw, cos, sin)[1]

    torch.testing.assert_close(shift_keys(rotary, rotated(positions), 30), rotated(positions + 30),
                               atol=1e-5, rtol=0)
    assert not torch.allclose(rotated(positions), rotated(positions + 30), atol=1e-2)


@pytest.fixture(scope="module")
def parallel(generator: Generator) -> Generator:
    """The session's generator's model and tokenizer, prefilling chunks in parallel."""
    settings = Settings(max_new_tokens=24, prefill="parallel")
    return Generator(generator.model, generator.tokenizer, settings, name=generator.name)


@pytest.mark.slow
def test_parallel_prompt_has_the_full_prompts_tokens_and_segments(parallel: Generator) -> None:
    full = Generator(parallel.model, parallel.tokenizer, Settings(prefill="full"), name=parallel.name)
    question, sources = "How tall is Mount Etna?", make_sources()
    a, b = full.prompts.build(question, sources), parallel.prompts.build(question, sources)
    assert b.token_ids == a.token_ids and b.segments == a.segments and b.token_chars == a.token_chars
    # units tile the chunk area: glue and body per chunk, from the prefix's end to the question
    assert [u[1] for u in b.units[1:]] == [u[2] for u in b.units[:-1]] and b.units[0][1] == b.prefix_len
    assert [u[0].chunk_id for u in b.units] == [None, 10, None, 20, None, 30]


@pytest.mark.slow
def test_cached_keys_moved_into_place_match_keys_computed_there(parallel: Generator) -> None:
    prompt = parallel.prompts.build("How tall is Mount Etna?", make_sources())
    _, start, end = prompt.units[3]  # the second chunk's body
    ids = prompt.token_ids[start:end]
    canonical = parallel._encode_unit(ids)
    prefix_kv, prefix = parallel._prefix_kv, parallel.prompts.prefix
    assert prefix_kv is not None and prefix is not None
    cache = DynamicCache(config=parallel.model.config)
    for layer, (k, v) in enumerate(prefix_kv):
        cache.update(k, v, layer)
    n0 = len(prefix.token_ids)
    with torch.inference_mode():  # the same context (the prefix only), at the unit's real positions
        parallel.model(input_ids=torch.tensor([ids]), cache=cache, use_cache=True,
                       position_ids=torch.arange(start, end)[None])
    # layer 0's keys depend on position and token only: the rotation must put them exactly there
    there = cache.layers[0].keys[:, :, n0:]
    torch.testing.assert_close(shift_keys(parallel._rotary, canonical[0][0], start - n0), there,
                               atol=1e-4, rtol=0)


@pytest.mark.slow
def test_warm_cache_gives_the_cold_answer_and_full_softmaxes(parallel: Generator) -> None:
    parallel.chunk_kv = ChunkKVCache(parallel.chunk_kv.max_bytes)
    question, sources = "Where was coffee first cultivated?", make_sources()
    cold = parallel.generate(question, sources)
    assert parallel.chunk_kv.misses == 6 and parallel.chunk_kv.hits == 0
    warm = parallel.generate(question, sources)
    assert parallel.chunk_kv.hits == 6
    assert warm.token_ids == cold.token_ids and warm.text == cold.text
    torch.testing.assert_close(warm.features, cold.features, atol=1e-5, rtol=0)
    T, L, H, _ = warm.features.shape
    torch.testing.assert_close(warm.features.sum(-1), torch.ones(T, L, H), atol=1e-4, rtol=0)
    forced = parallel.teacher_force(question, sources, cold.text)  # attribution takes the same path
    assert forced.token_ids == cold.token_ids
    torch.testing.assert_close(forced.features, cold.features, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_a_fresh_generator_on_a_warm_disk_gives_the_cold_answer(parallel: Generator, tmp_path: Path) -> None:
    def fresh(instruction: str = parallel.prompts.instruction) -> Generator:  # what a new process builds
        settings = Settings(max_new_tokens=24, prefill="parallel", kv_disk_mb=64)
        return Generator(parallel.model, parallel.tokenizer, settings, name=parallel.name,
                         instruction=instruction, kv_disk=tmp_path)

    question, sources = "Where was coffee first cultivated?", make_sources()
    cold_generator = fresh()
    cold = cold_generator.generate(question, sources)
    assert cold_generator.chunk_kv.misses == 6
    (folder,) = tmp_path.iterdir()
    assert len(unit_files(folder)) == 6
    warm_generator = fresh()
    assert len(warm_generator.chunk_kv) == 0
    warm = warm_generator.generate(question, sources)
    assert (warm_generator.chunk_kv.disk_hits, warm_generator.chunk_kv.misses) == (6, 0)
    assert warm.token_ids == cold.token_ids and warm.text == cold.text
    torch.testing.assert_close(warm.features, cold.features, atol=1e-5, rtol=0)
    fresh("Answer in one word.")  # units computed after another prefix are another model's
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.slow
def test_cache_stays_within_its_memory_bound(parallel: Generator) -> None:
    parallel.chunk_kv = ChunkKVCache(max_bytes=3 << 20)  # ~1.5 chunk bodies of SmolLM2's KV
    for question in ("How tall is Mount Etna?", "Which opening begins with 1.e4 c5?"):
        parallel.generate(question, make_sources(), max_new_tokens=2)
        assert 0 < parallel.chunk_kv.nbytes <= parallel.chunk_kv.max_bytes


@pytest.mark.slow
def test_deleted_or_changed_chunks_leave_the_cache(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for title, text in TOPICS.items():
        (corpus / f"{title.lower()}.md").write_text(f"# {title}\n\n{text}\n", encoding="utf-8")
    settings = Settings(home=tmp_path / "home", models_cache=MODELS_CACHE, prefill="parallel",
                        max_new_tokens=4, context_score_ratio=0.0, min_relevance=0.0, kv_disk_mb=64)

    def on_disk() -> set[int]:
        keys = [key_of(p.name) for p in (settings.home_dir / "kv").glob("*/*.kv")]
        return {k.chunk_id for k in keys if k is not None and k.chunk_id is not None}

    rag = Rag(settings)
    rag.ingest([corpus])
    kv = rag.load_generator().generator.chunk_kv
    answer = rag.ask("How tall is Mount Etna?")
    by_doc = {s.document_id: s.chunk_id for s in answer.sources}
    assert len(by_doc) == 3 and set(by_doc.values()) <= kv.chunk_ids() and set(by_doc.values()) == on_disk()
    changed = next(d for d in rag.documents() if d.path.endswith("coffee.md"))
    Path(changed.path).write_text("# Coffee\n\nCoffee is now grown on every continent.\n", encoding="utf-8")
    rag.ingest([corpus])  # the changed file's chunk goes from the cache and the disk, the others stay
    assert by_doc[changed.id] not in kv.chunk_ids() | on_disk()
    assert set(by_doc.values()) - {by_doc[changed.id]} <= kv.chunk_ids() & on_disk()
    first, second = sorted(set(by_doc) - {changed.id})
    assert rag.delete_document(first)
    assert by_doc[first] not in kv.chunk_ids() | on_disk()
    assert Rag(settings).delete_document(second)  # a process without the generator: its file stays
    assert by_doc[second] in on_disk()
    Rag(settings).load_generator()  # until the next process that loads one
    assert not on_disk()
