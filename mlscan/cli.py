"""Command line: parse flags, call the engine, pick a reporter, set the exit code (0/1/2).

Heavy modules are imported inside commands so `mlscan --version` starts fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mlscan import __version__

app = typer.Typer(
    name="mlscan",
    help="Find malicious or sabotaging code in ML repositories and model files. "
    "Never executes what it scans.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlscan {__version__}")
        raise typer.Exit(EXIT_CLEAN)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """mlscan: static scanner for ML code, model files and environments."""


def _split(values: Optional[list[str]]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return tuple(out)


def _severity(text: str, flag: str) -> object:
    from mlscan.model import Severity

    try:
        return Severity.parse(text)
    except ValueError as exc:
        typer.echo(f"error: {flag}: {exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None


class _StderrProgress:
    """A one-line progress bar on stderr, shown only on a TTY and only after a moment."""

    def __init__(self, enabled: bool) -> None:
        import time

        self._time = time.monotonic
        self.enabled = enabled
        self.start = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int, current: str) -> None:
        if not self.enabled or self._time() - self.start < 0.5:
            return
        self.shown = True
        width = 30
        filled = int(width * done / max(total, 1))
        name = current if len(current) <= 40 else "..." + current[-37:]
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {name:40}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 90 + "\r")
            sys.stderr.flush()


@app.command()
def scan(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to scan.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="text, json")] = "text",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here.")] = None,
    min_severity: Annotated[str, typer.Option(help="Hide findings below this.")] = "low",
    fail_on: Annotated[str, typer.Option(help="Exit 1 at or above this severity.")] = "high",
    select: Annotated[Optional[list[str]], typer.Option(help="Only these codes/prefixes.")] = None,
    ignore: Annotated[Optional[list[str]], typer.Option(help="Skip these codes/prefixes.")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Glob of paths to skip.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Processes (0 = one per CPU).")] = 0,
    exit_zero: Annotated[bool, typer.Option(help="Always exit 0 unless mlscan fails.")] = False,
) -> None:
    """Scan files and folders: model files, Python code, Hugging Face repos."""
    from mlscan.engine import ScanOptions
    from mlscan.engine import scan as run_scan
    from mlscan.model import Severity
    from mlscan.reporters import Format, renderer

    try:
        format_ = Format(fmt)
    except ValueError:
        typer.echo(f"error: --format: unknown format {fmt!r} "
                   f"(choose from {', '.join(f.value for f in Format)})", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    min_sev = _severity(min_severity, "--min-severity")
    fail_sev = _severity(fail_on, "--fail-on")
    assert isinstance(min_sev, Severity) and isinstance(fail_sev, Severity)
    missing = [str(p) for p in paths if not os.path.lexists(p)]
    if missing:
        typer.echo(f"error: no such file or directory: {', '.join(missing)}", err=True)
        raise typer.Exit(EXIT_ERROR)
    opts = ScanOptions(paths=tuple(paths), exclude=_split(exclude), select=_split(select),
                       ignore=_split(ignore), min_severity=min_sev, jobs=jobs)
    progress = _StderrProgress(sys.stderr.isatty() and output is None or sys.stderr.isatty())
    try:
        report = run_scan(opts, progress=progress)
    finally:
        progress.close()
    to_tty = output is None and sys.stdout.isatty()
    text = renderer(format_)(report, to_tty and "NO_COLOR" not in os.environ)
    if output is not None:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if report.errors:
        raise typer.Exit(EXIT_ERROR)
    worst = report.worst()
    if not exit_zero and worst is not None and worst.rank >= fail_sev.rank:
        raise typer.Exit(EXIT_FINDINGS)


@app.command()
def explain(
    path: Annotated[Path, typer.Argument(help="A pickle or PyTorch checkpoint.")],
) -> None:
    """Show what a pickle would do when loaded: decompiled, never run."""
    from mlscan.picklevm.explain import explain_path

    try:
        typer.echo(explain_path(path), nl=False)
    except OSError as exc:
        typer.echo(f"error: {path}: {exc.strerror or exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None


@app.command()
def rules(
    code: Annotated[Optional[str], typer.Argument(help="Show this rule's documentation.")] = None,
) -> None:
    """List every rule, or print one rule's documentation."""
    from mlscan import registry
    from mlscan.ruledocs import render_list, render_rule

    if code is None:
        typer.echo(render_list(registry.all_rules().values()), nl=False)
        return
    try:
        rule = registry.get(code)
    except KeyError as exc:
        typer.echo(f"error: {exc.args[0]}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    typer.echo(render_rule(rule), nl=False)


def main() -> None:
    app()
