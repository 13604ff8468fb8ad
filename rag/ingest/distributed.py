"""`rag ingest --ray`: the same sync as `rag.ingest.sync`, with parsing, chunking and embedding on Ray Data.

What stays on the driver, because SQL is the truth and only the driver talks to it: the scan, the
hashes and the unchanged/changed/vanished decision, every SQL write (one transaction per document, as
locally), and the FAISS/BM25 indexes, updated after each commit and saved as today. What runs on the
cluster, as two Ray Data stages over the files that need work:

- ``_Load``: an actor pool, each actor holding a `LoadWorker` (the parser process with its time and
  memory limits), so a hostile file costs that file on that node, worded as a local run words it;
- ``_ChunkAndEmbed``: an actor pool, each actor loading the embedder once and chunking with the
  embedder's own tokenizer (chunking needs it, so it runs where the model already is).

A file comes back as one row per chunk (or one row with the reason it failed); the driver stores it
once all its rows are in. A crash anywhere mid-run leaves only whole documents in SQL: the next run
reconciles the indexes and redoes what is missing, as after a local crash. Workers read files by
their absolute path, so on several hosts the folder must be shared storage mounted at the same path,
and the database must be shared too (PostgreSQL): SQLite is refused when any node is elsewhere.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.config import Settings
from rag.index.derived import IndexSet
from rag.ingest.records import Examined, IngestSummary, Known, Pending, ProgressFn
from rag.ingest.sync import SAVE_EVERY_S, Ingestor, make_chunker
from rag.parse.chunking import chunk_document
from rag.parse.scan import ScannedFile
from rag.parse.worker import LoadWorker
from rag.storage.database import Database
from rag.storage.writelock import WriteLock
from rag.types import BadInput, ChunkSpan, LoadedDocument, LoadError, Section

if TYPE_CHECKING:
    from rag.embed.embedder import Embedder

LOCAL = "auto"  # --ray with no address: a Ray instance of our own on this machine
_EMBED_BATCH_FILES = 16  # files per embedder call: a few hundred chunks, where the model is fastest
_OBJECT_STORE_BYTES = 512 << 20  # a local instance's shared memory: files in flight are small


@dataclass(frozen=True)
class StageConfig:
    """What the workers need from the settings (plain values: it travels to every actor)."""

    embedder: str
    device: str
    embed_batch_size: int
    embed_backend: str
    models_dir: str
    chunk_tokens: int
    chunk_overlap: int
    max_file_chunks: int
    file_timeout_s: float
    max_file_chars: int


class _Load:
    """Ray Data stage 1: parse files in a `LoadWorker` kept for the actor's lifetime."""

    def __init__(self, config: StageConfig) -> None:
        self.worker = LoadWorker(config.file_timeout_s, max_chars=config.max_file_chars)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list[Any]] = {k: [] for k in ("idx", "text", "sections", "meta", "error")}
        for idx, path in zip(batch["idx"], batch["path"], strict=True):
            doc, error = None, ""
            try:
                doc = self.worker.load(Path(str(path)))
            except (LoadError, OSError) as exc:  # the same words as `Ingestor._examine`
                error = str(exc) or type(exc).__name__
            out["idx"].append(int(idx))
            out["text"].append(doc.text if doc else "")
            out["sections"].append(json.dumps([asdict(s) for s in doc.sections] if doc else []))
            out["meta"].append(json.dumps([doc.title, doc.doc_type, doc.mime] if doc else []))
            out["error"].append(error)
        return _columns(out)


_CHUNK_COLUMNS = (
    "idx",
    "chunks",
    "ordinal",
    "text",
    "char_start",
    "char_end",
    "token_count",
    "page",
    "heading",
    "meta",
    "error",
)


