"""Storage: the SQL database that is the source of truth (ORM, engine and migrations, queries, the one-writer
lock)."""
