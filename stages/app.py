"""`mgr`: one command per pipeline stage. Each stage module is a thin wrapper over `pipeline/`.

The stage modules import their pipeline code inside the command, so a call loads only what
its stage needs: importing every stage's libraries (torch, transformers, sklearn) took about
5 s per call, paid by each of a `dvc repro`'s ~25 stage runs.
"""
from __future__ import annotations

import sys

import typer

from pipeline.errors import PipelineError
from stages import (agreement, download, embed, evaluate, generate, ingest, inspect_cmd, quantize, recommend,
                    sasrec, sequences, train)

app = typer.Typer(
    help="Staged, cached pipeline for multimodal generative recommendation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("generate")(generate.generate)
app.command("ingest")(ingest.ingest)
app.command("download")(download.download)
app.command("embed")(embed.embed)
app.command("quantize")(quantize.quantize)
app.command("agreement")(agreement.agreement)
app.command("sequences")(sequences.sequences)
app.command("train")(train.train)
app.command("evaluate")(evaluate.evaluate)
app.command("compare")(evaluate.compare)
app.command("recommend")(recommend.recommend)
app.command("inspect")(inspect_cmd.inspect)
app.command("sasrec")(sasrec.sasrec)


def main() -> None:
    # A fatal, user-fixable problem is one line on stderr and exit code 2, never a traceback.
    try:
        app()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
