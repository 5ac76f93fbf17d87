"""The search index: plain files in one folder, written atomically, updated incrementally.

``INDEX_DIR/embeddings.npy`` holds one L2-normalized row per gallery item (float32 or float16);
``INDEX_DIR/manifest.json`` holds, row by row, each item's key, label and fingerprint, plus the
method (its id, the model options it declares and its description), the preprocessing, the
gallery source and the SHA-256 of ``embeddings.npy``. Both are readable without this package
(numpy and a JSON parser).

Building writes a complete new folder beside the target and renames it into place, so a reader
(or an interrupted build) never sees a half-written index. Only a folder that is provably an index
written here (nothing in it but ``manifest.json`` with this format tag and ``embeddings.npy``) is
ever replaced, with or without ``--rebuild``: any other folder is refused, so no one's files are
lost to a mistyped ``--out``. Re-building the same gallery with the
same method re-uses the rows of items whose key and fingerprint are unchanged and embeds only new
or changed ones; removed items are dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from imsim.errors import UserError
from imsim.files import sha256_file, write_atomic, write_text_atomic
from imsim.methods.base import Embedder, l2_normalize
from imsim.methods.registry import options_for
from imsim.results import environment
from search.gallery import PREPROCESSING, Gallery, Item, display_key

FORMAT = "imsim.search-index/1"
MANIFEST = "manifest.json"
EMBEDDINGS = "embeddings.npy"
DTYPES = ("float32", "float16")
DEFAULT_IMAGE_SIZE = 224
# Method options and description keys that only say where and how fast a model runs; every
# other option a method declares chooses the model (recorded, and re-applied at query time).
RUNTIME_KEYS = frozenset({"device", "batch_size", "embed_seconds"})


def _strip_runtime(obj: Any) -> Any:
    """A method description without the keys that vary between runs of the same model."""
    if isinstance(obj, dict):
        return {k: _strip_runtime(v) for k, v in obj.items() if k not in RUNTIME_KEYS}
    if isinstance(obj, list | tuple):
        return [_strip_runtime(v) for v in obj]
    return obj


def model_options(item: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options among ``options`` that ``item``'s method declares and that choose its model
    (not where or how fast it runs)."""
    return {k: v for k, v in options_for(item, options).items() if k not in RUNTIME_KEYS}


def method_record(item: str, options: dict[str, Any], embedder: Embedder) -> dict[str, Any]:
    """What the manifest says about the method; two indexes are compatible when these match
    (``same_method``)."""
    return {
        "item": item,
        "id": embedder.method_id,
        "name": embedder.spec.name,
        "options": model_options(item, options),
        "embedding_dim": int(embedder.spec.embedding_dim),
        "text": embedder.text_encoder,
        "describe": json.loads(json.dumps(_strip_runtime(embedder.describe()), default=str)),
    }


