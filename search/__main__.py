"""``python -m search {index,query,serve,recall,bench}``: image search over an embedded gallery.

- ``index``: embed a folder, zip or dataset split with any embedding method into an index folder
  (re-running embeds only new or changed images); pairwise methods (classical, ssim, hist,
  keypoints) have no vectors and are refused.
- ``query``: top-K gallery images for an image, a text (methods with a text encoder), or both.
- ``serve``: the HTTP API and web page, on 127.0.0.1 by default.
- ``recall``: recall@k of the faiss backend against exact search, on an index's own vectors.
- ``bench``: query latency of exact and faiss search at several gallery sizes.
- ``load``: a bounded load test of the server on this machine (concurrency sweep).

Every argument is checked, and every output path, before any image is read or model built.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from imsim.cli import (
    add_method_args,
    csv_list,
    finite_float,
    image_side,
    positive_int,
    preflight,
    run,
    seed_int,
)
from imsim.errors import UserError
from imsim.methods import list_methods, method_from_args
from imsim.results import check_output_dir, check_output_file
from search.backends import BACKENDS

if TYPE_CHECKING:
    from imsim.methods import Embedder
    from search.query import Searcher


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        default="exact",
        choices=BACKENDS,
        help="exact: one matrix product (default); faiss: IVF index (pip install faiss-cpu)",
    )
    p.add_argument(
        "--nlist",
        type=positive_int,
        default=None,
        help="faiss: number of clusters (default: about sqrt(N))",
    )
    p.add_argument(
        "--nprobe",
        type=positive_int,
        default=16,
        help="faiss: clusters searched per query (default: 16)",
    )


def port_number(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 0 and 65535, got {v}")
    return v


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in csv_list(text)]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{flag} takes integers >= 1, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    ix = sub.add_parser("index", help="embed a gallery into an index folder")
    ix.add_argument(
        "--method",
        required=True,
        help=f"a registered method ({', '.join(list_methods())}); NAME:ARG passes ARG",
    )
    ix.add_argument(
        "--images",
        required=True,
        help="a folder or .zip of images (labels: each image's folder name), or a "
        "dataset split: shapes:test, shapes:train, cifar100:test, cifar100:train",
    )
    ix.add_argument(
        "--under",
        default=None,
        help="only images below this folder of the folder or zip (e.g. test)",
    )
    ix.add_argument("--out", required=True, help="index folder to create or update")
    ix.add_argument(
        "--image-size",
        type=image_side,
        default=None,
        help="side images are resized to before embedding (default: the dataset's, "
        "else the method's input size, else 224)",
    )
    ix.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "float16"),
        help="storage type of the embeddings (float16 halves the file)",
    )
    ix.add_argument(
        "--rebuild",
        action="store_true",
        help="embed everything again, replacing an index built with other settings",
    )
    ix.add_argument("--data-dir", default="data", help="where cifar100 lives (default: data/)")
    ix.add_argument("--data-seed", type=seed_int, default=0, help="seed of the shapes generator")
    add_method_args(ix)

    q = sub.add_parser("query", help="print the top-K gallery images for a query")
    q.add_argument("index", help="index folder")
    q.add_argument("--image", default=None, help="query image file")
    q.add_argument(
        "--item",
        default=None,
        help="query with an indexed image, by its key (as printed in results)",
    )
    q.add_argument("--text", default=None, help="query text (methods with a text encoder)")
    q.add_argument("--k", type=positive_int, default=10, help="results to print (default: 10)")
    q.add_argument(
        "--weight",
        type=finite_float(0.0, 1.0),
        default=0.5,
        help="image weight w when image and text are both given: "
        "q = w * image + (1 - w) * text, both L2-normalized (default: 0.5)",
    )
    q.add_argument(
        "--min-score",
        type=finite_float(),
        default=None,
        help="drop results with a cosine similarity below this (default: none)",
    )
    q.add_argument("--device", default="cpu", help="torch device of the method (cpu, cuda)")
    q.add_argument("--json", action="store_true", help="print the results as JSON")
    _add_backend_args(q)

    s = sub.add_parser("serve", help="serve the web page and the JSON API")
    s.add_argument("index", help="index folder")
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only)",
    )
    s.add_argument("--port", type=port_number, default=8000, help="port (default: 8000)")
    s.add_argument(
        "--max-upload-mb",
        type=finite_float(0.0, 1024.0, low_open=True),
        default=10.0,
        help="largest request body accepted, above 0 and up to 1024 (default: 10 MB)",
    )
    s.add_argument(
        "--max-pixels",
        type=positive_int,
        default=40_000_000,
        help="largest image accepted, in pixels (default: 40 million)",
    )
    s.add_argument("--max-k", type=positive_int, default=200, help="largest K (default: 200)")
    s.add_argument(
        "--concurrency",
        type=positive_int,
        default=64,
        help="connections served at once; more get HTTP 503 (default: 64)",
    )
    s.add_argument("--device", default="cpu", help="torch device of the method (cpu, cuda)")
    _add_backend_args(s)

    r = sub.add_parser("recall", help="faiss recall@k against exact search on an index")
    r.add_argument("index", help="index folder")
    r.add_argument(
        "--queries",
        type=positive_int,
        default=1000,
        help="indexed items used as queries, each excluded from its own results",
    )
    r.add_argument("--k", type=positive_int, default=10)
    r.add_argument("--nlist", type=positive_int, default=None, help="default: about sqrt(N)")
    r.add_argument("--nprobe", default="1,4,16,64", help="comma-separated values to measure")
    r.add_argument("--seed", type=seed_int, default=0)
    r.add_argument("--out", default="results/search_recall.json", help="results JSON path")

    b = sub.add_parser("bench", help="query latency of exact and faiss search (random vectors)")
    b.add_argument("--sizes", default="10000,100000,1000000", help="gallery sizes")
    b.add_argument(
        "--dim",
        type=positive_int,
        default=512,
        help="embedding dimension (default: 512, CLIP ViT-B-32's)",
    )
    b.add_argument("--queries", type=positive_int, default=100, help="timed queries per size")
    b.add_argument("--k", type=positive_int, default=10)
    b.add_argument("--nprobe", default="4,16,64", help="faiss nprobe values to measure")
    b.add_argument("--no-faiss", action="store_true", help="time exact search only")
    b.add_argument("--seed", type=seed_int, default=0)
    b.add_argument("--out", default="results/search_latency.json", help="results JSON path")

    ld = sub.add_parser("load", help="load-test the server on this machine (concurrency sweep)")
    ld.add_argument("index", help="index folder to serve (ignored with --url)")
    ld.add_argument("--concurrency", default="1,4,16,64", help="requests in flight, per step")
    ld.add_argument(
        "--requests",
        type=positive_int,
        default=400,
        help="answers per step (at least 4 x its concurrency; default: 400)",
    )
    ld.add_argument(
        "--query",
        default="upload",
        choices=("upload", "item"),
        help="upload: a PNG per request (decode, embed, search); item: a gallery row (search)",
    )
    ld.add_argument(
        "--timeout",
        type=finite_float(0.0, 600.0, low_open=True),
        default=60.0,
        help="seconds before one request counts as failed (default: 60)",
    )
    ld.add_argument("--url", default=None, help="a server already running on 127.0.0.1")
    ld.add_argument(
        "--backend", default="exact", choices=BACKENDS, help="search backend of the server"
    )
    ld.add_argument("--out", default="results/search/load.json", help="results JSON path")
    return p


def _method_hint(e: UserError) -> UserError:
    """A method error as this command names the flag (``--method``, not bench's ``--methods``)."""
    return UserError(str(e).replace("--methods ", "--method "))


def refuse_pairwise(embedder: Embedder, item: str) -> None:
    """Refuse a method that scores pairs of images itself (``spec.pairwise``, e.g. classical):
    it has no vector per image, so there is nothing to index or search by cosine."""
    if embedder.spec.pairwise:
        raise UserError(
            f"--method {item} scores pairs of images and has no vectors to index; search needs "
            "an embedding method (pixels, color-hist, clip, triplet:CHECKPOINT, ...); evaluate "
            f"{item} with python -m bench.accuracy --methods {item}"
        )


def cmd_index(args: argparse.Namespace) -> int:
    from search.gallery import open_gallery
    from search.index import build_index, check_replaceable

    check_output_dir(args.out)
    # the index is built beside --out and renamed into place: its folder must be writable too
    check_output_dir(Path(args.out).absolute().parent, "--out's folder")
    check_replaceable(Path(args.out))  # before the model loads or any image is read
    preflight(args, method_args=True)
    options = vars(args)
    try:
        embedder = method_from_args(args.method, args)  # fails before any image is read
    except UserError as e:
        raise _method_hint(e) from None
    refuse_pairwise(embedder, args.method)  # before any image is read or file written
    gallery = open_gallery(
        args.images, under=args.under, data_dir=args.data_dir, seed=args.data_seed
    )
    print(f"{args.images}: {len(gallery.items)} images", file=sys.stderr)
    rep = build_index(
        gallery,
        args.out,
        embedder,
        method_item=args.method,
        options=options,
        image_size=args.image_size,
        dtype=args.dtype,
        batch_size=args.batch_size,
        rebuild=args.rebuild,
    )
    print(
        f"wrote {rep.index.path}: {len(rep.index)} items ({rep.embedded} embedded, {rep.reused} "
        f"unchanged, {rep.removed} removed, {len(rep.skipped)} unreadable), "
        f"{rep.index.method['embedding_dim']}-d {rep.index.manifest['embeddings']['dtype']}, "
        f"images at {rep.index.image_size}x{rep.index.image_size}"
    )
    return 0


def _searcher(args: argparse.Namespace) -> Searcher:
    from search.index import load_index
    from search.query import Searcher

    return Searcher(
        load_index(args.index),
        backend=args.backend,
        device=args.device,
        nprobe=args.nprobe,
        nlist=args.nlist,
    )


def cmd_query(args: argparse.Namespace) -> int:
    from search.query import decode_upload

    image_bytes = None
    if args.image:
        path = Path(args.image)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise UserError(f"--image {path} {what}; give an image file")
        image_bytes = path.read_bytes()
    searcher = _searcher(args)
    image = None
    if image_bytes is not None:
        image = decode_upload(image_bytes, searcher.index.image_size, name=str(args.image))
    q = searcher.query_vector(image=image, item=args.item, text=args.text, weight=args.weight)
    hits = searcher.search(q, k=args.k, min_score=args.min_score)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], indent=1))
        return 0
    both = (image is not None or args.item) and args.text and args.text.strip()
    if both:
        print(f"query: {args.weight:g} x image + {1 - args.weight:g} x text", file=sys.stderr)
    print(f"{'rank':>4}  {'score':>7}  {'label':<20}  key")
    for h in hits:
        d = h.to_dict()  # keys and labels that always encode
        print(f"{h.rank:>4}  {h.score:7.4f}  {d['label'] or '-':<20}  {d['key']}")
    if not hits:
        print(f"no result scored at least {args.min_score}")
    return 0


def _check_host(host: str, port: int) -> None:
    """Refuse an address this machine cannot bind, before the model loads."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise UserError(f"--host {host!r} is not an address of this machine ({e})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from search.server import Limits, serve
    except ImportError as e:
        raise UserError(
            f"serving needs the search extra ({e.name} is missing): pip install -e '.[search]'"
        ) from e
    _check_host(args.host, args.port)

    limits = Limits(
        max_body_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        max_k=args.max_k,
    )
    searcher = _searcher(args)
    _ = searcher.embedder  # load the model now: a missing or changed model fails at start
    serve(searcher, args.host, args.port, limits, args.concurrency)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("recall", "bench", "load"):
        check_output_file(args.out)
    if args.command == "index":
        return cmd_index(args)
    if args.command == "query":
        return cmd_query(args)
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "load":
        from search.load import load_test

        return load_test(args, _ints(args.concurrency, "--concurrency"))
    from search import bench

    if args.command == "recall":
        return bench.recall(args, _ints(args.nprobe, "--nprobe"))
    return bench.latency(args, _ints(args.sizes, "--sizes"), _ints(args.nprobe, "--nprobe"))


if __name__ == "__main__":
    run(main)
