"""Shared fixtures: the generated model-file corpus (built once per session) and its scan."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `fixtures` lives at the repository root
    sys.path.insert(0, str(ROOT))

from fixtures.generate import MARKER_NAME, Sample, generate  # noqa: E402
from mlscan.model import Finding, Report, Severity  # noqa: E402


@dataclass(frozen=True)
class Corpus:
    root: Path
    samples: list[Sample]

    @property
    def marker(self) -> Path:
        return self.root / MARKER_NAME

    def by_name(self) -> dict[str, Sample]:
        return {s.name: s for s in self.samples}


_CORPUS: list[Corpus] = []


def get_corpus() -> Corpus:
    """Generate the corpus once per process (at collection time, so tests can be
    parametrized by sample name) into a temp dir removed at exit."""
    if not _CORPUS:
        root = Path(tempfile.mkdtemp(prefix="mlscan-corpus-"))
        atexit.register(shutil.rmtree, root, True)
        _CORPUS.append(Corpus(root, generate(root)))
    return _CORPUS[0]


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return get_corpus()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`malicious_sample`, `benign_sample` and `advisory_sample` parametrize over corpus
    samples. Test ids are sample names (advisory ids for `advisory_sample`)."""
    for arg, keep in (("malicious_sample", lambda s: s.expect == "malicious"),
                      ("benign_sample", lambda s: s.expect == "benign"),
                      ("advisory_sample", lambda s: s.advisory is not None)):
        if arg in metafunc.fixturenames:
            chosen = [s for s in get_corpus().samples if keep(s)]
            ids = [f"{s.advisory}" if arg == "advisory_sample" else s.name for s in chosen]
            metafunc.parametrize(arg, chosen, ids=ids)


def scan_paths(paths: list[Path], base: Path, jobs: int = 1) -> Report:
    from mlscan.engine import ScanOptions, scan

    return scan(ScanOptions(paths=tuple(paths), jobs=jobs, base=base))


@pytest.fixture(scope="session")
def corpus_report(corpus: Corpus) -> Report:
    """One scan of the whole corpus, as a user would run it."""
    return scan_paths([corpus.root], base=corpus.root, jobs=0)


@pytest.fixture(scope="session")
def findings_by_file(corpus_report: Report) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = defaultdict(list)
    for f in corpus_report.findings:
        out[f.path].append(f)
    return out


def high_or_above(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity.rank >= Severity.HIGH.rank]


def describe(findings: list[Finding]) -> str:
    if not findings:
        return "(no findings)"
    return "\n".join(f"  {f.rule_id} {f.severity.value} {f.member or ''} {f.evidence}: "
                     f"{f.message}" for f in findings)


@pytest.fixture(autouse=True, scope="session")
def _private_result_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """CLI runs in tests cache results like a user's would, but never in the user's cache:
    a stale entry there could make a test pass or fail for the wrong reason."""
    old = os.environ.get("MLSCAN_CACHE_DIR")
    os.environ["MLSCAN_CACHE_DIR"] = str(tmp_path_factory.mktemp("mlscan-cache"))
    yield
    if old is None:
        os.environ.pop("MLSCAN_CACHE_DIR", None)
    else:
        os.environ["MLSCAN_CACHE_DIR"] = old
