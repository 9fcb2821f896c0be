"""Sign-in throttling per source address (sans-I/O): guessing passwords through the page is slow.

After ``limit`` failures within ``window`` seconds an address is refused
until the oldest of them leaves the window. Memory is bounded: the least
recently failing addresses are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict, deque


class LoginThrottle:
    def __init__(self, limit: int = 10, window: float = 60.0, max_tracked: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self._max = max_tracked
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def allowed(self, source: str, now: float) -> bool:
        failures = self._failures.get(source)
        if failures is None:
            return True
        while failures and now - failures[0] >= self.window:
            failures.popleft()
        if not failures:
            del self._failures[source]
            return True
        return len(failures) < self.limit

    def failed(self, source: str, now: float) -> None:
        failures = self._failures.setdefault(source, deque())
        failures.append(now)
        self._failures.move_to_end(source)
        while len(failures) > self.limit:
            failures.popleft()
        while len(self._failures) > self._max:
            self._failures.popitem(last=False)

    def succeeded(self, source: str) -> None:
        self._failures.pop(source, None)
