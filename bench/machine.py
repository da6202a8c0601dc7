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


def machine() -> dict:
    """CPU model, usable cores, Python; torch's version and threads when the bench uses torch."""
    info = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "python": platform.python_version()}
    torch = sys.modules.get("torch")  # not imported here: the ingestion benches do not use it
    if torch is not None:
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info
