"""``proxscope demo``: run each task's ``demo`` and gather the results in one HTML report.

A task contributes ``proxscope.tasks.<task>.cli.demo(out_dir: Path, quiet: bool) -> dict`` with
keys ``title`` (str), ``text`` (str, one paragraph), ``metrics`` (dict of name -> number or str)
and ``figures`` (list of PNG paths inside ``out_dir``).
"""

from __future__ import annotations

import html
import importlib
import time
from pathlib import Path

from .data.io import atomic_path


def _section(task: str, result: dict, root: Path) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in result.get("metrics", {}).items()
    )
    figures = "".join(
        f'<figure><img src="{html.escape(str(Path(f).resolve().relative_to(root.resolve())))}" '
        f'style="max-width:100%"><figcaption>{html.escape(Path(f).stem)}</figcaption></figure>'
        for f in result.get("figures", [])
    )
    return (
        f"<section><h2>{html.escape(result.get('title', task))}</h2>"
        f"<p>{html.escape(result.get('text', ''))}</p>"
        f"<table border=1 cellpadding=4><tr><th>metric</th><th>value</th></tr>{rows}</table>"
        f"{figures}</section>"
    )


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_demo(out: str | Path, tasks: list[str], quiet: bool = False) -> Path:
    """Run the demos of ``tasks`` into ``out/<task>/`` and write ``out/report.html``."""
    from .errors import UserError

    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    sections = []
    for task in tasks:
        try:
            module = importlib.import_module(f"proxscope.tasks.{task}.cli")
        except ModuleNotFoundError:
            raise UserError(f"unknown task '{task}'") from None
        start = time.perf_counter()
        result = module.demo(root / task, quiet=quiet)
        result.setdefault("metrics", {})["demo time (s)"] = round(time.perf_counter() - start, 2)
        sections.append(_section(task, result, root))
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
