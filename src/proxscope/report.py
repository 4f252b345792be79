"""``proxscope demo``: run each task's :meth:`~proxscope.tasks.base.Task.demo` and gather the
results in one HTML report; :func:`save_figure` writes the PNG figures of every task."""

from __future__ import annotations

import html
import time
from pathlib import Path

from .data.io import atomic_path


def save_figure(fig, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write a matplotlib figure as PNG atomically and close it; returns the path. ``tight``:
    crop to the drawn content (with a small margin); off: the figure's own size in pixels
    (e.g. an overlay of exactly one figure pixel per image pixel)."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    finally:
        plt.close(fig)
    return path


def _section(task: str, result, root: Path) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in result.metrics.items()
    )
    figures = "".join(
        f'<figure><img src="{html.escape(str(Path(f).resolve().relative_to(root.resolve())))}" '
        f'style="max-width:100%"><figcaption>{html.escape(Path(f).stem)}</figcaption></figure>'
        for f in result.figures
    )
    return (
        f"<section><h2>{html.escape(result.title or task)}</h2>"
        f"<p>{html.escape(result.text)}</p>"
        f"<table border=1 cellpadding=4><tr><th>metric</th><th>value</th></tr>{rows}</table>"
        f"{figures}</section>"
    )


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_demo(out: str | Path, tasks: list[str], quiet: bool = False) -> Path:
    """Run the demos of ``tasks`` into ``out/<task>/`` and write ``out/report.html``."""
    from .data.io import check_writable
    from .tasks import get_task

    root = check_writable(out, is_dir=True)
    selected = [get_task(name) for name in tasks]  # unknown names fail before any work
    sections = []
    for task in selected:
        start = time.perf_counter()
        result = task.demo(root / task.name, quiet=quiet)
        result.metrics["demo time (s)"] = round(time.perf_counter() - start, 2)
        sections.append(_section(task.name, result, root))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>proxscope demo</title></head>"
        "<body style='font-family:sans-serif;max-width:1100px;margin:auto'>"
        "<h1>proxscope demo</h1><p>Bundled weights on simulated data.</p>"
        + "".join(sections)
        + "</body></html>"
    )
    path = root / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return path
