"""`mgr inspect PATH`: a summary of any stage output (pipeline/summary.py), as rich tables or JSON."""
from __future__ import annotations

import json
from pathlib import Path

import typer


def inspect(
    path: Path = typer.Argument(..., help="A Parquet, JSON or .pt output, or a folder of them."),
    rows: int = typer.Option(5, min=0, help="How many rows of a Parquet file to show."),
    fmt: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Summarise a stage output: Parquet (with code usage for semantic IDs), folder, JSON or checkpoint."""
    from pipeline.summary import summarize
    if fmt not in ("table", "json"):
        raise typer.BadParameter(f"unknown format {fmt!r}; expected table or json", param_hint="--format")
    s = summarize(path, rows)
    if fmt == "json":
        if "head" in s:
            s["head"] = s["head"].to_dicts()
        typer.echo(json.dumps(s, indent=2, default=str))
        return
    _render(s)


def _render(s: dict) -> None:
    from rich.console import Console
    from rich.pretty import Pretty
    from rich.table import Table

    console = Console()
    if s["kind"] == "folder":
        table = Table("file", "bytes", "rows", title=s["path"])
        for f in s["files"]:
            table.add_row(f["file"], f"{f['bytes']:,}", f"{f['rows']:,}" if "rows" in f else "")
        console.print(table)
    elif s["kind"] == "parquet":
        console.print(f"[bold]{s['path']}[/bold]: {s['rows']:,} rows")
        schema = Table("column", "type", title="schema")
        for c, t in s["schema"].items():
            schema.add_row(c, t)
        console.print(schema)
        head = Table(*s["head"].columns, title=f"first {s['head'].height} rows")
        for row in s["head"].iter_rows():
            head.add_row(*[str(v) for v in row])
        console.print(head)
        if "codes" in s:
            codes = Table("level", "codes used", "entropy (bits)", "top code's share", title="code usage")
            for level, u in s["codes"]["levels"].items():
                codes.add_row(level, str(u["used"]), f"{u['entropy_bits']:.3f}", f"{u['top_share']:.2%}")
            console.print(codes)
            c = s["codes"]
            console.print(f"{c['distinct_tuples']:,} distinct tuples; {c['items_sharing_a_tuple']:,} items share "
                          f"one (at most {c['max_items_per_tuple']} per tuple)")
    else:
        console.print(f"[bold]{s['path']}[/bold] ({s['kind']})")
        console.print(Pretty({k: v for k, v in s.items() if k not in ("kind", "path")}))
