"""The training loop: epochs, per-epoch validation, best-checkpoint selection and resume.

After every epoch the loop writes, each atomically: the best checkpoint so far (``M.safetensors``
+ ``M.json``, when validation improved), the metrics JSON (``M.metrics.json``), and the training
state (``M.state.safetensors`` + ``M.state.json``: weights, optimizer, schedule, history). A crash
therefore loses at most the epoch in progress; ``resume=True`` continues from the state and, since
every epoch is seeded by (seed, epoch), ends with the same weights as an uninterrupted run. The
state files are removed when training completes.

Bit for bit holds on the CPU. On CUDA, cuDNN picks convolution algorithms by timing and several
cuDNN/cuBLAS kernels accumulate in a run-dependent order, so two runs differ in the last bits
unless they are made deterministic: ``deterministic=True`` (``--deterministic``, and always with
``--resume``) selects deterministic algorithms for the run (``deterministic_mode``). The
interrupted run must have used it too for its resumption to match it bit for bit.

A training step never waits for the GPU: the loss is summed on the device and read back only
when the progress bar is redrawn and at the end of the epoch.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from imsim.checkpoints import checkpoint_paths, load_checkpoint, load_state, save_checkpoint
from imsim.data import Dataset
from imsim.errors import UserError
from imsim.hardware import capabilities, warn_if_emulated
from imsim.models import (
    CIFAR_MEAN,
    CIFAR_STD,
    INPUT_SIZE,
    EmbeddingModule,
    Preprocess,
    build_network,
)
from imsim.results import make_results, record, write_json_atomic
from train.batches import ImageBank, balanced_batches, draw_batches
from train.objectives import Objective
from train.recipes import Recipe
from train.validation import ClassPlan, EvalSets, evaluate


@dataclass
class RunConfig:
    method: str
    recipe: Recipe
    epochs: int
    out: Path
    seed: int = 0
    resume: bool = False
    device: str = "cpu"
    amp: str = "auto"  # auto | bf16 | fp16 | off
    deterministic: bool = False  # CUDA: deterministic cuDNN/cuBLAS (always on with resume)
    val_classes: int | None = None
    data_spec: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # recorded only


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype. ``auto`` picks only what the device runs natively
    (``imsim.hardware``): bf16 on CPUs with AVX512-BF16/AMX and on GPUs with native bf16, fp16
    (with loss scaling) on GPUs with fp16 tensor cores but no bf16 (T4, V100), else full
    precision (None). ``bf16``/``fp16`` asked for explicitly run anyway, with a warning when
    emulated."""
    if amp == "off":
        return None
    if amp in ("bf16", "fp16"):
        warn_if_emulated(amp, device, "training (--amp)")
        return torch.bfloat16 if amp == "bf16" else torch.float16
    caps = capabilities(device)
    if caps.native_bf16:
        return torch.bfloat16
    if caps.kind == "cuda" and caps.native_fp16:
        return torch.float16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Callable[[], Any]:
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to be deterministic (CUDA >= 10.2)


@contextlib.contextmanager
def deterministic_mode(device: torch.device, enabled: bool) -> Iterator[dict[str, Any]]:
    """Deterministic CUDA kernels for the duration of a run, the previous settings restored
    after: cuDNN without autotuning and with deterministic algorithms only, PyTorch's
    deterministic implementations (a warning where an op has none), and cuBLAS's fixed
    workspace (``CUBLAS_WORKSPACE_CONFIG``, read when cuBLAS first runs: the environment
    variable set before the process touches CUDA is the sure way). Yields what was set; nothing
    on the CPU, whose kernels here are deterministic already."""
    if not enabled or device.type != "cuda":
        yield {}
        return
    before = (
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield {
            "cudnn.deterministic": True,
            "cudnn.benchmark": False,
            "deterministic_algorithms": "warn_only",
            "CUBLAS_WORKSPACE_CONFIG": os.environ["CUBLAS_WORKSPACE_CONFIG"],
        }
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[:2]
        torch.use_deterministic_algorithms(before[2], warn_only=before[3])
        if before[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def seed_epoch(seed: int, epoch: int) -> None:
    """Seed every generator an epoch draws from, so it depends only on (seed, epoch)."""
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, 0]).generate_state(1)[0]))


