"""``python -m export --method M [--checkpoint PATH] --out DIR``: ONNX (FP32/FP16/INT8) of a method.

Writes ``DIR/M.onnx`` and, per ``--precision`` (default ``fp32,fp16``), ``DIR/M.fp16.onnx`` and
``DIR/M.int8.onnx`` (QDQ, calibrated on seen-class training images: ``export.int8``) with their
JSON sidecars. Each graph is checked with ``onnx.checker`` and against the PyTorch module on fresh
random and real images from ``--data`` (ONNX Runtime, CPU) before it is renamed into place, so a
file in DIR always passed. ``--gate`` also judges each FP16/INT8 graph with the parity gate on
the seen classes' test images and, where it fails, keeps the fewest blocks/ops in FP32 that make
it pass (``export.gate``); a graph that cannot be made to pass is not written (exit 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from export.fp16 import convertible_nodes, preprocessing_scopes, to_fp16
from export.gate import GateSet, Verdict, gate_set, group_units, judge_graph, search
from export.graph import INPUT_NAME, MIN_OPSET, OUTPUT_NAME, check_graph, export_onnx, verify
from export.int8 import (
    CALIBRATION_METHODS,
    WEIGHT_BITS,
    Calibration,
    calibration_set,
    quantizable_nodes,
    quantizer_settings,
    to_int8,
)
from imsim.artifacts import (
    ONNX_PRECISIONS,
    ONNX_SCHEMA,
    module_sha256,
    onnx_path,
    sidecar_path,
)
from imsim.cli import (
    add_data_args,
    add_episode_args,
    add_method_args,
    add_one_method_args,
    add_tolerance_args,
    csv_list,
    load_data_from_args,
    method_item,
    positive_int,
    preflight,
    run,
    seed_int,
    tolerance_overrides,
)
from imsim.errors import UserError
from imsim.files import package_versions, sha256_file, write_atomic, write_json_atomic
from imsim.methods import method_from_args
from imsim.parity import Tolerances, tolerances_for


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
    p.add_argument(
        "--precision",
        default="fp32,fp16",
        help="comma-separated: fp32 (always written: the others derive from it), fp16, int8 "
        "(default: %(default)s)",
    )
    g = p.add_argument_group("int8 calibration (seen-class training images only)")
    g.add_argument("--calibration-images", type=positive_int, default=256, help="default 256")
    g.add_argument(
        "--calibration-method",
        default="minmax",
        choices=tuple(CALIBRATION_METHODS),
        help="activation ranges: minmax (default), percentile (99.999%%), entropy",
    )
    g.add_argument("--calibration-seed", type=seed_int, default=0, help="sample seed (default 0)")
    g.add_argument(
        "--weight-bits",
        type=int,
        default=8,
        choices=WEIGHT_BITS,
        help="8 (default; TensorRT, VNNI CPUs) or 7: for OpenVINO on x86 CPUs without VNNI, "
        "whose 16-bit saturating multiply-add overflows with 8-bit weights (export.int8)",
    )
    g = p.add_argument_group(
        "gate: judge fp16/int8 on the seen classes' test images, keep FP32 where needed"
    )
    g.add_argument(
        "--gate",
        action="store_true",
        help="judge each fp16/int8 graph with the parity gate and keep blocks/ops in FP32 until "
        "it passes; exit 1 (graph not written) when nothing passes",
    )
    add_tolerance_args(g)
    g.add_argument(
        "--gate-images",
        type=positive_int,
        default=None,
        help="at most this many seen-class test images (default: all)",
    )
    g.add_argument(
        "--gate-max-trials",
        type=positive_int,
        default=64,
        help="candidate graphs the FP32 fallback may build and judge (default 64)",
    )
    add_episode_args(p, episodes_help="episodes the gate pairs (default 1000)")
    return p


def parse_precisions(text: str) -> list[str]:
    """``fp32,fp16,int8`` -> the precisions to write, fp32 first (always: the others derive from
    it), each once, in ``ONNX_PRECISIONS`` order."""
    asked = csv_list(text)
    bad = [p for p in asked if p not in ONNX_PRECISIONS]
    if bad or not asked:
        raise UserError(
            f"--precision takes a comma-separated list of {', '.join(ONNX_PRECISIONS)}, "
            f"got {text!r}"
        )
    return [p for p in ONNX_PRECISIONS if p == "fp32" or p in asked]


def gate_tolerances(args: argparse.Namespace) -> Callable[[str], Tolerances]:
    """The gate's tolerances per precision: ``tolerances_for`` with the flags given."""
    given = tolerance_overrides(args)
    return lambda precision: dataclasses.replace(tolerances_for(precision), **given)


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
    preflight(args, dirs={"--out": args.out})
    precisions = parse_precisions(args.precision)
    if args.gate and precisions == ["fp32"]:
        raise UserError("--gate judges fp16 and int8 graphs; add them to --precision")
    item = method_item(args.method, args.checkpoint)
    files = weight_files(args)
    method = method_from_args(item, args, device="cpu")  # export traces on the CPU in fp32
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
        "exported_with": package_versions(("torch", "onnx", "onnxruntime")),
    }
    common["output"]["shape"][1] = method.spec.embedding_dim

    t0 = time.perf_counter()
    fp32_path = onnx_path(out_dir, name, "fp32")

    def write_fp32(tmp: Path) -> None:
        export_onnx(module, tmp, (h, w), args.opset)
        common["checks_fp32"] = verify(
            module, tmp, "fp32", sets, tolerances_for("fp32"), fp32_path.name
        )

    write_atomic(fp32_path, write_fp32)
    side32 = {
        **{k: v for k, v in common.items() if k != "checks_fp32"},
        "precision": "fp32",
        "onnx_sha256": sha256_file(fp32_path),
        "check": common["checks_fp32"],
    }
    write_json_atomic(sidecar_path(fp32_path), side32)
    report(fp32_path, side32)

    scopes = preprocessing_scopes(module)
    gs = None
    if args.gate:
        episodes = {k: getattr(args, k) for k in ("episodes", "ways", "shots", "queries", "seed")}
        gs = gate_set(method, ds, gate_tolerances(args), episodes, args.gate_images)
    calibration = None
    if "int8" in precisions:
        calibration = calibration_set(
            ds.train.subset(ds.split.seen),
            ds.split.seen,
            ds.class_names,
            args.calibration_images,
            args.calibration_seed,
            ds.name,
        )
    status = 0
    with tempfile.TemporaryDirectory(prefix="imsim-export-") as work:
        for precision in precisions[1:]:
            build = graph_builder(precision, fp32_path, scopes, calibration, args, Path(work))
            keep: list[str] = []
            gate_doc = None
            if gs is not None:
                fallback = run_gate(gs, precision, build, fp32_path, scopes, Path(work), args)
                if fallback is None:
                    status = 1
                    continue
                keep, gate_doc = fallback
            path = onnx_path(out_dir, name, precision)
            info, checks = write_graph(path, precision, build, keep, module, sets)
            side = {
                **{k: v for k, v in common.items() if k != "checks_fp32"},
                "precision": precision,
                "onnx_sha256": sha256_file(path),
                precision: info,
                "check": checks,
            }
            if gate_doc is not None:
                side["gate"] = gate_doc
            write_json_atomic(sidecar_path(path), side)
            report(path, side)
    print(f"exported {name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return status


Builder = Callable[[list[str], Path], dict]


def write_graph(
    path: Path,
    precision: str,
    build: Builder,
    keep: list[str],
    module: torch.nn.Module,
    sets: dict[str, np.ndarray],
) -> tuple[dict, dict]:
    """Build the graph into a temporary file, check it (``onnx.checker``, then against the module
    with ``precision``'s tolerances) and rename it to ``path``: (build info, check metrics)."""
    info: dict = {}
    checks: dict = {}

    def write(tmp: Path) -> None:
        info.update(build(keep, tmp))
        check_graph(onnx.load(str(tmp)))
        checks.update(verify(module, tmp, precision, sets, tolerances_for(precision), path.name))

    write_atomic(path, write)
    return info, checks


def graph_builder(
    precision: str,
    fp32: Path,
    scopes: list[str],
    calibration: Calibration | None,
    args: argparse.Namespace,
    work: Path,
) -> Builder:
    """``build(keep_fp32, dst)``: writes the ``precision`` graph of ``fp32`` keeping the named
    nodes in FP32, and returns what the sidecar records about it."""
    if precision == "fp16":

        def build16(keep: list[str], dst: Path) -> dict:
            model16, info = to_fp16(onnx.load(str(fp32)), scopes, keep_fp32=keep)
            onnx.save(model16, str(dst))
            return info

        return build16
    assert calibration is not None
    cache = work / "int8-calibration.json"  # calibrate once, re-quantize per candidate
    method, bits = args.calibration_method, args.weight_bits

    def build8(keep: list[str], dst: Path) -> dict:
        info = to_int8(fp32, dst, calibration.images, scopes, keep, method, cache, bits)
        return {
            "quantizer": quantizer_settings(method, bits),
            "calibration": {**calibration.info, "method": method},
            **info,
        }

    return build8


def run_gate(
    gs: GateSet,
    precision: str,
    build: Builder,
    fp32: Path,
    scopes: list[str],
    work: Path,
    args: argparse.Namespace,
) -> tuple[list[str], dict] | None:
    """Judge the ``precision`` graph on the seen-class validation set and search for what to keep
    in FP32 when it fails: (kept nodes, the sidecar's ``gate`` record), or None (one line said
    why) when no candidate passes."""
    model = onnx.load(str(fp32))
    if precision == "fp16":
        units = convertible_nodes(model, scopes)
    else:
        units = quantizable_nodes(model, scopes)
    candidate = work / f"candidate.{precision}.onnx"

    def trial(keep: list[str]) -> Verdict:
        build(keep, candidate)
        return judge_graph(gs, candidate, precision)

    fb = search(group_units(units), trial, args.gate_max_trials)
    label = f"{gs.method.spec.name} {precision}"
    print(f"gate {label}: {summary(fb.before)} with nothing in FP32", file=sys.stderr)
    if fb.after is None:
        print(
            f"{label} FAILS the gate on the seen-class validation set and no FP32 fallback "
            f"passes ({fb.note}; {len(fb.trials)} candidates tried); {precision} graph not written",
            file=sys.stderr,
        )
        return None
    if fb.kept:
        print(
            f"gate {label}: {summary(fb.after)} keeping {len(fb.kept)} node(s) in FP32 "
            f"({', '.join(fb.blocks)}; {len(fb.trials)} candidates tried)",
            file=sys.stderr,
        )
    doc = {
        "validation": gs.info,
        "tolerances": gs.tol_for(precision).to_dict(),
        "verdict": "PASS",
        "fallback": bool(fb.kept),
        **fb.to_dict(),
    }
    return fb.kept, doc


def summary(v: Verdict) -> str:
    """A verdict in one line: PASS/FAIL and the gate's figures."""
    f = v.figures
    return (
        f"{'PASS' if v.passed else 'FAIL'} (cosine min {f['cosine_min']:.5f}, tie-aware top-1 "
        f"{f['top1_agreement_tie_aware']:.4f}, raw {f['top1_agreement']:.4f}, episode delta "
        f"{f['episode_delta_points']:+.2f} +- {f['episode_delta_ci95']:.2f} pts)"
    )


def report(path: Path, side: dict) -> None:
    parts = [
        f"{k}: cosine min {m['cosine_min']:.7f}, max abs {m['abs_max']:.2e}"
        for k, m in side["check"].items()
    ]
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({size:.1f} MiB, {side['precision']}; {'; '.join(parts)})")


if __name__ == "__main__":
    run(main)
