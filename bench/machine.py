"""What every bench result records about the machine it ran on."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def vector_isa() -> str:
    """The widest x86 vector extension the CPU reports: machines sold as one "AMD EPYC" differ
    here (AVX512 or AVX2 only), and a matmul-bound stage ran 1.5x slower on the AVX2 one."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return "unknown"
    words = set(flags.split())
    extra = [f for f in ("avx512_bf16", "amx_bf16") if f in words]
    base = "avx512" if "avx512f" in words else "avx2" if "avx2" in words else "other"
    return "+".join([base, *extra])


def machine() -> dict:
    """CPU model and vector extensions, usable cores, Python; torch's version and threads when the bench uses torch."""
    info = {"cpu": cpu_model(), "isa": vector_isa(), "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version()}
    torch = sys.modules.get("torch")  # not imported here: the ingestion benches do not use it
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info
