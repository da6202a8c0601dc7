"""`mgr generate`: write the embedded synthetic dataset (raw Amazon 2014 formats) into a folder."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.errors import PipelineError
from pipeline.params import load_section


def generate(
    out: Path = typer.Option(Path("data/raw/synthetic"), help="Output folder (replaced atomically)."),
    params: Optional[Path] = typer.Option(
        None, help="Read the `generate:` section of this params file (all knobs: see pipeline/synthetic.py)."
    ),
    seed: Optional[int] = typer.Option(None, help="Random seed (overrides params)."),
    n_users: Optional[int] = typer.Option(None, help="Number of users (overrides params)."),
) -> None:
    """Generate the synthetic dataset: seeded, deterministic, clearly labelled synthetic."""
    from pipeline.synthetic import SyntheticConfig, generate as run_generate
    cfg: SyntheticConfig = load_section(params, "generate", SyntheticConfig, {"seed": seed, "n_users": n_users})
    problems = cfg.problems()
    if problems:
        key, msg = problems[0]
        raise PipelineError(f"{params or 'command line'}: generate.{key} {msg}")
    counts = run_generate(cfg, out)
    typer.echo(
        f"generate: SYNTHETIC {cfg.name} (seed {cfg.seed}): {counts['users']} users, {counts['items']} items "
        f"({counts['missing_images']} without image), {counts['reviews']} reviews "
        f"({counts['duplicate_reviews']} duplicates) -> {out}",
        err=True,
    )
