"""Similarity methods: the embedder interface, the registry and the built-in methods."""

from imsim.methods.base import (
    Embedder,
    MethodSpec,
    NetworkEmbedder,
    Scorer,
    embed_all,
    reference_runner,
)
from imsim.methods.registry import (
    check_method_flags,
    create_method,
    distinct_ids,
    list_methods,
    method_from_args,
    parse_methods,
    register,
)

__all__ = [
    "Embedder",
    "MethodSpec",
    "NetworkEmbedder",
    "Scorer",
    "check_method_flags",
    "create_method",
    "distinct_ids",
    "embed_all",
    "list_methods",
    "method_from_args",
    "parse_methods",
    "reference_runner",
    "register",
]
