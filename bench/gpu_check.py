"""``python -m bench.gpu_check`` (``make gpu-check``): what a machine with an NVIDIA GPU runs first.

In one command, within about 6 minutes on an H100-class GPU, through the same code every other
command runs:
1. trains the Siamese triplet network (ResNet-20) for a short run on CUDA (``--amp auto``:
   native precisions only), ``--deterministic``, then trains it again interrupted after the
   first epoch and resumed, and records whether the two runs' weights are bit-identical;
2. exports it to ONNX, FP32 and FP16 (``python -m export``), and builds a TensorRT engine
   (``python -m engines.build``) where TensorRT is installed;
3. per backend setup: parity against PyTorch fp32 (``bench.parity.compare``) and a batch sweep
   (``bench.fps.sweep``). Setups: torch fp32, fp16 and bf16 (each low precision only where the
   GPU runs it natively, ``imsim.hardware``), ``torch.compile`` at the fastest native precision,
   ONNX Runtime's CUDA provider (fp32, fp16) where onnxruntime-gpu is installed, and TensorRT;
4. writes ``results/gpu/<gpu-name>/``: one JSON per step (``imsim.results`` schema:
   ``train.json``, ``parity-<setup>.json``, ``fps-<setup>.json``), ``summary.json`` and a short
   ``SUMMARY.md``. What is not installed is skipped with one line each; a step that fails is
   recorded with its error and the rest goes on.

Without a CUDA GPU it says so in one line and exits 0: nothing here can be checked on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from imsim.cli import positive_int, run
from imsim.errors import UserError
from imsim.hardware import Capabilities, capabilities

BATCH_SIZES = (1, 32, 256)
COMPILE_BATCH_SIZES = (256,)  # torch.compile compiles once per shape: one size keeps it short
PARITY_BATCH = 250  # divides the 1,000-image shapes pool: one shape, one compile
METHOD = "triplet"


@dataclass(frozen=True)
class Setup:
    """One backend configuration to check: parity (unless it is the reference) and a sweep."""

    backend: str
    precision: str
    compile: bool = False
    provider: str | None = None  # onnxruntime: cuda

    @property
    def name(self) -> str:
        parts = [self.backend, self.provider, self.precision, "compile" if self.compile else None]
        return "-".join(p for p in parts if p)

    @property
    def parity(self) -> bool:
        """torch fp32 eager is the reference itself: its sweep is the baseline, no parity."""
        return not (self.backend == "torch" and self.precision == "fp32" and not self.compile)

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return COMPILE_BATCH_SIZES if self.compile else BATCH_SIZES


@dataclass
class Plan:
    setups: list[Setup]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (what, why)


def plan_setups(caps: Capabilities, ort_cuda: bool, tensorrt: str | None) -> Plan:
    """The setups to check on a GPU with ``caps``. ``ort_cuda``: ONNX Runtime has its CUDA
    provider; ``tensorrt``: why TensorRT cannot run (None when it can)."""
    plan = Plan([Setup("torch", "fp32")])
    for p in ("fp16", "bf16"):
        if caps.native(p):
            plan.setups.append(Setup("torch", p))
        else:
            plan.skipped.append((f"torch {p}", f"{caps.name} has no native {p}"))
    fastest = "bf16" if caps.native("bf16") else "fp16" if caps.native("fp16") else "fp32"
    plan.setups.append(Setup("torch", fastest, compile=True))
    if ort_cuda:
        plan.setups.append(Setup("onnxruntime", "fp32", provider="cuda"))
        if caps.native("fp16"):
            plan.setups.append(Setup("onnxruntime", "fp16", provider="cuda"))
    else:
        plan.skipped.append(
            ("onnxruntime cuda", "onnxruntime-gpu is not installed (pip install 'imsim[gpu]')")
        )
    if tensorrt is None:
        plan.setups.append(Setup("trt", "fp16" if caps.native("fp16") else "fp32"))
    else:
        plan.skipped.append(("trt", tensorrt))
    return plan


def tensorrt_problem() -> str | None:
    """Why TensorRT cannot run here, in a few words, or None when it can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install 'imsim[trt]')"
    from imsim.backends.tensorrt_backend import require_tensorrt

    try:
        require_tensorrt()
    except UserError as e:
        return str(e)
    return None


