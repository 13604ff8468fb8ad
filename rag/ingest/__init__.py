"""Ingest: sync a folder into the workspace (parse, chunk, embed, store, index), locally or on Ray."""