def same_method(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two manifest method records describe one model. The id is derived from the rest,
    and options a method does not declare are ignored (indexes written before methods declared
    their options recorded every model flag)."""

    def key(m: dict[str, Any]) -> dict[str, Any]:
        options = model_options(m["item"], m.get("options") or {})
        return {**{k: v for k, v in m.items() if k != "id"}, "options": options}

    return key(a) == key(b)


@dataclass
class Index:
    """A loaded index: float32 L2-normalized ``vectors`` and the manifest's rows and settings."""

    path: Path
    manifest: dict[str, Any]
    vectors: np.ndarray
    items: list[Item] = field(init=False)

    def __post_init__(self) -> None:
        self.items = [Item(r["key"], r["label"], r["fingerprint"]) for r in self.manifest["items"]]

    @property
    def method(self) -> dict[str, Any]:
        return self.manifest["method"]

    @property
    def image_size(self) -> int:
        return int(self.manifest["preprocessing"]["image_size"])

    def __len__(self) -> int:
        return len(self.items)

    def position(self, key: str) -> int:
        """Row of the item with this key; UserError if there is none."""
        try:
            return self._positions[key]
        except KeyError:
            raise UserError(f"{key!r} is not an item of the index {self.path}") from None

    @property
    def _positions(self) -> dict[str, int]:
        """Rows by key, and by the key as printed (``display_key``) where that differs."""
        if not hasattr(self, "_pos"):
            self._pos = {display_key(it.key): i for i, it in enumerate(self.items)}
            self._pos.update({it.key: i for i, it in enumerate(self.items)})
        return self._pos


def load_index(path: str | Path, verify: bool = True) -> Index:
    """Read an index folder; checks format, row count, dimension and (by default) the checksum."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise UserError(
            f"{path} is not a search index (no {MANIFEST}); build one with python -m search index"
        )
    try:
        manifest = json.loads(mpath.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{mpath} is unreadable ({e}); rebuild the index") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
    if fmt != FORMAT:
        raise UserError(f"{mpath} has format {fmt!r}, expected {FORMAT!r}")
    problem = manifest_problem(manifest)
    if problem:
        raise UserError(f"{mpath} is not a valid index manifest ({problem}); rebuild the index")
    emb = manifest["embeddings"]
    epath = path / emb["file"]
    if not epath.is_file():
        raise UserError(f"{epath} is missing; rebuild the index")
    if verify and sha256_file(epath) != emb["sha256"]:
        raise UserError(f"{epath} does not match the checksum in {MANIFEST}; rebuild the index")
    try:
        vectors = np.load(epath, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{epath} is not a readable .npy file ({e}); rebuild the index") from e
    n, d = len(manifest["items"]), manifest["method"]["embedding_dim"]
    if vectors.shape != (n, d):
        raise UserError(f"{epath} has shape {vectors.shape}, the manifest says ({n}, {d})")
    return Index(path, manifest, np.ascontiguousarray(vectors, dtype=np.float32))


def manifest_problem(m: dict[str, Any]) -> str | None:
    """What is wrong with a manifest's structure (the fields this package reads), or None."""

    def is_int(v: Any, low: int) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    emb, method, pre = m.get("embeddings"), m.get("method"), m.get("preprocessing")
    if not isinstance(emb, dict) or emb.get("file") != EMBEDDINGS:
        return f"embeddings.file must be {EMBEDDINGS!r}"
    if not isinstance(emb.get("sha256"), str) or emb.get("dtype") not in DTYPES:
        return f"embeddings needs a sha256 string and a dtype in {DTYPES}"
    if not isinstance(method, dict) or not isinstance(method.get("item"), str):
        return "method.item must be a string"
    if not is_int(method.get("embedding_dim"), 1) or not isinstance(method.get("options"), dict):
        return "method needs an integer embedding_dim >= 1 and an options object"
    if not isinstance(pre, dict) or not is_int(pre.get("image_size"), 1):
        return "preprocessing.image_size must be an integer >= 1"
    if not isinstance(m.get("source"), dict):
        return "source must be an object"
    items = m.get("items")
    if not isinstance(items, list):
        return "items must be a list"
    for i, it in enumerate(items):
        if not (
            isinstance(it, dict)
            and isinstance(it.get("key"), str)
            and isinstance(it.get("fingerprint"), str)
            and (it.get("label") is None or isinstance(it.get("label"), str))
        ):
            return f"items[{i}] needs a string key and fingerprint and a string or null label"
    return None


def not_an_index(path: Path) -> str | None:
    """Why ``path`` may not be replaced by a new index, or None when it may.

    It may when it is an empty folder, or a folder holding nothing but this tool's two files with
    a manifest of this format: what ``write_index`` writes. Anything else (a file, a link, a
    web app's ``manifest.json``, a user's notes beside an index) is not ours to delete.
    """
    if path.is_symlink():
        return "is a symbolic link"
    if not path.is_dir():
        return "is a file, not a folder"
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return None
    extra = [n for n in names if n not in (MANIFEST, EMBEDDINGS)]
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        return f"holds files that are not part of a search index ({shown})"
    if MANIFEST not in names:
        return f"has no {MANIFEST}"
    try:
        fmt = json.loads((path / MANIFEST).read_bytes()).get("format")
    except (OSError, ValueError, AttributeError):
        return f"has a {MANIFEST} that is not a search index's"
    if fmt != FORMAT:
        return f"has a {MANIFEST} of format {fmt!r}, not a search index's ({FORMAT})"
    return None


def check_replaceable(out: Path) -> None:
    """UserError unless ``out`` is absent, empty, or an index written here (``not_an_index``)."""
    if not (out.exists() or out.is_symlink()):
        return
    why_not = not_an_index(out)
    if why_not:
        raise UserError(
            f"--out {out} is not a search index ({why_not}); only a folder written by "
            "python -m search index is ever replaced, so choose another --out"
        )


@dataclass
class BuildReport:
    index: Index
    reused: int
    embedded: int
    removed: int
    skipped: list[dict[str, str]]


def build_index(
    gallery: Gallery,
    out: str | Path,
    embedder: Embedder,
    method_item: str,
    options: dict[str, Any],
    image_size: int | None = None,
    dtype: str = "float32",
    batch_size: int = 256,
    rebuild: bool = False,
) -> BuildReport:
    """Embed the gallery into ``out``, re-using rows of an existing compatible index there."""
    t0 = time.perf_counter()
    out = Path(out)
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {DTYPES}, got {dtype!r}")
    size = image_size or gallery.native_size or embedder.spec.input_size or DEFAULT_IMAGE_SIZE
    method = method_record(method_item, options, embedder)
    preprocessing = {"image_size": int(size), "decode": PREPROCESSING, "normalize": "L2"}

    old: Index | None = None
    if out.exists() or out.is_symlink():
        check_replaceable(out)
        if (out / MANIFEST).is_file() and not rebuild:
            old = load_index(out)
            changed = [
                k
                for k, same in (
                    ("method", same_method(method, old.method)),
                    ("preprocessing", preprocessing == old.manifest["preprocessing"]),
                    ("dtype", dtype == old.manifest["embeddings"]["dtype"]),
                )
                if not same
            ]
            if changed:
                raise UserError(
                    f"{out} was built with other {' and '.join(changed)} settings; pass "
                    "--rebuild to replace it or choose another --out"
                )

    reuse: dict[tuple[str, str], int] = {}
    if old is not None:
        reuse = {(it.key, it.fingerprint): i for i, it in enumerate(old.items)}
    todo = [i for i, it in enumerate(gallery.items) if (it.key, it.fingerprint) not in reuse]
    fresh: dict[int, np.ndarray] = {}
    skipped: list[dict[str, str]] = []
    bar = tqdm(total=len(todo), desc=f"embed {method['name']}", unit="img", mininterval=1.0)
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if batch:
            feats = l2_normalize(embedder.embed(np.stack([img for _, img in batch])))
            for (i, _), f in zip(batch, feats, strict=True):
                if np.all(np.isfinite(f)):
                    fresh[i] = f
                else:  # a NaN row would rank arbitrarily and cannot be sent as JSON
                    key = gallery.items[i].key
                    print(f"warning: skipping {key}: its embedding is not finite", file=sys.stderr)
                    skipped.append({"key": key, "error": "embedding is not finite"})
            bar.update(len(batch))
            batch.clear()

    for i, img, err in gallery.iter_images(todo, size):
        if img is None:
            print(f"warning: skipping {gallery.items[i].key}: {err}", file=sys.stderr)
            skipped.append({"key": gallery.items[i].key, "error": str(err)})
            bar.update(1)
            continue
        batch.append((i, img))
        if len(batch) >= batch_size:
            flush()
    flush()
    bar.close()

    rows, kept = [], []
    for i, it in enumerate(gallery.items):
        if (it.key, it.fingerprint) in reuse:
            rows.append(old.vectors[reuse[(it.key, it.fingerprint)]])  # type: ignore[union-attr]
            kept.append(it)
        elif i in fresh:
            rows.append(fresh[i])
            kept.append(it)
    if not kept:
        raise UserError("no gallery image could be read; nothing to index")
    vectors = np.stack(rows).astype(dtype)
    manifest = {
        "format": FORMAT,
        "method": method,
        "preprocessing": preprocessing,
        "source": gallery.source,
        "embeddings": {"file": EMBEDDINGS, "dtype": dtype, "shape": list(vectors.shape)},
        "env": environment(),
        "build": {
            "embedded": len(fresh),
            "reused": len(kept) - len(fresh),
            "seconds": round(time.perf_counter() - t0, 3),
        },
        "skipped": skipped,
        "items": [{"key": it.key, "label": it.label, "fingerprint": it.fingerprint} for it in kept],
    }
    write_index(out, vectors, manifest)
    removed = 0 if old is None else len({it.key for it in old.items} - {it.key for it in kept})
    return BuildReport(
        index=load_index(out),
        reused=len(kept) - len(fresh),
        embedded=len(fresh),
        removed=removed,
        skipped=skipped,
    )


def write_index(out: Path, vectors: np.ndarray, manifest: dict[str, Any]) -> None:
    """Write a complete index into a temporary folder beside ``out``, then swap it into place.

    At every moment ``out`` is either the previous complete index, absent (for the instant
    between the two renames), or the new complete one. Whatever is at ``out`` is checked again
    just before it is replaced: only an index written here (``not_an_index``) ever is.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; an index is an ordinary folder

        def save_vectors(path: Path) -> None:
            with open(path, "wb") as f:  # a file object: given a path, np.save appends ".npy"
                np.save(f, vectors, allow_pickle=False)

        write_atomic(tmp / EMBEDDINGS, save_vectors)
        manifest["embeddings"]["sha256"] = sha256_file(tmp / EMBEDDINGS)
        write_text_atomic(tmp / MANIFEST, json.dumps(manifest, indent=1, default=str) + "\n")
        if out.exists() or out.is_symlink():
            check_replaceable(out)
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, trash / "index")
            os.rename(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
