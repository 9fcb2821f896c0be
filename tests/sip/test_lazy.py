"""``once``: computed on first read, kept on the instance, never recomputed."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass, field

import pytest

from gateway.sip.lazy import once


@dataclass(frozen=True)
class Thing:
    text: str
    reads: list[str] = field(default_factory=list, compare=False)

    @once
    def upper(self) -> str:
        """The text in capitals."""
        self.reads.append(self.text)
        return self.text.upper()


def test_a_value_is_computed_once_per_instance_and_kept_on_it() -> None:
    a, b = Thing("alice"), Thing("bob")
    assert (a.upper, a.upper, b.upper) == ("ALICE", "ALICE", "BOB")
    assert a.reads == ["alice"] and b.reads == ["bob"]
    assert a.__dict__["upper"] == "ALICE"  # later reads are a dictionary lookup, no call
    assert a == Thing("alice")  # not a field: equality and hashing ignore it
    with pytest.raises(FrozenInstanceError):
        a.text = "mallory"  # type: ignore[misc]


def test_the_class_attribute_is_the_descriptor_with_its_docstring() -> None:
    assert isinstance(Thing.upper, once) and Thing.upper.__doc__ == "The text in capitals."
