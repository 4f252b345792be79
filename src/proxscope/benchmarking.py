"""Shared plumbing for ``proxscope bench <task>``: machine facts and the JSON result file."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any


def machine_info() -> dict[str, Any]:
    """CPU, threads, load and library versions, recorded with every benchmark result."""
    import numpy
    import scipy
    import skimage
    import sklearn
    import torch

    from . import __version__

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "proxscope": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "scikit-image": skimage.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def write_result(path: str | Path, task: str, quick: bool, results: dict[str, Any]) -> Path:
    """Write ``{"task", "mode", "machine", "results"}`` as JSON (atomically) and return the path."""
    from .data.io import write_json

    payload = {
        "task": task,
        "mode": "quick" if quick else "full",
        "machine": machine_info(),
        "results": results,
    }
    return write_json(path, payload)


def median_time(fn, repeats: int = 3, warmup: int = 0) -> float:
    """Median wall time (s) of ``repeats`` calls of ``fn()`` after ``warmup`` untimed calls."""
    import statistics

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
