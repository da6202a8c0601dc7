import pytest
import torch

from pipeline import precision


def test_explicit_dtypes_pass_through():
    cpu = torch.device("cpu")
    assert precision.resolve("float32", cpu) == "float32" and precision.resolve("bfloat16", cpu) == "bfloat16"


@pytest.mark.parametrize("caps, expected", [({"avx512_bf16": True}, "bfloat16"), ({"amx_bf16": True}, "bfloat16"),
                                            ({"avx2": True, "avx512_bf16": False}, "float32"), ({}, "float32")])
def test_auto_is_bfloat16_only_with_native_cpu_support(monkeypatch, caps, expected):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert precision.resolve("auto", torch.device("cpu")) == expected


def test_auto_on_a_device_without_bfloat16_matmuls_is_float32():
    assert precision.resolve("auto", torch.device("meta")) == "float32"
