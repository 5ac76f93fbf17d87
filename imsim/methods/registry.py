"""The method registry: one name per method, created from a ``--methods`` entry.

A method is one module that decorates its factory with ``@register("name")``. The factory takes
an optional positional argument (the part after ``:`` in ``name:ARG``, e.g. a checkpoint path)
and declares every option it takes as a keyword argument (``clip_model``, ``device``...): those
are the method's options (``Entry.options``), the only ones ``create_method`` passes, so a
programmatic call with an option the method does not take is a ``TypeError``, and a command-line
flag the user set that no requested method takes is a one-line ``UserError``
(``check_method_flags``) instead of being swallowed. A method that needs something the machine
may lack (downloaded weights) gives ``available``: called with its options, it returns why the
method cannot run, or None; ``--methods all`` then skips it with a one-line note, while naming it
still reports the error.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imsim.errors import UserError
from imsim.methods.base import Embedder

Factory = Callable[..., Embedder]
Availability = Callable[..., str | None]


def declared_options(factory: Factory) -> tuple[str, ...]:
    """The keyword arguments a factory takes besides its ``:ARG`` (its first positional one)."""
    params = list(inspect.signature(factory).parameters.values())
    if params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        params = params[1:]  # the ``name:ARG`` argument
    kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in params if p.kind in kinds and not p.name.startswith("_"))


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Factory
    in_all: bool  # part of ``--methods all`` (methods that need a checkpoint are not)
    help: str
    available: Availability | None = None  # options -> reason it cannot run here, or None
    # The keyword options the factory takes (default: read from its signature).
    options: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.options:
            object.__setattr__(self, "options", declared_options(self.factory))


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
    """Register ``factory`` as method ``name``; its keyword arguments are the method's options
    (a ``**kwargs`` factory is refused: it would swallow options meant for other methods)."""

    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        sig = inspect.signature(factory)
        if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
            raise TypeError(f"method {name!r}: declare its options as keyword arguments")
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


def entry(item: str) -> Entry:
    """The registry entry of ``name`` or ``name:ARG``; a one-line error for an unknown name."""
    name = item.partition(":")[0]
    entries = list_methods()
    if name not in entries:
        raise UserError(f"unknown method {name!r}; known: {', '.join(sorted(entries))}")
    return entries[name]


def options_for(item: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``options`` (e.g. a command's arguments) that ``item``'s method takes."""
    takes = entry(item).options
    return {k: v for k, v in options.items() if k in takes}


def parse_methods(text: str, **options: object) -> list[str]:
    """Expand a ``--methods`` value (``a,b:ARG`` or ``all``) into entries.

    ``all`` leaves out methods whose ``available`` check gives a reason under ``options`` (the
    command's arguments; each check sees the options its method takes), printing that reason as
    one line on stderr.
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
            reason = None
            if e.available:  # the check takes the options it names (a subset of the method's)
                checks = set(inspect.signature(e.available).parameters)
                given = options_for(n, options)
                reason = e.available(**{k: v for k, v in given.items() if k in checks})
            if reason:
                skipped.setdefault(reason, []).append(n)
            else:
                out.append(n)
    for reason, names in skipped.items():
        print(f"note: --methods all skips {', '.join(names)}: {reason}", file=sys.stderr)
    return list(dict.fromkeys(out))


def create_method(item: str, **options: object) -> Embedder:
    """Create a method from ``name`` or ``name:ARG`` with options it declares.

    An option the method does not take is a ``TypeError`` (a programming error: commands pass
    their flags through ``method_from_args``, which keeps each method's own).
    """
    e = entry(item)
    unknown = sorted(set(options) - set(e.options))
    if unknown:
        takes = ", ".join(e.options) or "no options"
        raise TypeError(f"method {e.name!r} takes {takes}; not {', '.join(unknown)}")
    _, _, arg = item.partition(":")
    return e.factory(arg, **options) if arg else e.factory(**options)


def given_flags(args: argparse.Namespace) -> dict[str, str]:
    """The method-option flags (``imsim.cli.METHOD_FLAGS``) set to something other than their
    default: option name -> flag."""
    from imsim.cli import METHOD_FLAGS

    given = {}
    for name, default in METHOD_FLAGS.items():
        if name in vars(args) and getattr(args, name) != default:
            given[name] = "--" + name.replace("_", "-")
    return given


def check_method_flags(items: Sequence[str], args: argparse.Namespace) -> None:
    """One-line error for a method-option flag the user set that none of ``items`` takes."""
    names = list(dict.fromkeys(entry(i).name for i in items))
    takes = {o for n in names for o in list_methods()[n].options}
    for option, flag in given_flags(args).items():
        if option in takes:
            continue
        users = sorted(n for n, e in list_methods().items() if option in e.options)
        raise UserError(
            f"{flag} does not apply to {', '.join(names)} (it is an option of "
            f"{', '.join(users) or 'no method'}); drop it or add such a method"
        )


def method_from_args(
    item: str, args: argparse.Namespace, items: Sequence[str] | None = None, **overrides: Any
) -> Embedder:
    """Create ``item`` from a command's parsed flags: only the options its method takes, after
    ``check_method_flags`` over ``items`` (default: this one method). ``overrides`` replace
    flags (export: ``device="cpu"``)."""
    check_method_flags(items or [item], args)
    return create_method(item, **options_for(item, {**vars(args), **overrides}))


def distinct_ids(ids: Sequence[str], hashes: Sequence[str | None]) -> list[str]:
    """``ids`` of several method instances made distinct: where two share one, each gets its
    weights hash's first 8 hex digits (``triplet.cifar10-r20.530b5828``), and a numbered
    suffix where even those agree (the same weights given twice)."""
    out = list(ids)
    for mid in {m for m in ids if ids.count(m) > 1}:
        for i, m in enumerate(ids):
            if m == mid:
                out[i] = f"{m}.{hashes[i][:8]}" if hashes[i] else m
    hashed, seen = list(out), {}
    for i, m in enumerate(hashed):
        if hashed.count(m) > 1:
            seen[m] = seen.get(m, 0) + 1
            out[i] = f"{m}-{seen[m]}"
    return out