def _optimizer(recipe: Recipe, net: torch.nn.Module) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def _schedule(
    recipe: Recipe, opt: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if recipe.schedule == "none":
        return None
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe.lr, total_steps=max(1, total_steps), pct_start=0.2
        )
    raise ValueError(f"unknown schedule {recipe.schedule!r}")


def _optimizer_to_files(sd: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (safetensors) and the rest (JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    state: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        state[str(pid)] = {}
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optimizer.{pid}.{k}"] = v
                state[str(pid)][k] = {"tensor": f"optimizer.{pid}.{k}"}
            else:
                state[str(pid)][k] = v
    return tensors, {"state": state, "param_groups": sd["param_groups"]}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {
        int(pid): {
            k: tensors[v["tensor"]] if isinstance(v, dict) and "tensor" in v else v
            for k, v in st.items()
        }
        for pid, st in meta["state"].items()
    }
    return {"state": state, "param_groups": meta["param_groups"]}


def state_paths(out: Path, method: str) -> tuple[Path, Path]:
    return checkpoint_paths(out / f"{method}.state")


class Trainer:
    """One training run of one method on one dataset."""

    def __init__(self, cfg: RunConfig, ds: Dataset) -> None:
        self.cfg = cfg
        self.ds = ds
        self.device = torch.device(cfg.device)
        self.deterministic = cfg.deterministic or cfg.resume
        self.determinism: dict[str, Any] = {}  # what deterministic_mode set, for the metrics
        self.dtype = amp_dtype(cfg.amp, self.device)
        self.autocast = _autocast(self.device, self.dtype)
        self.plan = ClassPlan.make(ds.split.seen, cfg.val_classes)
        self.sets = EvalSets.make(ds, self.plan)
        train = ds.train.subset(self.plan.train)
        self.preprocess = Preprocess(INPUT_SIZE, CIFAR_MEAN, CIFAR_STD)
        self.bank = ImageBank(
            train.images, train.labels, self.preprocess, cfg.recipe.augment, cfg.seed, self.device
        )
        r = cfg.recipe
        self.samples = r.samples_per_epoch or len(self.bank)
        self.steps_per_epoch = max(1, self.samples // r.batch_size)
        if self.samples < r.batch_size:
            raise UserError(
                f"an epoch of {self.samples} samples is smaller than a batch of {r.batch_size}"
            )
        torch.manual_seed(cfg.seed)
        self.net = build_network(r.arch).to(self.device, memory_format=torch.channels_last)
        self.module = EmbeddingModule(self.net, self.preprocess).to(self.device)
        self.opt = _optimizer(r, self.net)
        # fp16 needs loss scaling against gradient underflow; bf16 and fp32 do not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.sched = _schedule(r, self.opt, self.steps_per_epoch * cfg.epochs)
        self.objective = Objective(r, self.autocast)
        self.history: list[dict] = []
        self.best: dict | None = None
        self.start_epoch = 1

    # -- identity of a run, checked on resume --------------------------------------------------
    def identity(self) -> dict:
        c = self.cfg
        return {
            "method": c.method,
            "data": c.data_spec,
            "recipe": c.recipe.to_dict(),
            "epochs": c.epochs,
            "seed": c.seed,
            "val_classes": list(self.plan.val),
            "amp": str(self.dtype),
        }

    def split_info(self) -> dict:
        names = self.ds.class_names
        return {
            "train": [names[c] for c in self.plan.train],
            "validation": [names[c] for c in self.plan.val],
            "unseen": [names[c] for c in self.ds.split.unseen],
        }

    # -- files ---------------------------------------------------------------------------------
    def _save_state(self, epoch: int) -> None:
        opt_tensors, opt_meta = _optimizer_to_files(self.opt.state_dict())
        tensors = {f"model.{k}": v for k, v in self.net.state_dict().items()} | opt_tensors
        save_checkpoint(
            state_paths(self.cfg.out, self.cfg.method)[0],
            tensors,
            {
                "kind": "training-state",
                "identity": self.identity(),
                "epoch": epoch,
                "optimizer": opt_meta,
                "schedule": self.sched.state_dict() if self.sched is not None else None,
                "scaler": self.scaler.state_dict(),
                "deterministic": self.deterministic,
                "best": self.best,
                "history": self.history,
            },
        )

    def _load_state(self) -> bool:
        weights, cfg_path = state_paths(self.cfg.out, self.cfg.method)
        if not cfg_path.exists():
            return False
        tensors, st = load_checkpoint(weights, kind="training-state")
        mine, theirs = self.identity(), st.get("identity", {})
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            raise UserError(
                f"cannot resume from {cfg_path}: it was made with different {', '.join(diff)}; "
                "use the same arguments, or drop --resume to start over"
            )
        model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        load_state(self.net, model, str(weights))
        self.opt.load_state_dict(_optimizer_from_files(tensors, st["optimizer"]))
        if self.sched is not None:
            self.sched.load_state_dict(st["schedule"])
        if st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.best, self.history = st["best"], st["history"]
        self.start_epoch = int(st["epoch"]) + 1
        if self.device.type == "cuda" and not st.get("deterministic", False):
            print(
                "note: the interrupted run was not --deterministic, so on CUDA the resumed run "
                "will not match an uninterrupted one bit for bit",
                file=sys.stderr,
            )
        return True

    def _save_best(self, epoch: int, scores: dict) -> None:
        r = self.cfg.recipe
        save_checkpoint(
            self.cfg.out / f"{self.cfg.method}.safetensors",
            self.net.state_dict(),
            {
                "kind": "model",
                "method": self.cfg.method,
                "arch": r.arch,
                "preprocess": {
                    "input_size": INPUT_SIZE,
                    "mean": list(CIFAR_MEAN),
                    "std": list(CIFAR_STD),
                },
                "normalization": "RGB / 255, CIFAR mean/std; embedding L2-normalized",
                "data": {"spec": self.cfg.data_spec, "name": self.ds.name, "info": self.ds.info},
                "split": self.split_info(),
                "recipe": r.to_dict(),
                "seed": self.cfg.seed,
                "epoch": epoch,
                "epochs": self.cfg.epochs,
                "validation": {"metric": "map@r", "value": scores["val_map@r"]},
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )

    def _write_metrics(self) -> Path:
        rows = []
        for h in self.history:
            e = h["epoch"]
            m = self.cfg.method
            rows += [
                record(m, "training", "loss", h["loss"], epoch=e) if e else None,
                record(m, "training", "images_per_second", h["images_per_second"], epoch=e)
                if e
                else None,
                record(m, "validation", "map@r", h["val_map@r"], epoch=e, classes="held-out seen"),
                record(m, "validation", "recall@1", h["val_recall@1"], epoch=e),
                record(
                    m,
                    "unseen-episodes",
                    "top1",
                    h["unseen_episodes_top1"],
                    ci95=h["unseen_episodes_ci95"],
                    epoch=e,
                    note="report only, never used for selection",
                ),
                record(m, "unseen-retrieval", "map@r", h["unseen_map@r"], epoch=e),
            ]
        doc = make_results(
            "training",
            [r for r in rows if r is not None],
            config={
                **self.identity(),
                "out": str(self.cfg.out),
                "deterministic": self.deterministic,
                "determinism": self.determinism,
                **self.cfg.extra,
            },
            split=self.split_info(),
            selected=self.best,
            completed=bool(self.history) and self.history[-1]["epoch"] == self.cfg.epochs,
            epochs=self.history,
        )
        return write_json_atomic(self.cfg.out / f"{self.cfg.method}.metrics.json", doc)

    # -- the loop ------------------------------------------------------------------------------
    def _batches(self, epoch: int):
        r = self.cfg.recipe
        labels = self.bank.labels
        if r.sampling == "balanced":
            return balanced_batches(labels, r.batch_size, self.samples, self.cfg.seed, epoch)
        return draw_batches(labels, r.batch_size, self.samples, self.cfg.seed, epoch, r.sampling)

    def _evaluate(self, epoch: int, extra: dict) -> dict:
        scores = evaluate(self.module, self.sets, self.autocast(), self.cfg.method)
        entry = {"epoch": epoch, **extra, **scores}
        self.history.append(entry)
        improved = self.best is None or scores["val_map@r"] > self.best["val_map@r"]
        if epoch > 0 and improved:
            self.best = dict(entry)
            self._save_best(epoch, scores)
        return entry

    def run(self, on_epoch_end: Callable[[int], None] | None = None) -> dict:
        with deterministic_mode(self.device, self.deterministic) as self.determinism:
            return self._run(on_epoch_end)

    def _run(self, on_epoch_end: Callable[[int], None] | None) -> dict:
        cfg = self.cfg
        cfg.out.mkdir(parents=True, exist_ok=True)
        resumed = cfg.resume and self._load_state()
        if resumed:
            print(f"resuming {cfg.method} after epoch {self.start_epoch - 1}", file=sys.stderr)
        else:
            if cfg.resume:
                print(f"no training state in {cfg.out}; starting from scratch", file=sys.stderr)
            e0 = self._evaluate(0, {})  # the untrained network, for the curve
            print(
                f"epoch 0 (untrained): val mAP@R {e0['val_map@r']:.4f}, "
                f"unseen episodes {100 * e0['unseen_episodes_top1']:.2f}%",
                file=sys.stderr,
            )
        for epoch in range(self.start_epoch, cfg.epochs + 1):
            seed_epoch(cfg.seed, epoch)
            self.net.train()
            t0 = shown = time.perf_counter()
            total = torch.zeros((), device=self.device)  # the loss sum, read back rarely
            n_img, n_batches = 0, 0
            bar = tqdm(
                self._batches(epoch),
                total=self.steps_per_epoch,
                desc=f"{cfg.method} epoch {epoch}/{cfg.epochs}",
                unit="batch",
                mininterval=2,
                file=sys.stderr,
            )
            for batch in bar:
                loss, n = self.objective(self.net, self.bank, batch)
                self.opt.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
                if self.sched is not None:
                    self.sched.step()
                total += loss.detach().float()
                n_img += n
                n_batches += 1
                if time.perf_counter() - shown >= 2.0:
                    shown = time.perf_counter()
                    bar.set_postfix(
                        loss=f"{total.item() / n_batches:.4f}",
                        img_s=f"{n_img / (shown - t0):.0f}",
                        refresh=False,
                    )
            bar.close()
            total = total.item()  # waits for the epoch's last step
            secs = time.perf_counter() - t0
            entry = self._evaluate(
                epoch,
                {
                    "loss": total / max(1, n_batches),
                    "images_per_second": n_img / secs,
                    "train_seconds": secs,
                    "lr": self.opt.param_groups[0]["lr"],
                },
            )
            mark = " *" if self.best and self.best["epoch"] == epoch else ""
            print(
                f"epoch {epoch}: loss {entry['loss']:.4f}, {entry['images_per_second']:.0f} img/s, "
                f"val mAP@R {entry['val_map@r']:.4f}{mark} | unseen (report only) episodes "
                f"{100 * entry['unseen_episodes_top1']:.2f}%, mAP@R {entry['unseen_map@r']:.4f}",
                file=sys.stderr,
            )
            self._write_metrics()
            self._save_state(epoch)
            if on_epoch_end is not None:
                on_epoch_end(epoch)
        self._write_metrics()
        for p in state_paths(cfg.out, cfg.method):
            p.unlink(missing_ok=True)
        return {"best": self.best, "history": self.history}
