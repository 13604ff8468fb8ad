"""Attribute: from attention masses to chunk shares, evidence spans and the hallucination risk."""
