"""textae.training.precision and the model's float32 loss: what `auto` picks, master weights, the fused loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from textae.config import ModelConfig, TrainConfig, from_dict
from textae.errors import TextaeError
from textae.training import precision
from textae.training.model import Autoencoder, Float32CrossEntropy
from textae.training.precision import MasterWeights, native_bf16, resolve_precision

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)


def test_auto_picks_bf16_only_on_cpus_with_bf16_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": True, "avx512_bf16": True}, raising=False)
    assert native_bf16(CPU) and resolve_precision("auto", CPU) == "bf16"
    # avx512_bf16 without AMX (AMD Zen 4): bf16 dot products in the vector units, measured faster
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"amx_bf16": False, "avx512_bf16": True}, raising=False)
    assert native_bf16(CPU) and resolve_precision("auto", CPU) == "bf16"
    # AVX2 or plain AVX-512: bf16 is emulated, slower than fp32
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, "avx512": True, "avx512_vnni": True}, raising=False)
    assert not native_bf16(CPU) and resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16" and resolve_precision("fp32", CPU) == "fp32"


def test_auto_on_cuda_follows_torch_cuda_bf16_support(monkeypatch: pytest.MonkeyPatch) -> None:
    # no test may need a GPU: the CUDA decision is checked against a mocked torch.cuda
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_precision("auto", CUDA) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_precision("auto", CUDA) == "fp32"
    # the CPU's capabilities do not matter for a GPU run
    monkeypatch.setattr(precision, "_cpu_capabilities", lambda: {"amx_bf16": True})
    assert resolve_precision("auto", CUDA) == "fp32"


def test_older_torch_without_get_capabilities_falls_back_to_the_amx_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert native_bf16(CPU)


def test_bad_precision_is_refused() -> None:
    with pytest.raises(TextaeError, match="precision must be one of auto, fp32, bf16"):
        resolve_precision("fp16", CPU)
    with pytest.raises(TextaeError, match="precision must be one of"):
        TrainConfig(precision="half").validate()


def test_runs_saved_before_the_field_resume_in_fp32() -> None:
    assert from_dict(TrainConfig, {"seed": 1}).precision == "fp32"
    assert TrainConfig().precision == "auto"


def tiny_model() -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder(ModelConfig(vocab_size=50, embedding_dim=8, hidden_size=12, latent_dim=6, max_length=10))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([5, 3, 1, 0])
    input_ids = torch.randint(4, 50, (4, 5), generator=torch.Generator().manual_seed(1))
    return input_ids.masked_fill(torch.arange(5) >= lengths.unsqueeze(1), 0), lengths


def test_master_weights_stay_fp32_and_receive_the_bf16_gradients() -> None:
    model = tiny_model()
    weights = MasterWeights(model, "bf16")
    assert weights.mixed and all(p.dtype == torch.bfloat16 for p in weights.compute.parameters())
    with torch.no_grad():
        model.embedding.weight[5] += 1.0
    weights.refresh()
    assert torch.equal(weights.compute.embedding.weight[5], model.embedding.weight[5].bfloat16())
    _, loss = weights.compute(*batch(), return_logits=False)
    assert loss.dtype == torch.float32
    loss.backward()
    weights.gradients_to_master()
    for master, compute in zip(model.parameters(), weights.compute.parameters()):
        assert master.dtype == torch.float32 and master.grad is not None and master.grad.dtype == torch.float32
        assert compute.grad is None  # freed: the next backward starts from nothing
    # the bf16 gradient points the same way as the fp32 one
    reference = tiny_model()
    _, loss32 = reference(*batch(), return_logits=False)
    loss32.backward()
    a = torch.cat([p.grad.flatten() for p in model.parameters()])
    b = torch.cat([p.grad.flatten() for p in reference.parameters()])
    assert F.cosine_similarity(a, b, dim=0) > 0.99


def test_fp32_master_weights_are_the_model_itself() -> None:
    model = tiny_model()
    weights = MasterWeights(model, "fp32")
    assert weights.compute is model and not weights.mixed
    with pytest.raises(TextaeError):
        MasterWeights(model, "auto")


def test_loss_without_logits_equals_the_full_loss() -> None:
    model = tiny_model().train()
    input_ids, lengths = batch()
    logits, full = model(input_ids, lengths)
    none, lean = model(input_ids, lengths, return_logits=False)
    assert none is None and logits is not None and logits.shape == (4, 6, 50)
    assert torch.allclose(full, lean, atol=1e-6)


def test_float32_cross_entropy_matches_torch_in_loss_and_gradient() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(300, 97, generator=generator) * 3).bfloat16().requires_grad_()  # 300 rows: blocks and a partial one
    targets = torch.randint(0, 97, (300,), generator=generator)
    loss = Float32CrossEntropy.apply(logits, targets)
    (loss * 2).backward()
    fused_grad = logits.grad.clone()
    logits.grad = None
    reference = F.cross_entropy(logits.float(), targets)
    (reference * 2).backward()
    assert loss.dtype == torch.float32 and abs(loss.item() - reference.item()) < 1e-5
    assert fused_grad.dtype == torch.bfloat16
    assert torch.allclose(fused_grad.float(), logits.grad.float(), atol=1e-4)
