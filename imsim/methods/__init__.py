"""Similarity methods: the embedder interface, the registry and the built-in methods."""

from imsim.methods.base import Embedder, MethodSpec, Scorer, embed_all
from imsim.methods.registry import create_method, list_methods, parse_methods, register

__all__ = [
    "Embedder",
    "MethodSpec",
    "Scorer",
    "create_method",
    "embed_all",
    "list_methods",
    "parse_methods",
    "register",
]
