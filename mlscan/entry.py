"""Console entry point. `--version` answers without importing the CLI framework, so
version probes (pre-commit, CI logs) cost a few milliseconds."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] in (["--version"], ["-V"]):
        from mlscan import __version__

        sys.stdout.write(f"mlscan {__version__}\n")
        return
    from mlscan.cli import main as cli_main

    cli_main()
