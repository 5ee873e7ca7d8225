"""Plan files: what `recommend --out` writes and `run --plan` / `estimate --plan` read back."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError

PLAN_VERSION = 1


def write_plan(path: Path, plan: dict) -> None:
    """Write JSON, or YAML when the name ends in .yaml/.yml."""
    document = {"vramplan_plan": PLAN_VERSION, **plan}
    if path.suffix in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    else:
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def read_plan(path: Path) -> dict:
    """Read a plan file.

    Raises:
        ConfigError: missing, unparseable, or not a vramplan plan.
    """
    if not path.is_file():
        raise ConfigError(f"--plan {path} does not exist; make one with `vramplan recommend ... --out {path.name}`")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            document = yaml.safe_load(text)
        else:
            document = json.loads(text)
    except Exception as exc:  # yaml and json raise different types; both mean "not readable"
        raise ConfigError(f"--plan {path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'} ({exc})") from None
    if not isinstance(document, dict) or document.get("vramplan_plan") != PLAN_VERSION or "config" not in document:
        raise ConfigError(f"--plan {path} is not a vramplan plan (written by `vramplan recommend --out`)")
    return document
