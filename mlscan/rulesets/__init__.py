"""Rule definitions that are not libcst checks or semgrep YAML (those register themselves)."""
