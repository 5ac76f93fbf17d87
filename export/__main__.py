"""``python -m export --method M [--checkpoint PATH] --out DIR``: ONNX (FP32 and FP16) of a method.

Writes ``DIR/M.onnx`` and ``DIR/M.fp16.onnx`` with their JSON sidecars. Each graph is checked with
``onnx.checker`` and against the PyTorch module on fresh random images and on real images from
``--data`` (ONNX Runtime, CPU) before it is renamed into place, so a file in DIR always passed.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx

from export.fp16 import to_fp16
from export.graph import INPUT_NAME, MIN_OPSET, OUTPUT_NAME, export_onnx, verify
from imsim.artifacts import (
    ONNX_SCHEMA,
    module_sha256,
    onnx_path,
    sha256_file,
    sidecar_path,
    write_bytes_atomic,
)
from imsim.cli import (
    add_data_args,
    add_method_args,
    add_one_method_args,
    load_data_from_args,
    method_item,
    positive_int,
    run,
)
from imsim.errors import UserError
from imsim.methods import create_method
from imsim.parity import tolerances_for
from imsim.results import write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n")[0])
    add_one_method_args(p)
    add_method_args(p)
    add_data_args(p)
    p.add_argument("--out", default="artifacts/onnx", help="output folder (default: %(default)s)")
    p.add_argument("--opset", type=int, default=MIN_OPSET, help="ONNX opset (>= 17)")
    p.add_argument(
        "--check-images",
        type=positive_int,
        default=64,
        help="real test images (and a quarter as many random ones) checked against PyTorch",
    )
    return p


def package_versions() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "onnx", "onnxruntime"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def weight_files(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """The weight files behind the export, each with its sha256."""
    files = {}
    if args.checkpoint:
        files["checkpoint"] = args.checkpoint
    if args.pretrained and Path(args.pretrained).is_file():
        files["pretrained"] = args.pretrained
    out = {}
    for k, f in files.items():
        if not Path(f).is_file():
            raise UserError(f"{k} {f} not found")
        out[k] = {"path": str(f), "sha256": sha256_file(f)}
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    item = method_item(args.method, args.checkpoint)
    files = weight_files(args)
    options = {**vars(args), "device": "cpu"}  # export traces on the CPU in fp32
    method = create_method(item, **options)
    name = method.spec.name
    module = method.as_module()
    if module is None:
        raise UserError(f"method {name!r} is not a single network; there is nothing to export")
    module = module.float().eval().to("cpu")

    ds = load_data_from_args(args)
    pool = ds.test.subset(ds.split.unseen)
    h, w = ds.image_size
    idx = np.linspace(0, len(pool) - 1, min(args.check_images, len(pool))).astype(int)
    seed = secrets.randbits(32)
    rng = np.random.default_rng(seed)
    n_random = max(3, args.check_images // 4)
    sets = {
        "random": rng.integers(0, 256, (n_random, h, w, 3), dtype=np.uint8),
        "real": np.ascontiguousarray(pool.images[idx]),
    }

    out_dir = Path(args.out)
    common = {
        "schema": ONNX_SCHEMA,
        "method": name,
        "method_item": item,
        "weights_sha256": module_sha256(module),
        "weight_files": files,
        "options": {k: args.__dict__[k] for k in ("recipe", "clip_model", "pretrained")},
        "describe": method.describe(),
        "input": {"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", h, w, 3]},
        "input_size": [h, w],
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", None]},
        "embedding_size": method.spec.embedding_dim,
        "opset": args.opset,
        "check_data": {"dataset": ds.name, "real": len(idx), "random": n_random, "seed": seed},
        "exported_with": package_versions(),
    }
    common["output"]["shape"][1] = method.spec.embedding_dim

    t0 = time.perf_counter()
    fp32_path = onnx_path(out_dir, name, "fp32")

    def write_fp32(tmp: Path) -> None:
        export_onnx(module, tmp, (h, w), args.opset)
        common["checks_fp32"] = verify(
            module, tmp, "fp32", sets, tolerances_for("fp32"), fp32_path.name
        )

    write_bytes_atomic(fp32_path, write_fp32)
    side32 = {
        **{k: v for k, v in common.items() if k != "checks_fp32"},
        "precision": "fp32",
        "onnx_sha256": sha256_file(fp32_path),
        "check": common["checks_fp32"],
    }
    write_json_atomic(sidecar_path(fp32_path), side32)
    report(fp32_path, side32)

    model16, kept = to_fp16(onnx.load(str(fp32_path)))
    fp16_path = onnx_path(out_dir, name, "fp16")
    checks16: dict = {}

    def write_fp16(tmp: Path) -> None:
        onnx.save(model16, str(tmp))
        from export.graph import check_graph

        check_graph(onnx.load(str(tmp)))
        checks16.update(verify(module, tmp, "fp16", sets, tolerances_for("fp16"), fp16_path.name))

    write_bytes_atomic(fp16_path, write_fp16)
    side16 = {
        **{k: v for k, v in common.items() if k != "checks_fp32"},
        "precision": "fp16",
        "onnx_sha256": sha256_file(fp16_path),
        "fp16": kept,
        "check": checks16,
    }
    write_json_atomic(sidecar_path(fp16_path), side16)
    report(fp16_path, side16)
    print(f"exported {name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def report(path: Path, side: dict) -> None:
    parts = [
        f"{k}: cosine min {m['cosine_min']:.7f}, max abs {m['abs_max']:.2e}"
        for k, m in side["check"].items()
    ]
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MiB, {side['precision']}; {'; '.join(parts)})")


if __name__ == "__main__":
    run(main)
