"""Retrieval and answer-quality evaluation (BEIR-format folders, SQuAD-derived sets)."""
