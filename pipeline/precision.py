"""Which float type the matrix products run in: the recommender's (`train_dtype`, `decode_dtype`),
the RQ-VAE's training (`quantize.<m>.dtype`) and the encoders' (`embed.<m>.dtype`).

"auto" picks bfloat16 where the hardware multiplies bfloat16 natively (x86 AVX512-BF16 or AMX,
Arm BF16, CUDA GPUs that support it) and float32 elsewhere: there bfloat16 is emulated and runs
slower than float32. Weights stay float32 in training either way (autocast); the resolved name is
what reports record, so a result says what it ran in.
"""
from __future__ import annotations

import torch

CPU_BF16 = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")  # torch.cpu.get_capabilities() keys


def native_bfloat16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        caps = torch.cpu.get_capabilities()
        return any(caps.get(k) is True for k in CPU_BF16)
    return False


def autocast(device: torch.device, dtype: str):
    """bfloat16 autocast on `device` when the resolved `dtype` is bfloat16, else a context that does nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def resolve(dtype: str, device: torch.device) -> str:
    """"float32" or "bfloat16": `dtype` itself unless it is "auto"."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if native_bfloat16(device) else "float32"
