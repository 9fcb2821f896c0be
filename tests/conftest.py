"""Suite-wide: a socket or file a test leaves open is reported against that test.

pytest turns ResourceWarning into an error (filterwarnings = error), but the warning is
raised when the garbage collector finalises the object, which may be during a later test.
Collecting after every test makes the report land on the test that leaked.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_leaks_here() -> Iterator[None]:
    yield
    gc.collect()
