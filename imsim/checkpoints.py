"""Checkpoint files: safetensors weights beside a JSON config, written atomically, read safely.

A checkpoint is ``NAME.safetensors`` (tensors only: loading it cannot run code, unlike a pickle)
and ``NAME.json``: the format tag, what the weights are (method, architecture, preprocessing,
data, split, recipe, epoch, validation score), the SHA-256 of the weights file and the SHA-256 of
the config itself (``config_sha256``, over every other field). A config paired with the wrong or
a half-written weights file, or one edited by hand (a changed mean/std gives chance accuracy
without any error), is refused instead of silently loaded; so is a model config whose
preprocessing is unusable (std 0, non-finite numbers). Both files are written to a temporary
name, flushed to disk and renamed into place (``imsim.files``), weights first.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from imsim.errors import UserError
from imsim.files import write_bytes_atomic, write_json_atomic

FORMAT = "imsim.checkpoint/1"


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, config) paths for ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def config_sha256(doc: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint config: every field but ``config_sha256``, as canonical JSON
    (sorted keys, no spaces, ASCII), so it does not depend on how the file is laid out."""
    body = {k: v for k, v in doc.items() if k != "config_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """Write the weights and their config; returns the weights path."""
    weights, cfg = checkpoint_paths(path)
    data = save_safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    write_bytes_atomic(weights, data)
    doc = {
        "format": FORMAT,
        **config,
        "weights_file": weights.name,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
    }
    doc = json.loads(json.dumps(doc, default=str))  # hash exactly what the file will hold
    doc["config_sha256"] = config_sha256(doc)
    write_json_atomic(cfg, doc)
    return weights


def preprocess_problem(pre: Any) -> str | None:
    """What makes a model config's ``preprocess`` section unusable, or None."""
    if not isinstance(pre, dict):
        return "preprocess must be an object"
    size = pre.get("input_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        return f"preprocess.input_size must be an integer >= 1, got {size!r}"
    for key in ("mean", "std"):
        v = pre.get(key)
        if not (
            isinstance(v, list)
            and len(v) == 3
            and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
            and all(math.isfinite(x) for x in v)
        ):
            return f"preprocess.{key} must be 3 finite numbers, got {v!r}"
    if min(pre["std"]) <= 0:
        return f"preprocess.std must be > 0, got {pre['std']}"
    return None


def read_config(path: str | Path) -> dict[str, Any]:
    """The JSON config of a checkpoint, checked for format."""
    weights, cfg = checkpoint_paths(path)
    if not cfg.is_file():
        raise UserError(
            f"checkpoint config {cfg} not found (a checkpoint is {weights.name} plus {cfg.name})"
        )
    try:
        doc = json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"checkpoint config {cfg} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise UserError(
            f"{cfg} is not an imsim checkpoint config (format {found!r}, want {FORMAT})"
        )
    if "config_sha256" not in doc:
        raise UserError(
            f"{cfg} has no config_sha256: it predates checksummed configs or was edited; "
            "retrain it with python -m train"
        )
    if config_sha256(doc) != doc["config_sha256"]:
        raise UserError(
            f"{cfg} was changed after it was written (its config_sha256 differs): an edited "
            "field such as preprocess mean/std would silently give wrong embeddings; restore "
            "the file or retrain"
        )
    if doc.get("kind", "model") == "model" and "preprocess" in doc:
        problem = preprocess_problem(doc["preprocess"])
        if problem:
            raise UserError(f"{cfg}: {problem}")
    return doc


def load_checkpoint(
    path: str | Path, method: str | None = None, kind: str = "model"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read weights and config; refuses a wrong, mismatched or corrupted pair with one line."""
    weights, cfg_path = checkpoint_paths(path)
    cfg = read_config(path)
    if cfg.get("kind", "model") != kind:
        raise UserError(f"{cfg_path} holds a {cfg.get('kind')!r} checkpoint, not a {kind!r} one")
    if method is not None and cfg.get("method") != method:
        raise UserError(
            f"{weights} is a {cfg.get('method')!r} checkpoint, not a {method!r} one; "
            f"name it as {cfg.get('method')}:{weights}"
        )
    if not weights.is_file():
        raise UserError(f"checkpoint weights {weights} not found")
    data = weights.read_bytes()
    if hashlib.sha256(data).hexdigest() != cfg.get("weights_sha256"):
        raise UserError(
            f"{weights} does not match {cfg_path.name} (SHA-256 differs): the weights file is "
            "corrupted, truncated or from another run"
        )
    try:
        tensors = load_safetensors_bytes(data)
    except (SafetensorError, ValueError) as e:
        raise UserError(f"{weights} is not a readable safetensors file ({e})") from None
    return tensors, cfg


def load_state(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict strictly, turning missing/unexpected/misshapen tensors into one line."""
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = " ".join(str(e).split())[:300]
        raise UserError(
            f"{source} does not fit the architecture its config names: {first}"
        ) from None
