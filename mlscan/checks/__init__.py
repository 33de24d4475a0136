"""Python training-code checks (MLS1xx unsafe loading, MLS3xx sabotage), one module per family.

Importing this package registers every check and its rules. Add a family module to `FAMILIES`.
"""

from __future__ import annotations

import importlib

FAMILIES: tuple[str, ...] = (
    "mlscan.checks.loading",
    "mlscan.checks.seeding",
    "mlscan.checks.snapshots",
    "mlscan.checks.tampering",
    "mlscan.checks.optimizer",
    "mlscan.checks.hooks",
    "mlscan.checks.patching",
    "mlscan.checks.stalls",
    "mlscan.checks.metrics",
    "mlscan.checks.eval_sets",
    "mlscan.checks.poisoning",
    "mlscan.checks.exfil",
    "mlscan.checks.startup_hooks",
    "mlscan.checks.permissions",
    "mlscan.checks.metric_choices",
    "mlscan.checks.metric_reductions",
    "mlscan.checks.metric_terms",
    "mlscan.checks.poison_geometry",
    "mlscan.checks.poison_alignment",
    "mlscan.checks.loop_order",
    "mlscan.checks.dist_settings",
    "mlscan.checks.poison_order",
    "mlscan.checks.poison_splits",
    "mlscan.checks.update_math",
    "mlscan.checks.update_terms",
    "mlscan.checks.update_order",
    "mlscan.checks.poison_pipeline",
    "mlscan.checks.file_damage",
    "mlscan.checks.exfil_channels",
    "mlscan.checks.sampler_seeds",
    "mlscan.checks.forward_wrappers",
    "mlscan.checks.label_shortcuts",
    "mlscan.checks.log_gates",
    "mlscan.checks.score_edits",
    "mlscan.checks.poison_detection",
    "mlscan.checks.metric_stats",
    "mlscan.checks.update_slips",
    "mlscan.checks.poison_signal",
    "mlscan.checks.poison_tabular",
    "mlscan.checks.poison_tags",
    "mlscan.checks.collective_skips",
    "mlscan.checks.poison_sampling",
    "mlscan.checks.dispatch_triggers",
    "mlscan.checks.report_terms",
    "mlscan.checks.label_shifts",
    "mlscan.checks.hidden_calls",
    "mlscan.checks.trust_ratios",
    "mlscan.checks.state_edits",
    "mlscan.checks.fresh_generators",
    "mlscan.checks.paired_args",
    "mlscan.checks.score_filters",
    "mlscan.checks.eval_leaks",
    "mlscan.checks.log_views",
    "mlscan.checks.poison_seg",
)

for _module in FAMILIES:
    importlib.import_module(_module)
