"""Where a CLIP model's weights come from: an open_clip tag, a local file, or none (random).

open_clip downloads a tag's weights on demand; offline, its Hugging Face download retries for
about 45 seconds before failing with a generic message. So a tag is resolved here first: the
local cache is checked without any network call, the hub is probed with a short connection
attempt, and missing weights end in one ``UserError`` that names the model and what to do.
The resolved file is then loaded by ``open_clip.create_model`` exactly like a user's own file.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import open_clip
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

from imsim.clip.preprocess import PREPROCESS_KEYS
from imsim.errors import UserError

RANDOM = "none"


@dataclass(frozen=True)
class Weights:
    """A resolved ``--clip-model`` / ``--pretrained`` pair, ready for ``open_clip.create_model``.

    ``source``: "tag", "file", "local-dir", "hf-hub" or "random". ``preprocess`` and
    ``quick_gelu`` are what the weights were trained with, where known (tags declare them).
    """

    model: str
    pretrained: str
    source: str
    path: str | None = None
    preprocess: dict = field(default_factory=dict)
    quick_gelu: bool = False
    note: str = ""

    @property
    def random(self) -> bool:
        return self.source == "random"


def _schema(model: str) -> str | None:
    for prefix in ("local-dir:", "hf-hub:"):
        if model.startswith(prefix):
            return prefix[:-1]
    return None


def _check_model(model: str) -> None:
    if _schema(model) is None and open_clip.get_model_config(model) is None:
        examples = ", ".join(m for m in ("ViT-B-32", "ViT-B-16-SigLIP", "MobileCLIP-S1"))
        raise UserError(
            f"unknown open_clip model {model!r} (e.g. {examples}; all: python -c "
            f"'import open_clip; print(open_clip.list_models())'), or local-dir:PATH / hf-hub:ID"
        )


def _tag_preprocess(cfg: dict) -> dict:
    # "size" comes from the model's own image tower, as open_clip does.
    return {k: cfg[k] for k in PREPROCESS_KEYS if k != "size" and cfg.get(k) is not None}


def _agreed_by_tags(model: str) -> tuple[dict, bool]:
    """Preprocessing and QuickGELU that every open_clip tag of ``model`` agrees on: what a file
    of that model's weights was most likely trained with."""
    cfgs = [get_pretrained_cfg(model, t) for t in list_pretrained_tags_by_model(model)]
    if not cfgs:
        return {}, False
    pre = [_tag_preprocess(c) for c in cfgs]
    same_pre = pre[0] if all(p == pre[0] for p in pre) else {}
    return same_pre, all(bool(c.get("quick_gelu")) for c in cfgs)


def _hub_file(cfg: dict) -> tuple[str, list[str]] | None:
    """(repo id, candidate file names) of a tag on the Hugging Face hub, in the order open_clip
    tries them: the safetensors twin first (``pretrained.download_pretrained_from_hf``)."""
    if not cfg.get("hf_hub"):
        return None
    repo, name = os.path.split(cfg["hf_hub"])  # "org/repo/" names the default file
    name = name or HF_WEIGHTS_NAME
    if name == HF_WEIGHTS_NAME:
        return repo, [HF_SAFE_WEIGHTS_NAME, name]
    stem, ext = os.path.splitext(name)
    return repo, ([stem + ".safetensors", name] if ext in (".bin", ".pth") else [name])


def cached_weights(cfg: dict) -> str | None:
    """The local file of a tag's weights when open_clip already downloaded it; no network."""
    hub = _hub_file(cfg)
    if hub is not None:
        from huggingface_hub import try_to_load_from_cache

        repo, names = hub
        for name in names:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    url = cfg.get("url", "")
    if url:
        target = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if target.is_file():
            return str(target)
    return None


