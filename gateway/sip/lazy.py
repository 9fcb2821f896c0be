"""``once``: a value computed on first read and then kept on the instance, like
``functools.cached_property`` without its lock.

On Python 3.11 ``cached_property.__get__`` takes a lock on every first read (removed in
3.12): about two microseconds, forty times per call set-up, for objects that one thread
builds and reads. After the first read the value sits in the instance's ``__dict__``,
which Python consults before a non-data descriptor, so later reads cost a dictionary
lookup and no call at all. The class must have a ``__dict__`` (no ``slots=True``); frozen
dataclasses are fine, since the value is stored without going through ``__setattr__``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class once(Generic[T]):  # noqa: N801 - a decorator, named like property
    __slots__ = ("func", "name", "__doc__")

    def __init__(self, func: Callable[[Any], T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> once[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> once[T] | T:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value
