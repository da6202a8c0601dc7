"""Errors the pipeline reports to the user as one line, and counters for recoverable problems."""
from __future__ import annotations

import sys
from collections import Counter


class PipelineError(Exception):
    """A fatal problem the user can fix (missing file, bad params, unknown format).

    The CLI prints `error: <message>` and exits non-zero without a traceback, so the
    message must name the file or key and the problem on its own.
    """


class Problems(Counter):
    """Recoverable problems counted by kind, so nothing is dropped silently.

    Keys are short snake_case kinds (`malformed_json`, `missing_field:asin`, ...);
    each stage writes them into its report and summarises them on stderr.
    """

    def add(self, kind: str, n: int = 1) -> None:
        self[kind] += n

    def kinds(self) -> str:
        """`kind=count, ...` of the non-zero kinds, sorted; "" when there are none."""
        return ", ".join(f"{k}={v}" for k, v in sorted(self.items()) if v)

    def summary(self, stage: str) -> str:
        total = sum(v for v in self.values() if v)
        return f"{stage}: {total} ({self.kinds()})" if total else f"{stage}: none"

    def echo(self, stage: str) -> None:
        print(self.summary(stage), file=sys.stderr)
