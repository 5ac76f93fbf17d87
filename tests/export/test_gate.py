"""The gate at export and the FP32 fallback search: blocks by module scope, the search's steps on
a scripted gate, and (slow) the real search on a network with an INT8-hostile and an
FP16-hostile block."""

import json
import math

import onnx
import pytest
import torch

from export.__main__ import main
from export.gate import Verdict, block_of, group_units, search, slack
from imsim.backends.onnxruntime_backend import OnnxRuntimeBackend
from imsim.parity import tensor_metrics
from tests import nets
from tests.export import tiny


def test_blocks_follow_module_scopes():
    resnet = "/module/network/layers/layers.3/"
    assert block_of(resnet + "conv1/Conv") == block_of(resnet + "Relu_1") == resnet
    assert block_of("/module/network/encoder/layers.0/self_attn/MatMul_1") == (
        "/module/network/encoder/layers.0/"
    )
    assert block_of("/module/network/conv1/Conv") == "/module/network/conv1/"
    assert block_of("/module/network/head/Gemm") == "/module/network/head/"
    assert block_of("/Cast") == "/Cast" and block_of("unnamed_MatMul_0") == "unnamed_MatMul_0"
    groups = group_units(["/m/a.0/x/Conv", "/m/b/Gemm", "/m/a.0/y/Conv", "/m/a.1/Conv"])
    assert groups == {
        "/m/a.0/": ["/m/a.0/x/Conv", "/m/a.0/y/Conv"],
        "/m/b/": ["/m/b/Gemm"],
        "/m/a.1/": ["/m/a.1/Conv"],
    }


def _rows(cos: float, tie: float, mean: float, ci: float) -> list[dict]:
    gated = [
        ("cosine_min", cos, 0.99, ">="),
        ("top1_agreement_tie_aware", tie, 0.99, ">="),
        ("top1_delta_points", mean, 0.5, "ci within +-"),
    ]
    rows = [
        {"metric": m, "value": v, "tolerance": t, "op": op, "gate": True, "ci95": ci}
        for m, v, t, op in gated
    ]
    rows.append({"metric": "top1_agreement", "value": 0.5, "tolerance": 0.99, "op": ">="})
    return rows


def test_slack_is_the_worst_gated_check():
    assert slack(_rows(1.0, 1.0, 0.0, 0.1)) == pytest.approx(0.8)  # (0.5 - 0.1) / 0.5
    assert slack(_rows(0.995, 1.0, 0.0, 0.0)) == pytest.approx(0.5)  # (0.995 - 0.99) / 0.01
    assert slack(_rows(1.0, 0.98, 0.0, 0.0)) == pytest.approx(-1.0)  # ungated raw row ignored
    assert slack(_rows(float("nan"), 1.0, 0.0, 0.0)) == -math.inf


class ScriptedGate:
    """A gate that passes exactly when ``needed`` is kept FP32; a candidate's slack grows with
    how much of ``needed`` it keeps (so ranking has something to go by)."""

    def __init__(self, needed: set[str]) -> None:
        self.needed = needed
        self.calls: list[list[str]] = []

    def __call__(self, keep: list[str]) -> Verdict:
        self.calls.append(keep)
        have = len(self.needed & set(keep))
        passed = have == len(self.needed)
        s = 0.1 if passed else -1.0 + have / len(self.needed)
        return Verdict(passed, s, {"passed": passed, "have": have})


GROUPS = {"A": ["a1", "a2"], "B": ["b1", "b2", "b3"], "C": ["c1"]}


def test_nothing_is_kept_when_the_full_graph_passes():
    gate = ScriptedGate(set())
    fb = search(GROUPS, gate)
    assert gate.calls == [[]] and fb.kept == [] and fb.after is fb.before and fb.before.passed
    assert fb.to_dict()["kept_blocks"] == {} and len(fb.trials) == 1


def test_blocks_first_then_single_ops():
    gate = ScriptedGate({"a1", "b2"})
    fb = search(GROUPS, gate)
    assert not fb.before.passed and fb.after.passed
    assert fb.kept == ["a1", "b2"]  # minimal: neither a2, b1, b3 nor c1
    assert fb.blocks == {"A": ["a1"], "B": ["b2"]}
    # Steps: the full graph, each block alone, then blocks added in rank order (A and B each
    # hold half of what is needed, C none), then units released one by one.
    assert gate.calls[:4] == [[], ["a1", "a2"], ["b1", "b2", "b3"], ["c1"]]
    assert gate.calls[4] == ["a1", "a2", "b1", "b2", "b3"]  # A and B together pass
    steps = [t["step"] for t in fb.trials]
    assert steps[4] == "add block B" and steps[-1].startswith("release ")
    assert fb.reasons["A"]["gate_with_only_this_block_fp32"] == {"passed": False, "have": 1}
    assert fb.to_dict()["after"] == {"passed": True, "have": 2}


