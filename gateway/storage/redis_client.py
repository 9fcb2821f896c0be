"""One way to open Redis: a pool that makes a burst wait for a connection instead of failing."""

from __future__ import annotations

from typing import Any

# redis-py's default pool raises "Too many connections" past 100 at once: at a few hundred
# call set-ups a second that is a refused call. Waiting a little for a free one is not.
MAX_CONNECTIONS = 100
WAIT_FOR_CONNECTION_S = 10.0


def redis_client(url: str, **options: Any) -> Any:
    """An asyncio Redis client for ``url`` (options such as decode_responses pass through)."""
    import redis.asyncio as redis

    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=WAIT_FOR_CONNECTION_S, **options
    )
    return redis.Redis.from_pool(pool)  # the client owns the pool: closing it closes the connections