class _ChunkAndEmbed:
    """Ray Data stage 2: chunk parsed files and embed their chunks, the model loaded once per actor."""

    def __init__(self, config: StageConfig) -> None:
        from rag.embed.embedder import Embedder

        self.embedder = Embedder(config.embedder, device=config.device, batch_size=config.embed_batch_size,
                                 backend=config.embed_backend, models_dir=Path(config.models_dir))
        self.chunker = make_chunker(self.embedder, config.chunk_tokens, config.chunk_overlap)
        self.max_chunks = config.max_file_chunks

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, list[Any]] = {k: [] for k in _CHUNK_COLUMNS}
        embed: list[bool] = []
        for idx, text, sections, meta, error in zip(
            batch["idx"], batch["text"], batch["sections"], batch["meta"], batch["error"], strict=True
        ):
            chunks: list[ChunkSpan] = []
            reason = str(error) or None
            if reason is None:
                doc = LoadedDocument(str(text), "", "", "", [Section(**s) for s in json.loads(str(sections))])
                chunks, reason = chunk_document(self.chunker, doc, self.max_chunks)
            rows = chunks or [ChunkSpan("", 0, 0, 0)]  # a failed file: one row carrying the reason
            for ordinal, c in enumerate(rows):
                values = (
                    int(idx),
                    len(chunks),
                    ordinal if chunks else -1,
                    c.text,
                    c.char_start,
                    c.char_end,
                    c.token_count,
                    -1 if c.page is None else c.page,
                    c.heading or "",
                    str(meta),
                    reason or "",
                )
                for column, value in zip(_CHUNK_COLUMNS, values, strict=True):
                    out[column].append(value)
                embed.append(bool(chunks))
        texts = [t for t, e in zip(out["text"], embed, strict=True) if e]
        vectors = np.zeros((len(embed), self.embedder.dim), dtype=np.float32)
        vectors[np.array(embed, dtype=bool)] = self.embedder.encode(texts)
        return {**_columns(out), "vector": vectors}


def _columns(out: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    """Object columns for strings (numpy would pad them to the longest), int64 for the rest."""
    return {k: np.array(v, dtype=object if v and isinstance(v[0], str) else np.int64) for k, v in out.items()}


@dataclass
class _Done:
    """One file back from the cluster: its chunks and their vectors, or why it could not be indexed."""

    idx: int
    error: str | None
    doc: LoadedDocument
    chunks: list[ChunkSpan]
    vectors: np.ndarray


class _Collector:
    """Rows arrive in batches that need not line up with files; a file is done once all its rows are."""

    def __init__(self) -> None:
        self._rows: dict[int, list[tuple[int, ChunkSpan, np.ndarray]]] = {}

    def add(self, batch: dict[str, np.ndarray]) -> list[_Done]:
        done: list[_Done] = []
        for i in range(len(batch["idx"])):
            idx, total = int(batch["idx"][i]), int(batch["chunks"][i])
            page = int(batch["page"][i])
            span = ChunkSpan(
                str(batch["text"][i]),
                int(batch["char_start"][i]),
                int(batch["char_end"][i]),
                int(batch["token_count"][i]),
                None if page < 0 else page,
                str(batch["heading"][i]) or None,
            )
            rows = self._rows.setdefault(idx, [])
            rows.append((int(batch["ordinal"][i]), span, batch["vector"][i]))
            if len(rows) < max(total, 1):
                continue
            del self._rows[idx]
            rows.sort(key=lambda r: r[0])
            meta = json.loads(str(batch["meta"][i])) or ["", "", ""]
            # the stored document needs only the metadata: its text is in the chunks
            doc = LoadedDocument("", title=meta[0], doc_type=meta[1], mime=meta[2])
            error = str(batch["error"][i]) or None
            chunks = [] if error else [r[1] for r in rows]
            vectors = np.stack([r[2] for r in rows]) if chunks else np.zeros((0, len(batch["vector"][i])))
            done.append(_Done(idx, error, doc, chunks, vectors.astype(np.float32)))
        return done


class Cluster:
    """A connection to Ray for one ingest run: ``auto`` starts a local instance, an address joins a
    cluster. Worker count and CPUs per worker come from the settings."""

    def __init__(self, address: str, settings: Settings, dialect: str) -> None:
        """``dialect``: the database's (SQLAlchemy's name), as workers on other hosts need a shared one."""
        try:
            import ray
        except ImportError:
            raise BadInput("`rag ingest --ray` needs Ray: pip install 'sightline[ray]'") from None
        self.address = address
        quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
        if address == LOCAL:
            ray.init(
                address="local", include_dashboard=False, object_store_memory=_OBJECT_STORE_BYTES, **quiet
            )
        else:
            ray.init(address=address, **quiet)
        try:
            self.cpus_per_worker = settings.ray_worker_cpus
            cpus = int(ray.cluster_resources().get("CPU", 0))
            self.workers = settings.ray_workers or max(1, cpus // self.cpus_per_worker)
            if self.workers * self.cpus_per_worker > cpus:
                raise BadInput(
                    f"Ray has {cpus} CPUs, fewer than {self.workers} workers x {self.cpus_per_worker} CPUs "
                    "(ray_workers, ray_worker_cpus)"
                )
            elsewhere = _remote_nodes()
            if elsewhere and dialect == "sqlite":
                raise BadInput(
                    f"the Ray cluster at {address} has workers on other hosts ({', '.join(elsewhere[:3])}): "
                    "that needs a shared database; set RAG_DATABASE_URL to PostgreSQL, not SQLite"
                )
        except BaseException:
            ray.shutdown()
            raise

    def close(self) -> None:
        import ray

        ray.shutdown()

    def run(self, paths: list[str], config: StageConfig) -> Iterator[_Done]:
        """Stream `_Done` for every path (in order), parsing and embedding on the cluster."""
        import ray.data

        logging.getLogger("ray.data").setLevel(logging.ERROR)  # stderr stays for our own failures
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # documents stored in scan order, as locally
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        items = [{"idx": i, "path": p} for i, p in enumerate(paths)]
        ds: ray.data.Dataset = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 200)))
        ds = ds.map_batches(
            _Load,
            fn_constructor_kwargs={"config": config},
            batch_size=1,  # one file per call: a slow file holds up no other
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            num_cpus=0,  # the parser process is mostly idle between files; the embedders get the CPUs
            batch_format="numpy",
        )
        ds = ds.map_batches(
            _ChunkAndEmbed,
            fn_constructor_kwargs={"config": config},
            batch_size=_EMBED_BATCH_FILES,
            compute=ray.data.ActorPoolStrategy(size=self.workers),
            num_cpus=self.cpus_per_worker,  # Ray sets the actor's OMP_NUM_THREADS to this
            batch_format="numpy",
        )
        collector = _Collector()
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield from collector.add(batch)


