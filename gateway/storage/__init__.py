"""Durable state behind small interfaces: embedded SQLite by default, PostgreSQL/Redis at scale."""
