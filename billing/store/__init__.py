"""Billing storage: one SQL code path over SQLite (embedded, default) or PostgreSQL (asyncpg)."""
