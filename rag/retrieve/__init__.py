"""Retrieve: dense, lexical or hybrid search under metadata filters, fused into one ranking."""
