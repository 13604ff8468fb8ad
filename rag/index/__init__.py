"""Index: the derived search indexes kept in step with the database: FAISS vectors, BM25, published
snapshots."""