def hub_reachable(url: str, timeout: float = 3.0) -> bool:
    """Can ``url``'s host be reached? False under ``HF_HUB_OFFLINE``; True when a proxy is set
    (a direct probe says nothing then, so the download itself decides)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    host = urlparse(url).hostname
    if not host:
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _download_url(cfg: dict) -> str:
    hub = _hub_file(cfg)
    if hub is not None:
        from huggingface_hub import constants

        return f"{constants.ENDPOINT}/{hub[0]}/resolve/main/{hub[1][-1]}"
    return cfg.get("url", "")


class WeightsUnavailable(UserError):
    """The weights exist but are not on this machine and cannot be downloaded from here."""


def _missing(model: str, tag: str, url: str, quick_gelu: bool = False) -> WeightsUnavailable:
    # A file carries no activation setting: weights trained with QuickGELU need the model
    # name that has it when they are passed as a file.
    as_file = model
    if quick_gelu and open_clip.get_model_config(f"{model}-quickgelu") is not None:
        as_file = f"{model}-quickgelu"
    return WeightsUnavailable(
        f"CLIP weights for {model} ({tag}) are not in the local cache and {urlparse(url).hostname}"
        f" cannot be reached: run once with internet to cache them, or download {url} and pass"
        f" --clip-model {as_file} --pretrained PATH (--pretrained none = random weights, for"
        f" speed work only)"
    )


def resolve(model: str, pretrained: str, download: bool = True) -> Weights:
    """Resolve ``--clip-model`` and ``--pretrained`` to a weights file (or random weights).

    With ``download=False`` nothing is fetched: a tag that is not cached resolves to a
    ``Weights`` with ``path=None`` when the hub is reachable, and raises when it is not.
    """
    _check_model(model)
    schema = _schema(model)
    if pretrained == RANDOM:
        note = "random weights: for speed work only, never an accuracy figure"
        return Weights(model, pretrained, "random", note=note)
    if schema == "local-dir":
        folder = Path(model.split(":", 1)[1])
        if not (folder / "open_clip_config.json").is_file():
            raise UserError(f"{model}: no open_clip_config.json in {folder}")
        # open_clip would quietly fall back to random weights without a weights file.
        if not any(any(folder.glob(f"*{ext}")) for ext in (".safetensors", ".bin", ".pth")):
            raise UserError(f"{model}: no weights file (.safetensors, .bin, .pth) in {folder}")
        return Weights(model, pretrained, "local-dir", str(folder), note="--pretrained ignored")
    if schema == "hf-hub":
        url = f"https://huggingface.co/{model.split(':', 1)[1]}"
        if not hub_reachable(url):
            raise _missing(model, "hf-hub", url)
        return Weights(model, pretrained, "hf-hub", note="--pretrained ignored")
    cfg = get_pretrained_cfg(model, pretrained)
    if cfg:
        kw = {"preprocess": _tag_preprocess(cfg), "quick_gelu": bool(cfg.get("quick_gelu"))}
        path = cached_weights(cfg)
        if path is None:
            url = _download_url(cfg)
            if not hub_reachable(url):
                raise _missing(model, pretrained, url, kw["quick_gelu"])
            if download:
                try:
                    path = open_clip.download_pretrained(cfg)
                except Exception as e:  # network and hub errors of every kind
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise UserError(f"downloading {model} ({pretrained}) failed: {first}") from e
        return Weights(model, pretrained, "tag", path, **kw)
    if Path(pretrained).is_file():
        pre, quick = _agreed_by_tags(model)
        note = "preprocess from the model's tags" if pre else "open_clip's default preprocess"
        return Weights(model, pretrained, "file", pretrained, pre, quick, note)
    known = list_pretrained_tags_by_model(model)
    tags = ", ".join(known[:6]) + (", ..." if len(known) > 6 else "") if known else "none known"
    raise UserError(
        f"--pretrained {pretrained!r} is neither a file nor an open_clip tag of {model} "
        f"(tags: {tags}); or use --pretrained none for random weights"
    )


def unavailable(clip_model: str = "ViT-B-32", pretrained: str = "openai") -> str | None:
    """Why the CLIP methods cannot run here (None when they can), without downloading.

    Only missing weights count: a wrong model name or ``--pretrained`` value still raises, so
    a typo is reported rather than skipped."""
    try:
        resolve(clip_model, pretrained, download=False)
    except WeightsUnavailable as e:
        return str(e)
    return None