def ort_has_cuda() -> bool:
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.gpu_check", description=__doc__.split("\n")[0]
    )
    p.add_argument("--device", default="cuda", help="CUDA device (default: %(default)s)")
    p.add_argument("--out", default="results/gpu", help="results root (default: %(default)s)")
    p.add_argument(
        "--work", default="artifacts/gpu-check", help="checkpoints, ONNX and engines (not results)"
    )
    p.add_argument(
        "--samples-per-epoch", type=positive_int, default=8192, help="training samples per epoch"
    )
    p.add_argument("--epochs", type=positive_int, default=2, help="training epochs")
    p.add_argument(
        "--budget-s",
        type=float,
        default=330.0,
        help="steps not started within this many seconds are skipped (default: %(default)s)",
    )
    return p


@dataclass
class Check:
    """The state of one run: where it writes, what it recorded, when it must stop starting."""

    device: str
    out: Path
    work: Path
    budget_s: float
    data: str = "shapes"  # the --data spec of the dataset the run uses (export re-loads it)
    peak_size: int | None = None  # matmul side for the peak rate (default: bench.fps's)
    t0: float = field(default_factory=time.perf_counter)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def due(self, name: str) -> bool:
        """Whether step ``name`` may start; past the time budget it is recorded as skipped."""
        if time.perf_counter() - self.t0 <= self.budget_s:
            return True
        self.skip(name, f"time budget of {self.budget_s:.0f} s spent")
        return False

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Record one step: ok (with what the body adds to the entry) or failed (the first line
        of the error; the traceback goes to stderr), with its duration."""
        entry: dict[str, Any] = {"step": name, "status": "ok"}
        self.steps.append(entry)
        t = time.perf_counter()
        try:
            yield entry
        except Exception as e:  # one setup's failure is a result; the others still run
            entry.update(status="failed", error=_first_line(e))
            traceback.print_exc()
            print(f"gpu-check: {name}: FAILED ({entry['error']})", file=sys.stderr)
        entry["seconds"] = round(time.perf_counter() - t, 1)

    def skip(self, what: str, why: str) -> None:
        self.steps.append({"step": what, "status": "skipped", "note": why})
        print(f"gpu-check: {what}: skipped ({why})", file=sys.stderr)


def _first_line(e: BaseException) -> str:
    return ((str(e).strip().splitlines() or [type(e).__name__])[0])[:300]


def train_step(check: Check, ds: Any, recipe_options: dict[str, Any], epochs: int) -> Path:
    """Train on CUDA, then interrupted + resumed; returns the checkpoint. Records throughput and
    whether the resumed run's final weights equal the uninterrupted run's, bit for bit."""
    from imsim.artifacts import module_sha256
    from imsim.results import make_results, record, write_json_atomic
    from train.loop import RunConfig, Trainer
    from train.recipes import make_recipe

    recipe = make_recipe(METHOD, **{"depth": 20, **recipe_options})

    def config(out: Path, resume: bool = False) -> RunConfig:
        return RunConfig(
            method=METHOD,
            recipe=recipe,
            epochs=epochs,
            out=out,
            device=check.device,
            amp="auto",
            deterministic=True,
            resume=resume,
            data_spec=check.data,
        )

    full = Trainer(config(check.work / "train"), ds)
    result = full.run()

    class Interrupted(Exception):
        pass

    def crash(epoch: int) -> None:
        if epoch == 1:
            raise Interrupted

    cut = check.work / "train-resumed"
    with contextlib.suppress(Interrupted):
        Trainer(config(cut), ds).run(on_epoch_end=crash)
    resumed = Trainer(config(cut, resume=True), ds)
    resumed.run()
    same = module_sha256(full.net) == module_sha256(resumed.net)
    speeds = [h["images_per_second"] for h in result["history"] if h["epoch"] > 0]
    amp = str(full.dtype).removeprefix("torch.") if full.dtype is not None else "fp32"
    rows = [
        record(METHOD, "training", "images_per_second", max(speeds), amp=amp),
        record(METHOD, "training", "resume_bit_identical", float(same), epochs=epochs),
    ]
    doc = make_results(
        "gpu-check-train",
        rows,
        config={"recipe": recipe.to_dict(), "epochs": epochs, "device": check.device},
        determinism=full.determinism,
        history=result["history"],
    )
    write_json_atomic(check.out / "train.json", doc)
    print(
        f"gpu-check: trained {METHOD} at {max(speeds):.0f} images/s ({amp}); resumed run "
        f"{'is' if same else 'is NOT'} bit-identical",
        file=sys.stderr,
    )
    return check.work / "train" / f"{METHOD}.safetensors"


def setup_step(check: Check, setup: Setup, ckpt: Path, ds: Any, flops: float | None) -> dict:
    """Parity (unless the reference) and the batch sweep of one setup; both JSON files written."""
    from bench.fps import measure_peak, sweep
    from bench.parity import compare
    from imsim.backends import backend_class, create_backend
    from imsim.backends.torch_backend import TorchBackend
    from imsim.methods import create_method
    from imsim.parity import tolerances_for
    from imsim.protocols import Episodes
    from imsim.results import make_results, write_json_atomic

    method = create_method(f"{METHOD}:{ckpt}", device=check.device)
    own = {  # each backend's own options (imsim.backends: Backend.options_type)
        # The fp32 eager baseline runs NCHW, like the reference.
        "torch": {"channels_last": setup.parity, "compile": setup.compile},
        "onnxruntime": {"ort_provider": setup.provider},
    }
    options = backend_class(setup.backend).options_type(
        precision=setup.precision,
        device=check.device,
        onnx_dir=str(check.work / "onnx"),
        engine_dir=str(check.work / "engines"),
        **own.get(setup.backend, {}),
    )
    t = time.perf_counter()
    backend = create_backend(setup.backend, method, options)
    setup_s = time.perf_counter() - t
    summary: dict[str, Any] = {"setup": setup.name, **backend.precision_tags()}
    if setup.parity:
        pool = ds.test.subset(ds.split.unseen)
        ref = TorchBackend(method.as_module(), "fp32", check.device, channels_last=False)
        tol = tolerances_for(setup.precision)
        episodes = asdict(Episodes())  # bench.parity's default sampler
        rows, passed = compare(
            method, backend, ref, pool, ds.split.unseen, ds.class_names, tol, episodes, PARITY_BATCH
        )
        doc = make_results(
            "parity",
            rows,
            config={"setup": setup.name, **options.to_dict()},
            passed=passed,
            tolerances=tol.to_dict(),
            dataset={"name": ds.name, "n_images": len(pool)},
            method=method.describe(),
            backend=backend.describe(),
            reference=ref.describe(),
        )
        write_json_atomic(check.out / f"parity-{setup.name}.json", doc)
        cos = next(r["value"] for r in rows if r["metric"] == "cosine_min")
        summary.update(parity="PASS" if passed else "FAIL", cosine_min=cos)
    peak = measure_peak(check.device, setup.precision, n=check.peak_size)
    rows = sweep(
        backend,
        METHOD,
        list(setup.batch_sizes),
        (32, 32),
        flops,
        peak["gflops_per_s"],
        warmup=3,
        iters=20,
        min_time_s=0.5,
        buffers=4,
    )
    doc = make_results(
        "fps",
        rows,
        config={"setup": setup.name, **options.to_dict()},
        method=method.describe(),
        backend=backend.describe(),
        setup_s=setup_s,
        image_size=[32, 32],
        flops_per_image=flops,
        peak=peak,
    )
    write_json_atomic(check.out / f"fps-{setup.name}.json", doc)
    summary["images_per_s"] = {
        str(r["batch_size"]): r["value"] if r["status"] == "ok" else r["status"] for r in rows
    }
    return summary


def summary_markdown(gpu: str, steps: list[dict], setups: list[dict]) -> str:
    """The short human summary: one table of setups, then every step's status."""
    sizes = sorted({int(b) for s in setups for b in s.get("images_per_s", {})})
    head = "| setup | precision | parity | cosine min | " + " | ".join(
        f"images/s b{b}" for b in sizes
    )
    lines = [
        f"# gpu-check on {gpu}",
        "",
        "Written by `python -m bench.gpu_check`; the JSON files beside this one hold every number "
        "and the environment. Images/s: end to end (uint8 host images in, embeddings out).",
        "",
        head + " |",
        "|---" * (4 + len(sizes)) + "|",
    ]
    for s in setups:
        ips = s.get("images_per_s", {})
        cells = [_fmt(ips.get(str(b))) for b in sizes]
        cos = f"{s['cosine_min']:.7f}" if "cosine_min" in s else ""
        label = s.get("precision_label", "")
        lines.append(
            f"| {s['setup']} | {label} | {s.get('parity', 'reference')} | {cos} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "| step | status | seconds | note |", "|---|---|---|---|"]
    for st in steps:
        note = st.get("error") or st.get("note") or ""
        lines.append(f"| {st['step']} | {st['status']} | {st.get('seconds', '')} | {note} |")
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:,.0f}" if isinstance(v, float | int) else str(v)


