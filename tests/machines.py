"""Capabilities of the machines this project meets, for ``imsim.hardware.forced`` in tests."""

from imsim.hardware import Capabilities

# Flags as /proc/cpuinfo and torch report them on each.
XEON_AMX = Capabilities(
    kind="cpu",
    name="Intel Xeon (Sapphire Rapids)",
    isa="AVX512",
    avx512=True,
    avx512_bf16=True,
    avx512_fp16=True,
    amx_bf16=True,
    vnni=True,
)
ZEN5 = Capabilities(
    kind="cpu", name="AMD EPYC Zen 5", isa="AVX512", avx512=True, avx512_bf16=True, vnni=True
)
ZEN3 = Capabilities(kind="cpu", name="AMD EPYC Zen 3", isa="AVX2")
SKYLAKE = Capabilities(kind="cpu", name="Xeon Skylake-SP", isa="AVX512", avx512=True)
A100 = Capabilities(
    kind="cuda", name="A100", compute_capability=(8, 0), cuda_bf16=True, fp16_tensor_cores=True
)
T4 = Capabilities(kind="cuda", name="Tesla T4", compute_capability=(7, 5), fp16_tensor_cores=True)
P100 = Capabilities(kind="cuda", name="Tesla P100", compute_capability=(6, 0))
