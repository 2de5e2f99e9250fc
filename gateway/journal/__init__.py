"""The SQLite journal: the store (events, incidents, outbox), its schema and WAL durability."""
