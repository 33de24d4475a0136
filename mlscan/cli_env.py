"""`mlscan env`: the environment integrity command (registered onto the main typer app)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from mlscan.model import Severity

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_ERROR)


def _split(values: Optional[list[str]]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return tuple(out)


def _severity(text: str, flag: str) -> Severity:
    from mlscan.model import Severity

    try:
        return Severity.parse(text)
    except ValueError as exc:
        raise _fail(f"{flag}: {exc}") from None


def env(
    python: Annotated[Optional[str], typer.Option(
        "--python", help="Check this interpreter's environment (run isolated, without site, "
        "only to print its paths).")] = None,
    path: Annotated[Optional[Path], typer.Option(
        "--path", help="Check this site-packages directory (no interpreter is run).")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="text, json, sarif, markdown")] = "text",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here.")] = None,
    min_severity: Annotated[str, typer.Option(help="Hide findings below this.")] = "low",
    fail_on: Annotated[str, typer.Option(help="Exit 1 at or above this severity.")] = "high",
    select: Annotated[Optional[list[str]], typer.Option(help="Only these codes/prefixes.")] = None,
    ignore: Annotated[Optional[list[str]], typer.Option(help="Skip these codes/prefixes.")] = None,
    lock: Annotated[Optional[Path], typer.Option(
        "--lock", help="Accept today's hooks and changed files: write their sha256 here.")] = None,
    verify_lock: Annotated[Optional[Path], typer.Option(
        "--verify-lock", help="Report only what differs from this lock.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Hashing threads (0 = auto).")] = 0,
    no_code: Annotated[bool, typer.Option(
        "--no-code", help="Do not run the code analyzer on hook and changed files.")] = False,
    bytecode: Annotated[bool, typer.Option(
        "--bytecode", help="Also compare __pycache__ files Python would run with their "
        "verified sources (slow: compiles every source).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print throughput.")] = False,
    exit_zero: Annotated[bool, typer.Option(help="Always exit 0 unless mlscan fails.")] = False,
) -> None:
    """Verify the installed Python environment against its RECORD hashes; list start-up hooks."""
    from mlscan import envcheck, envcheck_report, registry
    from mlscan.envcheck_lock import LockError, apply_lock, read_bytecode, write_lock
    from mlscan.envcheck_target import TargetError, resolve
    from mlscan.reporters import Format, renderer

    try:
        format_ = Format(fmt)
    except ValueError:
        raise _fail(f"--format: unknown format {fmt!r} "
                    f"(choose from {', '.join(f.value for f in Format)})") from None
    if python is not None and path is not None:
        raise _fail("--python and --path are mutually exclusive")
    if lock is not None and verify_lock is not None:
        raise _fail("--lock and --verify-lock are mutually exclusive")
    min_sev, fail_sev = _severity(min_severity, "--min-severity"), _severity(fail_on, "--fail-on")
    registry.all_rules()
    active = os.environ.get("VIRTUAL_ENV")
    if python is None and path is None and active and \
            os.path.realpath(active) != os.path.realpath(sys.prefix):
        typer.echo(f"mlscan env: checking the environment mlscan runs in ({sys.prefix}); "
                   f"for the active one use --python {active}", err=True)
    try:
        target = resolve(python, path)
    except TargetError as exc:
        raise _fail(str(exc)) from None
    if bytecode and target.cache_tag not in (None, sys.implementation.cache_tag):
        raise _fail(f"--bytecode needs the target's Python version (target "
                    f"{target.cache_tag}, mlscan runs on {sys.implementation.cache_tag})")
    known = read_bytecode(verify_lock) if verify_lock is not None and bytecode else {}
    result = envcheck.check(target, workers=jobs, bytecode=bytecode, known_bytecode=known)
    items = list(result.items)
    if not no_code:
        items += envcheck_report.code_findings(result)
    try:
        if lock is not None:
            count = write_lock(lock, items, target.site_dirs, result.bytecode_ok)
            typer.echo(f"mlscan env: wrote {count} accepted entries to {lock}", err=True)
            items = apply_lock(lock, items)
        elif verify_lock is not None:
            items = apply_lock(verify_lock, items)
    except LockError as exc:
        raise _fail(str(exc)) from None
    if verbose:
        secs = max(result.hash_seconds, 1e-9)
        typer.echo(f"mlscan env: {result.distributions} distributions, {result.files} files, "
                   f"{result.bytes / 1e6:.1f} MB hashed in {result.hash_seconds:.2f}s "
                   f"({result.files / secs:,.0f} files/s, {result.bytes / 1e6 / secs:,.0f} MB/s); "
                   f"total {result.seconds:.2f}s; site: "
                   f"{', '.join(os.fspath(d) for d in target.site_dirs)}", err=True)
    report = envcheck_report.to_report(result, items, min_sev, _split(select), _split(ignore))
    to_tty = output is None and sys.stdout.isatty()
    if format_.value == "sarif":
        from mlscan.reporters import sarif  # display paths are relative to site-packages

        text = sarif.render(report, srcroot=target.display_base)
    else:
        text = renderer(format_)(report, to_tty and "NO_COLOR" not in os.environ)
    if output is not None:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _fail(f"{output}: cannot write: {exc.strerror or exc}") from None
    else:
        sys.stdout.write(text)
    worst = report.worst()
    if not exit_zero and worst is not None and worst.rank >= fail_sev.rank:
        raise typer.Exit(EXIT_FINDINGS)


def register(app: typer.Typer) -> None:
    app.command(name="env")(env)
