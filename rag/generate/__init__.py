"""Generate: the decoder that answers from the retrieved chunks and collects attention masses in the same
pass."""
