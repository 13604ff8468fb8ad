"""Answer: one question from retrieval to a stored Answer, with its verdict (answered, declined, held
back)."""
