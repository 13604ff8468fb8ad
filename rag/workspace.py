"""A workspace (``RAG_HOME``) put together from what it holds: the database (rag.storage.database), the
one-writer lock (rag.storage.writelock), the derived indexes (rag.index.derived), the writes of whole
documents (rag.ingest.documents), and the embedder, loaded on first use. ``Rag`` and the API hand each
pipeline stage only the parts it uses."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from rag.config import Settings
from rag.index.derived import IndexSet
from rag.ingest.documents import DocumentStore
from rag.storage.database import Database
from rag.storage.writelock import WriteLock

if TYPE_CHECKING:
    from rag.embed.embedder import Embedder


class Workspace:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.database = Database(self.settings)
        self.write_lock = WriteLock(self.settings.home_dir, self.database.check_writable)
        self.indexes = IndexSet(self.settings, self.database, self.write_lock, lambda: self.embedder.dim)
        self.documents = DocumentStore(self.database, self.write_lock, self.indexes)

    @cached_property
    def embedder(self) -> Embedder:
        # Imported here: sentence-transformers takes seconds to import, and `rag index check`,
        # `rag docs list` and the crash tests' checks never need the model.
        from rag.embed.embedder import Embedder

        return Embedder.from_settings(self.settings)

    def load_embedder(self) -> Embedder:
        """The embedder, for the stages that load it only when they need it."""
        return self.embedder

    def close(self) -> None:
        """Let go of the loaded snapshot (a writer may then collect it) and of the database."""
        self.indexes.close()
        self.database.close()
