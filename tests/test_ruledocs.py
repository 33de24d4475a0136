"""Rule docs: generated from the registered rules, never hand-copied; docs/rules.md is current."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

from mlscan import registry
from mlscan.ruledocs import main, render_docs, rule_markdown

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "rules.md"


def test_docs_rules_md_is_current() -> None:
    expected = render_docs(list(registry.all_rules().values()))
    assert DOCS.read_text(encoding="utf-8") == expected, (
        "docs/rules.md is stale: run  python -m mlscan.ruledocs --write docs/rules.md")


def test_docs_cover_every_provider() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for module in registry.PROVIDERS:
        mod = importlib.import_module(module)
        codes = {v.code for v in vars(mod).values() if isinstance(v, registry.Rule)}
        for code in codes:
            assert f"### {code} " in text, f"{code} from {module} is missing from docs/rules.md"
    assert text.count("\n### MLS") == len(registry.all_rules())


def test_every_rule_doc_has_the_fixed_sections() -> None:
    for rule in registry.all_rules().values():
        md = rule_markdown(rule)
        assert "What it does" in md and "Why it matters" in md, rule.code
        assert rule.doc.what.strip() and rule.doc.why.strip(), rule.code


def test_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    target = tmp_path / "rules.md"
    assert main(["--write", str(target)]) == 0
    assert main(["--check", str(target)]) == 0
    target.write_text(target.read_text() + "edited\n")
    assert main(["--check", str(target)]) == 1
    assert main([]) == 2


def test_cli_lists_rules_and_shows_one() -> None:
    listing = subprocess.run([sys.executable, "-m", "mlscan", "rules"], capture_output=True,
                             text=True, timeout=60)
    assert listing.returncode == 0
    assert all(code in listing.stdout for code in registry.all_rules())
    one = subprocess.run([sys.executable, "-m", "mlscan", "rules", "MLS905"],
                         capture_output=True, text=True, timeout=60)
    assert one.returncode == 0 and "## What it does" in one.stdout
    bad = subprocess.run([sys.executable, "-m", "mlscan", "rules", "MLS000"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
