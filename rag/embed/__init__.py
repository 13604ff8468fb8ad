"""Embed: turn chunks and questions into vectors with the configured sentence-transformers model (torch or
ONNX Runtime)."""
