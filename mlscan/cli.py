"""Command line: parse flags, call the engine, pick a reporter, set the exit code (0/1/2).

Heavy modules are imported inside commands so `mlscan --version` starts fast.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn, Optional

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


_FORMATS = "text, json, sarif, markdown"


@app.command()
def scan(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to scan.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help=_FORMATS)] = "text",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here.")] = None,
    report_to: Annotated[Optional[list[str]], typer.Option(
        "--report", help="Also write FORMAT=FILE (repeatable), e.g. sarif=mlscan.sarif.")] = None,
    min_severity: Annotated[Optional[str], typer.Option(
        help="Hide findings below this (default low).")] = None,
    fail_on: Annotated[Optional[str], typer.Option(
        help="Exit 1 at or above this severity (default high).")] = None,
    select: Annotated[Optional[list[str]], typer.Option(help="Only these codes/prefixes.")] = None,
    ignore: Annotated[Optional[list[str]], typer.Option(help="Skip these codes/prefixes.")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Glob of paths to skip.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        help="Config file (default: nearest mlscan.toml, pyproject.toml \\[tool.mlscan]).",
    )] = None,
    isolated: Annotated[bool, typer.Option(
        "--isolated", help="Ignore config files found near the scanned paths.")] = False,
    baseline: Annotated[Optional[Path], typer.Option(
        help="Hide findings recorded in this baseline file (still counted).")] = None,
    no_inline_ignores: Annotated[bool, typer.Option(
        "--no-inline-ignores",
        help="Ignore '# mlscan: ignore\\[...]' comments (audit code you do not trust).")] = False,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Do not read or write the result cache.")] = False,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Processes (0 = one per CPU).")] = 0,
    exit_zero: Annotated[bool, typer.Option(help="Always exit 0 unless mlscan fails.")] = False,
) -> None:
    """Scan files and folders: model files, Python code, Hugging Face repos."""
    from mlscan.engine import scan as run_scan
    from mlscan.options import Flags, OptionsError, build, foreign_config
    from mlscan.reporters import Format, renderer

    outputs = [(_format(fmt, "--format"), output)]
    for spec in report_to or []:
        name, sep, dest = spec.partition("=")
        if not sep or not dest:
            _fail(f"--report: expected FORMAT=FILE, got {spec!r}")
        outputs.append((_format(name, "--report"), Path(dest)))
    missing = [str(p) for p in paths if not os.path.lexists(p)]
    if missing:
        _fail(f"no such file or directory: {', '.join(missing)}")
    flags = Flags(paths=tuple(paths), config=config, isolated=isolated, select=_split(select),
                  ignore=_split(ignore), exclude=_split(exclude), min_severity=min_severity,
                  fail_on=fail_on, baseline=baseline, inline_ignores=not no_inline_ignores,
                  cache=not no_cache, jobs=jobs)
    try:
        opts, fail_sev = build(flags)
    except OptionsError as exc:
        _fail(str(exc))
    foreign = foreign_config(flags)
    if foreign is not None:
        typer.echo(f"note: using configuration {foreign} from the scanned tree "
                   "(--isolated ignores it)", err=True)
    # the per-folder summary (formats, what loading runs, safest loader) is for humans
    human = any(f in ("text", "markdown") for f, _ in outputs)
    opts = dataclasses.replace(opts, folder_summary=human)
    progress = _StderrProgress(sys.stderr.isatty())
    try:
        report = run_scan(opts, progress=progress)
    finally:
        progress.close()
    for format_, target in outputs:
        color = target is None and sys.stdout.isatty() and "NO_COLOR" not in os.environ
        # Undecodable file names travel as surrogates: write them escaped, never crash.
        text = renderer(Format(format_))(report, color).encode(
            "utf-8", "backslashreplace").decode("utf-8")
        if target is None:
            sys.stdout.write(text)
            continue
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            _fail(f"cannot write {target}: {exc.strerror or exc}")
    if report.errors:
        raise typer.Exit(EXIT_ERROR)
    worst = report.worst()
    if not exit_zero and worst is not None and worst.rank >= fail_sev.rank:
        raise typer.Exit(EXIT_FINDINGS)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(EXIT_ERROR)


def _format(name: str, flag: str) -> str:
    from mlscan.reporters import Format

    if name not in {f.value for f in Format}:
        _fail(f"{flag}: unknown format {name!r} (choose from {_FORMATS})")
    return name


baseline_app = typer.Typer(help="Accept today's findings; later scans report only new ones.",
                           no_args_is_help=True)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("write")
def baseline_write(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Default: .")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Default: config 'baseline' or .mlscan-baseline.json")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Config file.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j")] = 0,
) -> None:
    """Record every current finding (all severities) in a baseline file."""
    from mlscan import baseline as baseline_file
    from mlscan.engine import scan as run_scan
    from mlscan.options import Flags, OptionsError, build, read_config

    flags = Flags(paths=tuple(paths or [Path(".")]), config=config, min_severity="low",
                  jobs=jobs)
    try:
        opts, _ = build(flags, with_baseline=False)
        target = output or read_config(flags).baseline or Path(baseline_file.DEFAULT_NAME)
    except OptionsError as exc:
        _fail(str(exc))
    report = run_scan(opts)
    if report.errors:
        for err in report.errors:
            typer.echo(f"error: {err.path}: {err.message}", err=True)
        raise typer.Exit(EXIT_ERROR)
    try:
        target.write_text(baseline_file.render(report.findings, target, opts.base or Path.cwd()),
                          encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot write {target}: {exc.strerror or exc}")
    typer.echo(f"wrote {len(report.findings)} finding(s) to {target}")


@app.command()
def fix(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to fix.")],
    diff: Annotated[bool, typer.Option(
        "--diff", help="Print the changes as a unified diff instead of writing them.")] = False,
    config: Annotated[Optional[Path], typer.Option(help="Config file.")] = None,
    isolated: Annotated[bool, typer.Option(
        "--isolated", help="Ignore config files found near the scanned paths.")] = False,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Glob of paths to skip.")] = None,
) -> None:
    """Rewrite unsafe loading calls that have a safe drop-in: torch.load gets
    weights_only=True (MLS102), yaml.load becomes yaml.safe_load (MLS105)."""
    from mlscan.engine import scan as run_scan
    from mlscan.fix import FIXABLE, fix_file, plan
    from mlscan.options import Flags, OptionsError, build

    missing = [str(p) for p in paths if not os.path.lexists(p)]
    if missing:
        _fail(f"no such file or directory: {', '.join(missing)}")
    flags = Flags(paths=tuple(paths), config=config, isolated=isolated, select=FIXABLE,
                  ignore=(), exclude=_split(exclude), min_severity="low", fail_on=None,
                  baseline=None, inline_ignores=True, cache=False, jobs=1)
    try:
        opts, _ = build(flags)
    except OptionsError as exc:
        _fail(str(exc))
    cwd = Path.cwd().absolute()
    under_cwd = all(p.absolute().is_relative_to(cwd) for p in paths)
    base = cwd if under_cwd else Path("/")
    report = run_scan(dataclasses.replace(opts, select=FIXABLE, base=base))
    todo = plan([(base / f.path, f.line, f.rule_id) for f in report.findings
                 if f.line is not None and f.member is None and f.path.endswith(".py")])
    changed = fixed = 0
    for path, lines in sorted(todo.items()):
        result = fix_file(path, lines)
        if result is None:
            continue
        changed += 1
        fixed += result.fixed
        label = path.relative_to(base).as_posix()
        if diff:
            sys.stdout.write(result.diff(label))
        else:
            path.write_text(result.after, encoding="utf-8")
    verb = "Would fix" if diff else "Fixed"
    typer.echo(f"{verb} {fixed} call(s) in {changed} file(s).", err=True)
    if diff and fixed:
        raise typer.Exit(EXIT_FINDINGS)


@app.command()
def explain(
    path: Annotated[Path, typer.Argument(help="A pickle or PyTorch checkpoint.")],
) -> None:
    """Show what a pickle would do when loaded: decompiled, never run."""
    from mlscan.errors import AnalysisStop
    from mlscan.picklevm.explain import explain_path

    try:
        typer.echo(explain_path(path), nl=False)
    except OSError as exc:
        typer.echo(f"error: {path}: {exc.strerror or exc}", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except ValueError as exc:  # not a pickle: say what it is instead
        typer.echo(f"error: {exc}; use `mlscan scan` for other formats", err=True)
        raise typer.Exit(EXIT_ERROR) from None
    except AnalysisStop as exc:
        typer.echo(f"error: {path}: {exc.message}", err=True)
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


from mlscan.cli_env import register as _register_env; _register_env(app)  # noqa: E402, E702, I001


def main() -> None:
    app()
