"""User lookups are cached, and changes by this process or another (the CLI) come through."""

from __future__ import annotations

from pathlib import Path

from gateway.storage.sqlite import SqliteDatabase
from gateway.users import RECHECK_S, USERS_SCHEMA, SqliteUserStore, make_user


async def test_changes_here_at_once_and_from_another_process_within_the_recheck_interval(tmp_path: Path) -> None:
    now = [100.0]
    ours = SqliteDatabase(tmp_path / "gateway.db", USERS_SCHEMA)
    theirs = SqliteDatabase(tmp_path / "gateway.db", USERS_SCHEMA)  # as the CLI opens it, beside the gateway
    store = SqliteUserStore(ours, clock=lambda: now[0])
    cli = SqliteUserStore(theirs)
    try:
        alice = make_user("alice@acme", "hq", "correct horse", number="201")
        assert await store.get("acme", "alice") is None
        await store.add(alice)
        assert await store.get("acme", "alice") == alice  # our own change: seen at once
        assert await store.by_number("acme", "201") == alice

        bob = make_user("bob@acme", "hq", "battery staple")
        assert await store.get("acme", "bob") is None
        await cli.add(bob)
        await cli.remove("acme", "alice")
        # A user added elsewhere is found at once (a name not found is not cached)...
        now[0] += RECHECK_S / 2
        assert await store.get("acme", "bob") == bob
        # ...one removed elsewhere stands until the interval is over...
        assert await store.get("acme", "alice") == alice
        # ...and then is gone.
        now[0] += RECHECK_S * 1.5
        assert await store.get("acme", "alice") is None and await store.by_number("acme", "201") is None

        # A changed password (delete and add again, as the CLI does) comes through as well.
        await cli.remove("acme", "bob")
        bob2 = make_user("bob@acme", "hq", "another password")
        await cli.add(bob2)
        now[0] += RECHECK_S * 1.5
        got = await store.get("acme", "bob")
        assert got == bob2 and got is not None and got.ha1_md5 != bob.ha1_md5
    finally:
        store.close()
        cli.close()
        ours.close()
        theirs.close()
