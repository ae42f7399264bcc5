"""int8 that is exact integer arithmetic on every x86-64 CPU, and a precision per job.

On CPUs without VNNI, onnxruntime's uint8 x int8 kernels add each pair of products into a
saturating int16 (vpmaddubsw). textae keeps every int8 weight to 7 bits so no pair can saturate.
The tests check the decision on any CPU (a numpy model of the saturating kernel, mocked CPU flags)
and the arithmetic on the CPU at hand (onnxruntime's real kernels). Where qemu-user is installed,
one test also runs the int8 encoder on an emulated AVX2-only CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers.exports import exported
from helpers.paths import ROOT
from helpers.tiny import TINY_SENTENCES

from textae import manifest as manifest_module
from textae.cpu import CpuInfo, cpu_from_dict, this_cpu
from textae.manifest import MANIFEST_FILE, Manifest, int8_is_exact_on
from textae.runtime.model import TextAE

INT16_MAX = 32767
AVX2_ONLY = CpuInfo("AMD EPYC 7B13", ("avx2", "fma"))
AMX = CpuInfo("Intel(R) Xeon(R) Platinum 8481C", ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8"))


def saturating_pair_sums(activations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """x @ W as AVX2's vpmaddubsw + vpmaddwd compute it: each adjacent pair of uint8 x int8 products
    is added into an int16 that saturates, then the pairs are summed exactly."""
    a = activations.astype(np.int64)[:, :, None]  # (M, K, 1)
    w = weights.astype(np.int64)[None, :, :]  # (1, K, N)
    products = a * w
    pairs = products[:, 0::2, :] + products[:, 1::2, :]
    return np.clip(pairs, -INT16_MAX - 1, INT16_MAX).sum(axis=1)


@pytest.mark.parametrize(("weight_limit", "exact"), [(127, False), (64, True), (63, True)])
def test_seven_bit_weights_cannot_saturate_a_pair_of_products(weight_limit: int, exact: bool) -> None:
    rng = np.random.default_rng(0)
    activations = rng.integers(0, 256, size=(16, 64))  # uint8 q + 128, the full range
    weights = rng.integers(-weight_limit, weight_limit + 1, size=(64, 32))
    weights[:, 0] = weight_limit  # the worst case: every product of a column at its largest
    activations[0] = 255
    reference = activations @ weights
    assert np.array_equal(saturating_pair_sums(activations, weights), reference) is exact


def test_the_int8_kernels_of_this_cpu_sum_exactly_at_the_limits_textae_uses() -> None:
    """The real onnxruntime kernel on this machine: full-range uint8 activations, 7-bit weights."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    activations = rng.integers(0, 256, size=(64, 512)).astype(np.uint8)
    weights = rng.integers(-63, 64, size=(512, 256)).astype(np.int8)
    weights[:, :8] = 63
    activations[:4] = 255
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w", "zero"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [64, 512])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [64, 256])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array(128, np.uint8), "zero")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"a": activations})
    assert np.array_equal(got, (activations.astype(np.int64) - 128) @ weights.astype(np.int64))


def _int8_weights(folder: Path) -> dict[str, np.ndarray]:
    """Every int8 initializer of the folder's int8 graphs, read from weights.bin where it lives."""
    found = {}
    for path in sorted(folder.glob("*.int8.onnx")):
        for init in onnx.load(str(path), load_external_data=False).graph.initializer:
            if init.data_type != onnx.TensorProto.INT8:
                continue
            if init.data_location == onnx.TensorProto.EXTERNAL:
                info = {entry.key: entry.value for entry in init.external_data}
                with open(folder / info["location"], "rb") as handle:
                    handle.seek(int(info.get("offset", 0)))
                    data = handle.read(int(info["length"]))
                found[f"{path.name}:{init.name}"] = np.frombuffer(data, dtype=np.int8)
            else:
                found[f"{path.name}:{init.name}"] = onnx.numpy_helper.to_array(init)
    return found


def test_every_int8_weight_of_an_export_keeps_seven_bits(random_export: Path) -> None:
    weights = _int8_weights(random_export)
    graphs = {name.split(":")[0] for name in weights}
    assert {"encoder.int8.onnx", "decoder_score.int8.onnx", "decoder_step.int8.onnx"} <= graphs
    assert max(int(np.abs(values.astype(np.int16)).max()) for values in weights.values()) <= 64
    assert json.loads((random_export / MANIFEST_FILE).read_text())["quantization"]["weight_bits"] == 7


def test_the_gate_records_the_cpu_it_ran_on_and_info_shows_both(random_export: Path) -> None:
    manifest = Manifest.load(random_export)
    recorded = cpu_from_dict(manifest.quantization["cpu"])
    assert recorded == this_cpu() and recorded.model
    from textae.manifest import describe_manifest

    rows = dict(describe_manifest(random_export, manifest))
    assert rows["gate measured on"] == recorded.describe() and rows["this CPU"].startswith(this_cpu().model)
    assert {"int8 gate, embed", "int8 gate, text"} <= set(rows)


