"""Chat template checks: quiet on ordinary templates, loud on SSTI, with jinja2's lexer and
with our own fallback lexer (jinja2 is optional at runtime)."""

from __future__ import annotations

import builtins
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fixtures.chat_templates import BENIGN, malicious  # noqa: E402
from mlscan.analyzers.template_lex import decode_string, own_tokens  # noqa: E402
from mlscan.analyzers.templates import check_template  # noqa: E402
from mlscan.model import Severity  # noqa: E402

BAD = malicious("touch /nonexistent/marker")


@pytest.fixture(params=["jinja2", "own-lexer"])
def lexer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "own-lexer":
        real = builtins.__import__

        def no_jinja(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == "jinja2" or name.startswith("jinja2."):
                raise ImportError("jinja2 hidden by the test")
            return real(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_jinja)
    yield request.param


def _worst(text: str) -> Severity | None:
    issues = check_template(text)
    return max((i.severity for i in issues), key=lambda s: s.rank, default=None)


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_ordinary_chat_templates_produce_no_issue(name: str, lexer: str) -> None:
    assert check_template(BENIGN[name]) == []


@pytest.mark.parametrize("name", sorted(BAD))
def test_injection_templates_are_critical(name: str, lexer: str) -> None:
    assert _worst(BAD[name]) is Severity.CRITICAL
    assert any(i.rule.code == "MLS225" for i in check_template(BAD[name]))


@pytest.mark.parametrize("text, evidence", [
    ("{{ ''.__class__ }}", "__class__"),
    ("{{ x|attr('__globals__') }}", "|attr"),
    ("{{ x|attr(name) }}", "|attr(name)"),
    ("{{ x['__cla' ~ 'ss__'] }}", "built"),
    ("{{ x['__cla' + 'ss__'] }}", "built"),
    ("{{ x['_' * 2 ~ 'class' ~ '_' * 2] }}", "built"),
    ("{{ x['__ssalc__'|reverse] }}", "built"),
    ("{{ x['__cXlass__'|replace('X', '')] }}", "built"),
    ("{{ x[['__glo', 'bals__']|join] }}", "built"),
    ("{{ x['\\x5f\\x5fclass\\x5f\\x5f'] }}", "x5f"),
    ("{{ x['\\u005f\\u005fclass\\u005f\\u005f'] }}", "u005f"),
    ("{{ cycler.__init__.__globals__.os }}", "cycler"),
    ("{{ namespace.__init__ }}", "namespace"),
    ("{{ joiner.__init__ }}", "joiner"),
    ("{{ self._TemplateReference__context }}", "_TemplateReference__context"),
    ("{{ config.items()|first|attr('popen') }}", "popen"),
    ("{% set f = x.__getattribute__ %}", "__getattribute__"),
])
def test_each_evasion_is_flagged_high_or_above(text: str, evidence: str, lexer: str) -> None:
    issues = [i for i in check_template(text) if i.severity.rank >= Severity.HIGH.rank]
    assert issues, text
    assert any(evidence in i.evidence or evidence in i.message for i in issues), issues


@pytest.mark.parametrize("text", [
    "{{ message['content'] | trim }}",
    "{{ messages[0]['role'] == 'system' }}",
    "{{ '<|im_start|>' ~ message.role ~ '\\n' }}",
    "{% set ns = namespace(found=false) %}{% set ns.found = true %}{{ ns.found }}",
    "{{ raise_exception('Roles must alternate') }}",
    "{{ tool.function.parameters | tojson(indent=4) }}",
    "{% for t in tools %}{{ loop.index }}: {{ t.name | upper }}{% endfor %}",
    "{{ messages | selectattr('role', 'equalto', 'user') | list | length }}",
    "{{ strftime_now('%Y-%m-%d') }}",
    "{% raw %}{{ ''.__class__ }}{% endraw %}",
    "{# a comment mentioning __class__ #}{{ x }}",
    "plain text with __init__ outside of any Jinja tag",
    "{% if v == '__NOT_A_NUMBER__' %}nan{% endif %}",
])
def test_near_misses_stay_quiet(text: str, lexer: str) -> None:
    assert [i for i in check_template(text) if i.severity.rank >= 2] == [], text


def test_include_and_broken_templates_are_medium() -> None:
    issues = check_template("{% include '/etc/passwd' %}")
    assert [(i.rule.code, i.severity) for i in issues] == [("MLS226", Severity.MEDIUM)]
    broken = check_template("{% for m in messages %}{{ m }}")
    assert [i.rule.code for i in broken] == ["MLS226"]


def test_transformers_generation_tag_is_not_a_syntax_error() -> None:
    assert check_template("{% generation %}{{ m }}{% endgeneration %}") == []


def test_own_lexer_decodes_strings_like_jinja() -> None:
    toks = own_tokens("{{ a['\\x5f\\x5f'] }}{% if b %}x{% endif %}")
    kinds = [t[1] for t in toks]
    assert kinds[:3] == ["variable_begin", "name", "operator"]
    assert "block_end" in kinds
    assert decode_string("'\\x5f\\x5fclass\\x5f\\x5f'") == "__class__"
    assert decode_string('"a\\nb"') == "a\nb"


def test_huge_template_is_checked_quickly() -> None:
    import time

    text = BENIGN["llama_tools"] * 200  # ~600 KB
    start = time.perf_counter()
    assert check_template(text) == []
    assert time.perf_counter() - start < 30


def test_fallback_lexer_is_really_used_without_jinja2(lexer: str) -> None:
    from mlscan.analyzers.template_lex import tokens

    _, error = tokens("{% for m in messages %}{{ m }}")
    assert (error is None) == (lexer == "own-lexer")
