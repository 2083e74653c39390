"""Name -> factory registries (as timm's ``register_model`` / ``list_models``), one helper for every name set.

Probes, adaptations, normalisation steps and protocols each keep one :class:`Registry`; the
command line's choices and help are generated from them, so adding one is one registration.

Examples
--------
>>> from cnnfeat.registry import Registry
>>> colours = Registry[str]("colour")
>>> @colours.register("red", help="the colour of the sky at dusk")
... def _red() -> str:
...     return "#f00"
>>> colours.names(), colours.get("red")()
(['red'], '#f00')
>>> colours.get("blue")
Traceback (most recent call last):
cnnfeat.exceptions.ConfigError: unknown colour 'blue'; choose from red
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from cnnfeat.exceptions import ConfigError, did_you_mean

__all__ = ["Registry", "parse_query"]

#: a value in a name's query (``?<param>=<value>&...``): ``none``, an int, a float or text
QueryValue = int | float | str | None

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order, each with a line of help."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._usage: dict[str, str] = {}

    def register(self, name: str, *, help: str = "", usage: str = "", overwrite: bool = False) -> Callable[[T], T]:
        """A decorator that registers its argument under ``name`` and returns it unchanged."""

        def add(entry: T) -> T:
            self.add(name, entry, help=help, usage=usage, overwrite=overwrite)
            return entry

        return add

    def add(self, name: str, entry: T, *, help: str = "", usage: str = "", overwrite: bool = False) -> None:
        """Register ``entry`` under ``name``; a second entry of that name needs ``overwrite=True``.

        ``help`` is a line for ``--help``; ``usage`` how a command line spells the name when it takes
        an argument (``kfold:<k>``).
        """
        if name in self._entries and not overwrite:
            raise ConfigError(f"a {self.what} named {name!r} is already registered; pass overwrite=True to replace it")
        self._entries[name] = entry
        self._help[name] = help
        self._usage[name] = usage or name

    def get(self, name: str) -> T:
        """The entry of ``name``; a name nobody registered is a :class:`~cnnfeat.exceptions.ConfigError`."""
        if name not in self._entries:
            raise ConfigError(f"unknown {self.what} {name!r}{did_you_mean(name, self._entries)}; choose from {', '.join(self)}")
        return self._entries[name]

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def help(self, name: str) -> str:
        return self._help[name]

    def describe(self) -> str:
        """``usage (help), usage, ...``: the names as typed, with their help, for a command line's ``--help``."""
        return ", ".join(f"{self._usage[n]} ({self._help[n]})" if self._help[n] else self._usage[n] for n in self)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def parse_query(query: str, where: str) -> dict[str, QueryValue]:
    """The parameters of a name's ``?<param>=<value>&...`` part (``query`` is what follows the ``?``).

    A value is ``none`` (None), else an int, a float, or the text itself. ``where`` names the text in
    the error a malformed item raises.

    >>> parse_query("regularization=0.1&n_iter=5&mu=none", "adaptation 'ot?...'")
    {'regularization': 0.1, 'n_iter': 5, 'mu': None}
    """
    params: dict[str, QueryValue] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{where}: write ?<param>=<value>&..., got {item!r}")
        params[key] = _query_value(value)
    return params


def _query_value(text: str) -> QueryValue:
    if text.lower() == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