def gpu_folder(root: Path, gpu: str) -> Path:
    from imsim.backends.setup import slug

    return root / slug(gpu)


def no_gpu_line() -> str:
    return (
        f"gpu-check: no CUDA GPU here (torch {torch.__version__}, built for CUDA "
        f"{torch.version.cuda or 'none'}); nothing to check on this machine: run `make gpu-check` "
        "where an NVIDIA GPU and its driver are"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print(no_gpu_line(), file=sys.stderr)
        return 0
    device = torch.device(args.device)
    if device.type != "cuda":
        raise UserError(f"--device must be a CUDA device (cuda, cuda:1), not {args.device!r}")
    caps = capabilities(device)
    plan = plan_setups(caps, ort_has_cuda(), tensorrt_problem())
    out = gpu_folder(Path(args.out), caps.name)
    check = Check(str(device), out, Path(args.work) / out.name, args.budget_s)
    from imsim.data import load_dataset

    recipe = {"samples_per_epoch": args.samples_per_epoch}
    return run_check(check, caps, plan, load_dataset(check.data), recipe, args.epochs)


def run_check(
    check: Check,
    caps: Capabilities,
    plan: Plan,
    ds: Any,
    recipe_options: dict[str, Any],
    epochs: int,
) -> int:
    """Every step of the check on ``check.device`` with dataset ``ds`` (``check.data``);
    returns 0 (a failed step is a result, recorded with its error)."""
    from imsim.files import write_text_atomic
    from imsim.results import make_results, write_json_atomic

    print(
        f"gpu-check on {caps.name} (native: {', '.join(caps.native_precisions())}): "
        f"{', '.join(s.name for s in plan.setups)} -> {check.out}",
        file=sys.stderr,
    )
    for what, why in plan.skipped:
        check.skip(what, why)
    ckpt: Path | None = None
    if check.due("train"):
        with check.step("train") as entry:
            ckpt = train_step(check, ds, recipe_options, epochs)
            entry["checkpoint"] = str(ckpt)
    exported = False
    if ckpt is not None and ckpt.is_file() and check.due("export"):
        with check.step("export"):
            _call(
                "export",
                ["--method", f"{METHOD}:{ckpt}", "--data", check.data, "--out",
                 str(check.work / "onnx")],
            )  # fmt: skip
            exported = True
    trt = [s for s in plan.setups if s.backend == "trt"]
    if exported and trt and check.due("engines"):
        with check.step("engines"):
            _call(
                "engines.build",
                ["--methods", METHOD, "--precision", trt[0].precision, "--onnx-dir",
                 str(check.work / "onnx"), "--out", str(check.work / "engines"), "--device",
                 check.device],
            )  # fmt: skip
    results = []
    flops = _flops(ckpt) if ckpt is not None and ckpt.is_file() else None
    for setup in plan.setups:
        needs_onnx = setup.backend in ("onnxruntime", "trt")
        if ckpt is None or not ckpt.is_file() or (needs_onnx and not exported):
            check.skip(setup.name, "no checkpoint or ONNX (an earlier step failed)")
            continue
        if not check.due(setup.name):
            continue
        with check.step(setup.name) as entry:
            s = setup_step(check, setup, ckpt, ds, flops)
            results.append(s)
            entry.update({k: v for k, v in s.items() if k != "setup"})
    doc = make_results(
        "gpu-check",
        check.steps,
        config={"device": check.device, "data": check.data, "epochs": epochs, **recipe_options},
        hardware=caps.to_dict(),
        setups=results,
        seconds=round(time.perf_counter() - check.t0, 1),
    )
    write_json_atomic(check.out / "summary.json", doc)
    md = summary_markdown(caps.name, check.steps, results)
    write_text_atomic(check.out / "SUMMARY.md", md)
    print(md)
    print(f"gpu-check: wrote {check.out} in {doc['seconds']:.0f} s", file=sys.stderr)
    return 0


def _call(module: str, argv: list[str]) -> None:
    """Run another command's main in this process; a non-zero exit is an error here."""
    main_fn: Callable[[list[str]], int | None] = importlib.import_module(
        f"{module}.__main__" if module == "export" else module
    ).main
    code = main_fn(argv)
    if code:
        raise RuntimeError(f"python -m {module} exited {code}")


def _flops(ckpt: Path) -> float | None:
    from bench.fps import count_flops
    from imsim.methods import create_method

    return count_flops(create_method(f"{METHOD}:{ckpt}").as_module(), 32)


if __name__ == "__main__":
    run(main)