def _remote_nodes() -> list[str]:
    """Addresses of the live Ray nodes that are not this host."""
    import ray

    here = ray.util.get_node_ip_address()
    return sorted({n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} - {here})


class RayIngestor(Ingestor):
    """`Ingestor` whose parse-chunk-embed stage runs on Ray Data; everything else is inherited."""

    def __init__(
        self,
        settings: Settings,
        database: Database,
        lock: WriteLock,
        indexes: IndexSet,
        load_embedder: Callable[[], Embedder],
        address: str,
    ) -> None:
        super().__init__(settings, database, lock, indexes, load_embedder)
        self.address = address

    def _sync(
        self,
        files: list[ScannedFile],
        known: dict[str, Known],
        summary: IngestSummary,
        progress: ProgressFn | None,
    ) -> None:
        items = [self.check(f, known.get(str(f.path))) for f in files]  # hashes: where SQL is
        todo: list[Examined] = []
        for item in items:
            duplicate = self.duplicate_of(item)  # of a stored document: not sent to the cluster at all
            if item.unchanged:
                summary.unchanged += 1
            elif duplicate is not None:
                self.skip_duplicate(item, duplicate, summary)
            elif item.error is not None:
                self.fail(item, item.error, summary)
            else:
                todo.append(item)
        done = len(items) - len(todo)
        if progress:
            progress(done, len(items), "")
        if todo:
            cluster = Cluster(self.address, self.settings, self.database.engine.dialect.name)
            try:
                self._ingest_on(cluster, todo, summary, progress, done, len(items))
            finally:
                cluster.close()
        order = {str(f.path): i for i, f in enumerate(files)}
        summary.failed.sort(key=lambda f: order.get(f.path, -1))  # as a local run lists them
        summary.duplicates.sort(key=lambda d: order.get(d.path, -1))
        if progress:
            progress(len(items), len(items), "")

    def _ingest_on(
        self,
        cluster: Cluster,
        todo: list[Examined],
        summary: IngestSummary,
        progress: ProgressFn | None,
        done: int,
        total: int,
    ) -> None:
        cfg = self.settings
        config = StageConfig(
            cfg.embedder,
            cfg.device,
            cfg.embed_batch_size,
            cfg.embed_backend,
            str(cfg.models_dir),
            cfg.chunk_tokens,
            cfg.chunk_overlap,
            cfg.max_file_chunks,
            cfg.file_timeout_s,
            cfg.max_file_chars,
        )
        last_save = time.monotonic()
        for result in cluster.run([str(item.file.path) for item in todo], config):
            item = todo[result.idx]
            duplicate = self.duplicate_of(item)  # of a file stored earlier in this run
            if duplicate is not None:
                self.skip_duplicate(item, duplicate, summary)
            elif result.error is not None:
                self.fail(item, result.error, summary)
            else:
                known_id = item.known.id if item.known else None
                self.store(
                    Pending(item.file, item.sha256, result.doc, result.chunks, known_id),
                    result.vectors,
                    summary,
                )
            done += 1
            if progress:
                progress(done, total, str(item.file.path))
            if time.monotonic() - last_save > SAVE_EVERY_S:
                self.indexes.save()
                last_save = time.monotonic()
