"""The CPU this process runs on: its model name and the instruction sets that decide int8 and bf16 speed (stdlib only).

An export records the CPU its int8 gate was measured on, `textae info` prints it beside the running
CPU's, and the benchmarks print it at the top of every table: the same model is fast or slow, and
(before textae kept int8 weights to 7 bits) right or wrong, depending on these flags.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Linux /proc/cpuinfo flag names, in the order they are printed: what int8 and bf16 kernels dispatch on.
# avx2 + fma is the x86-64 floor textae is tested for; without a VNNI flag, int8 products go through
# vpmaddubsw, which saturates a pair of 8-bit products at 16 bits (hence 7-bit weights).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
CPUINFO = Path("/proc/cpuinfo")


VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int8 engines that add products in int32, never saturating
X86_MACHINES = ("x86_64", "amd64", "i386", "i686")


@dataclass(frozen=True)
class CpuInfo:
    model: str  # e.g. "AMD EPYC 7B13" or "Intel(R) Xeon(R) Processor"
    flags: tuple[str, ...]  # the ISA_FLAGS this CPU has, in ISA_FLAGS order
    machine: str = "x86_64"  # platform.machine(): the ISA flags above are x86 ones

    @property
    def int8_pairs_saturate(self) -> bool:
        """Whether onnxruntime's uint8 x int8 kernels here add pairs of products in a saturating
        int16 (x86 without VNNI or AMX): then only 7-bit weights give exact sums. Arm's kernels widen
        each product (or use dot-product instructions) and never saturate."""
        return self.machine.lower() in X86_MACHINES and not any(flag in self.flags for flag in VNNI_FLAGS)

    @property
    def kind(self) -> str:
        """A short name for the int8/bf16 class of the CPU: what a README figure should say it came from."""
        if self.machine.lower() not in X86_MACHINES:
            return self.machine
        has = set(self.flags)
        if "amx_int8" in has or "amx_bf16" in has:
            return "AMX"
        if "avx512_vnni" in has or "avx_vnni" in has:
            return "VNNI"
        if "avx512f" in has:
            return "AVX-512 without VNNI"
        if "avx2" in has:
            return "AVX2-only"
        return "no AVX2"

    def describe(self) -> str:
        return f"{self.model} ({self.kind}: {' '.join(self.flags) or 'none of ' + ' '.join(ISA_FLAGS)})"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "flags": list(self.flags), "kind": self.kind, "machine": self.machine}


def this_cpu(cpuinfo: Path = CPUINFO) -> CpuInfo:
    """The running CPU, read from /proc/cpuinfo where it exists (Linux), else from the platform module
    with no flags known."""
    machine = platform.machine() or "unknown"
    model, flags = platform.processor() or machine, set()
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and value.strip():
            model = value.strip()
        elif key == "flags":
            flags = set(value.split())
        if key == "" and flags:  # the first processor's block is enough: all cores are the same CPU
            break
    return CpuInfo(model, tuple(flag for flag in ISA_FLAGS if flag in flags), machine)


def cpu_from_dict(data: Any) -> CpuInfo | None:
    """A CpuInfo recorded in a manifest, or None when it is absent or malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("model"), str) or not isinstance(data.get("flags"), list):
        return None
    return CpuInfo(data["model"], tuple(str(flag) for flag in data["flags"]), str(data.get("machine", "x86_64")))
