"""The method registry: one name per method, created from a ``--methods`` entry.

A method is one module that decorates its factory with ``@register("name")``; the factory takes
an optional argument (the part after ``:`` in ``name:ARG``, e.g. a checkpoint path) and the
shared model options (``--clip-model`` and the like) as keyword arguments, and ignores options
it does not use. A method that needs something the machine may lack (downloaded weights) gives
``available``: called with the same options, it returns why the method cannot run, or None;
``--methods all`` then skips it with a one-line note, while naming it still reports the error.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from imsim.errors import UserError
from imsim.methods.base import Embedder

Factory = Callable[..., Embedder]
Availability = Callable[..., str | None]


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Factory
    in_all: bool  # part of ``--methods all`` (methods that need a checkpoint are not)
    help: str
    available: Availability | None = None  # options -> reason it cannot run here, or None


_REGISTRY: dict[str, Entry] = {}

# Modules whose import registers methods; a new method is one module plus one line here.
METHOD_MODULES = (
    "imsim.methods.pixels",
    "imsim.methods.color_hist",
    "imsim.methods.triplet",
    "imsim.methods.contrastive",
    "imsim.methods.autoencoder",
    "imsim.methods.classical",
    "imsim.methods.clip",
)


def register(
    name: str, *, in_all: bool = True, help: str = "", available: Availability | None = None
) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        doc = help or (factory.__doc__ or "").strip()
        _REGISTRY[name] = Entry(name, factory, in_all, doc, available)
        return factory

    return deco


def _load() -> None:
    for mod in METHOD_MODULES:
        importlib.import_module(mod)


def list_methods() -> dict[str, Entry]:
    _load()
    return dict(_REGISTRY)


def parse_methods(text: str, **options: object) -> list[str]:
    """Expand a ``--methods`` value (``a,b:ARG`` or ``all``) into entries.

    ``all`` leaves out methods whose ``available`` check gives a reason under ``options`` (the
    command's arguments), printing that reason as one line on stderr.
    """
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError("--methods is empty")
    out: list[str] = []
    skipped: dict[str, list[str]] = {}  # reason -> methods
    for item in items:
        if item != "all":
            out.append(item)
            continue
        for n, e in list_methods().items():
            if not e.in_all:
                continue
            reason = e.available(**options) if e.available else None
            if reason:
                skipped.setdefault(reason, []).append(n)
            else:
                out.append(n)
    for reason, names in skipped.items():
        print(f"note: --methods all skips {', '.join(names)}: {reason}", file=sys.stderr)
    return list(dict.fromkeys(out))


def create_method(item: str, **options: object) -> Embedder:
    """Create a method from ``name`` or ``name:ARG``."""
    name, _, arg = item.partition(":")
    entries = list_methods()
    if name not in entries:
        raise UserError(f"unknown method {name!r}; known: {', '.join(sorted(entries))}")
    factory = entries[name].factory
    return factory(arg, **options) if arg else factory(**options)