def test_cpu_kinds_and_the_saturation_decision() -> None:
    assert AVX2_ONLY.kind == "AVX2-only" and AVX2_ONLY.int8_pairs_saturate
    assert AMX.kind == "AMX" and not AMX.int8_pairs_saturate
    assert CpuInfo("Xeon Silver 4114", ("avx2", "fma", "avx512f")).int8_pairs_saturate  # AVX-512 without VNNI
    assert not CpuInfo("Core i7-12700", ("avx2", "fma", "avx_vnni")).int8_pairs_saturate
    assert not CpuInfo("Neoverse-V1", (), machine="aarch64").int8_pairs_saturate  # Arm widens every product
    assert cpu_from_dict(AMX.to_dict()) == AMX and cpu_from_dict({"model": 3}) is None


def test_cpu_is_read_from_proc_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx2 fma bmi2\n\nprocessor\t: 1\n")
    assert this_cpu(cpuinfo).model == "AMD EPYC 7B13" and this_cpu(cpuinfo).flags == ("avx2", "fma")
    assert this_cpu(tmp_path / "missing").flags == ()


def _with_manifest(folder: Path, target: Path, edit) -> Path:
    shutil.copytree(folder, target)
    data = json.loads((target / MANIFEST_FILE).read_text())
    edit(data)
    (target / MANIFEST_FILE).write_text(json.dumps(data))
    return target


def test_an_older_eight_bit_export_loads_fp32_where_its_products_would_saturate(
    random_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def older(data: dict) -> None:
        del data["quantization"]["weight_bits"]  # exported before 7-bit weights: 8-bit
        data["job_precisions"] = {"embed": "int8", "text": "int8"}

    folder = _with_manifest(random_export, tmp_path / "older", older)
    assert not int8_is_exact_on(Manifest.load(folder), AVX2_ONLY) and int8_is_exact_on(Manifest.load(folder), AMX)
    monkeypatch.setattr(manifest_module, "this_cpu", lambda: AVX2_ONLY)
    assert TextAE.load(folder).precisions == {"embed": "fp32", "text": "fp32"}
    assert TextAE.load(folder, precision="int8").precisions == {"embed": "int8", "text": "int8"}  # asked for: allowed
    monkeypatch.setattr(manifest_module, "this_cpu", lambda: AMX)
    assert TextAE.load(folder).precisions == {"embed": "int8", "text": "int8"}


def test_each_job_runs_at_its_own_precision(random_export: Path, tmp_path: Path) -> None:
    folder = _with_manifest(random_export, tmp_path / "mixed", lambda data: data.update(job_precisions={"embed": "int8", "text": "fp32"}))
    mixed = TextAE.load(folder)
    fp32, int8 = TextAE.load(folder, precision="fp32"), TextAE.load(folder, precision="int8")
    assert mixed.precisions == {"embed": "int8", "text": "fp32"} and mixed.precision == "int8 embed, fp32 text"
    np.testing.assert_array_equal(mixed.embed(TINY_SENTENCES), int8.embed(TINY_SENTENCES))
    np.testing.assert_array_equal(mixed.score(TINY_SENTENCES), fp32.score(TINY_SENTENCES))
    assert mixed.reconstruct(TINY_SENTENCES) == fp32.reconstruct(TINY_SENTENCES)  # the text path is fp32 end to end
    assert mixed.score_percentiles() == fp32.score_percentiles()


def test_the_manifest_refuses_a_bad_job_precision(random_export: Path, tmp_path: Path) -> None:
    from textae.errors import TextaeError

    folder = _with_manifest(random_export, tmp_path / "bad", lambda data: data.update(job_precisions={"embed": "int4"}))
    with pytest.raises(TextaeError, match="job_precisions"):
        Manifest.load(folder)


QEMU = shutil.which("qemu-x86_64")
EMULATED = (
    "import json, sys, numpy as np\n"
    "from textae.runtime.model import TextAE\n"
    "model = TextAE.load(sys.argv[1], precision='int8', num_threads=1)\n"
    "print(json.dumps(model.embed(json.loads(sys.argv[2])).tolist()))\n"
)


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None or sys.platform != "linux", reason="needs qemu-user (apt-get install qemu-user) to emulate an AVX2-only CPU")
def test_int8_vectors_are_the_same_on_an_emulated_avx2_only_cpu(tmp_path_factory: pytest.TempPathFactory, trained_run: Path) -> None:
    """qemu's Haswell model has AVX2 and FMA but no AVX-512 or VNNI, so onnxruntime takes its
    saturating vpmaddubsw kernels there: 8-bit weights gave other vectors, 7-bit ones the same."""
    folder = exported(tmp_path_factory, trained_run, quantize="int8")
    sentences = TINY_SENTENCES[:16]
    native = TextAE.load(folder, precision="int8", num_threads=1).embed(sentences)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [QEMU, "-cpu", "Haswell", os.path.realpath(sys.executable), "-c", EMULATED, str(folder), json.dumps(sentences)],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    emulated = np.array(json.loads(done.stdout), dtype=np.float32)
    assert np.abs(emulated - native).max() <= 1e-5