def test_no_candidate_passes_means_no_graph():
    gate = ScriptedGate({"zz"})  # a unit no block holds: nothing can pass
    fb = search(GROUPS, gate)
    assert fb.after is None and "even keeping all 3 blocks in FP32 fails" in fb.note
    assert fb.kept == [] and len(gate.calls) == 1 + 3 + 2  # full, alone x3, add (A+B), add C
    fb = search(GROUPS, ScriptedGate({"a1", "b2"}), max_trials=3)
    assert fb.after is None and "within 3 trials" in fb.note


def test_pruning_stops_at_the_trial_limit_with_a_passing_set():
    gate = ScriptedGate({"a1", "b2"})
    fb = search(GROUPS, gate, max_trials=6)  # full, 3 alone, add B, drop A: then no release
    assert fb.after.passed and set(fb.kept) >= {"a1", "b2"} and "trial limit" in fb.note


def test_export_gate_passes_a_good_graph_unchanged(tmp_path, monkeypatch):
    tiny.register(monkeypatch)
    argv = ["--method", "test-convnet", "--out", str(tmp_path), "--check-images", "4"]
    argv += ["--precision", "int8", "--calibration-images", "32", "--gate", "--episodes", "20"]
    assert main(argv) == 0
    side = json.loads((tmp_path / "test-convnet.int8.onnx.json").read_text())
    gate = side["gate"]
    assert gate["verdict"] == "PASS" and gate["fallback"] is False and gate["kept_fp32"] == []
    assert gate["before"] == gate["after"] and gate["before"]["passed"] and len(gate["trials"]) == 1
    # Judged on the seen classes' test images, never the unseen ones.
    assert gate["validation"]["classes"] == ["class0", "class1", "class2", "class3"]
    assert gate["validation"]["split"] == "test" and gate["validation"]["n_images"] == 4 * 30
    assert gate["tolerances"]["cos_min"] == 0.99 and side["int8"]["fp32_fallback"] == []


@pytest.mark.slow
def test_fallback_keeps_the_hostile_blocks_in_fp32_and_passes(tmp_path, monkeypatch):
    tiny.register(monkeypatch)
    argv = ["--method", "test-hostile", "--out", str(tmp_path), "--check-images", "8"]
    argv += ["--precision", "fp16,int8", "--calibration-images", "64", "--gate"]
    assert main([*argv, "--episodes", "50"]) == 0
    x = nets.images(9, seed=2)
    with torch.inference_mode():
        ref = tiny.hostile_module()(torch.from_numpy(x)).numpy()
    for precision, block in (("int8", "/module/blocks.1/"), ("fp16", "/module/blocks.2/")):
        path = tmp_path / f"test-hostile.{precision}.onnx"
        side = json.loads(path.with_name(path.name + ".json").read_text())
        gate = side["gate"]
        assert not gate["before"]["passed"] and gate["after"]["passed"] and gate["fallback"]
        # Only the hostile block is kept in FP32, and only what in it is needed.
        assert list(gate["kept_blocks"]) == [block]
        assert gate["kept_fp32"] and all(n.startswith(block) for n in gate["kept_fp32"])
        assert side[precision]["fp32_fallback"] == gate["kept_fp32"]
        assert gate["why"][block]["gate_with_only_this_block_fp32"]["passed"]
        assert gate["after"]["cosine_mean"] > gate["before"]["cosine_mean"]
        model = onnx.load(str(path))
        kept = [n for n in model.graph.node if n.name in gate["kept_fp32"]]
        assert len(kept) == len(gate["kept_fp32"])
        out = OnnxRuntimeBackend(path, precision).embed(x)
        assert tensor_metrics(ref, out)["cosine_min"] > 0.999
    # INT8: the kept conv has no Q/DQ at its inputs; every other matrix op is INT8.
    int8 = json.loads((tmp_path / "test-hostile.int8.onnx.json").read_text())
    assert int8["int8"]["graph"]["float_matrix_ops"] == int8["gate"]["kept_fp32"]
