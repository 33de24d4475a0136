"""JSON artifacts: one parse, then every JSON check by content (HF configs, chat templates,
Keras configs such as a `.keras` archive's config.json)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from mlscan.analyzers.base import Source, register
from mlscan.analyzers.hf_repo import check_hf_config
from mlscan.analyzers.keras_config import check_config, looks_like_keras
from mlscan.analyzers.templates import template_findings
from mlscan.context import Budget
from mlscan.errors import LimitExceeded, MalformedError
from mlscan.kinds import Kind
from mlscan.model import Finding

# Names whose content we always parse (so a broken one is reported, not skipped).
KNOWN_CONFIGS = frozenset({
    "config.json", "tokenizer_config.json", "generation_config.json",
    "preprocessor_config.json", "processor_config.json", "chat_template.json",
    "model_index.json", "adapter_config.json", "feature_extractor_config.json",
    "image_processor_config.json", "video_preprocessor_config.json",
})
# Cheap prefilter: other JSON (tokenizer.json, datasets, package.json...) is parsed only
# when it mentions something we check.
_KEYS = (b'"auto_map"', b'"custom_pipelines"', b'"chat_template"', b'"class_name"',
         b'"weight_map"', b'"_diffusers_version"')


def _mentions_our_keys(raw: bytes) -> bool:
    # Loaders read these keys only from the KNOWN_CONFIGS names (always parsed, so keys
    # spelled with escapes such as "auto\u005fmap" are seen there); elsewhere a plain
    # substring test keeps multi-MB tokenizer.json files unparsed.
    return any(key in raw for key in _KEYS)


@register(Kind.JSON)
def analyze_json(src: Source, budget: Budget) -> Iterator[Finding]:
    limit = budget.limits.max_text_bytes
    raw = src.stream.read(limit + 1)
    if len(raw) > limit:
        raise LimitExceeded(f"JSON file larger than {limit >> 20} MiB; not parsed")
    base = src.name.rsplit("/", 1)[-1].lower()
    known = base in KNOWN_CONFIGS or base.endswith(".index.json")
    if not known and not _mentions_our_keys(raw):
        return
    try:
        obj = json.loads(raw.decode("utf-8-sig", errors="replace"))
    except RecursionError:
        raise LimitExceeded("JSON nested too deeply to parse") from None
    except ValueError as exc:
        if known:
            raise MalformedError(f"invalid JSON: {exc}") from None
        return
    if isinstance(obj, dict):
        yield from check_json(obj, src, budget)


def check_json(obj: dict[str, Any], src: Source, budget: Budget) -> Iterator[Finding]:
    yield from check_hf_config(obj, src)
    yield from chat_templates(obj, src)
    if looks_like_keras(obj):
        yield from check_config(obj, src, budget, "Keras config")


def chat_templates(obj: dict[str, Any], src: Source) -> Iterator[Finding]:
    """`chat_template` as a string or a list of {"name", "template"} (tokenizer_config.json,
    chat_template.json, processor_config.json)."""
    value = obj.get("chat_template")
    if isinstance(value, str):
        yield from template_findings(value, src, "chat_template")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and isinstance(item.get("template"), str):
                name = item.get("name", "?")
                yield from template_findings(item["template"], src, f"chat_template[{name}]")
