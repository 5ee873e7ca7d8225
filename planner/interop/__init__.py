"""Other tools' configs in, other tools' configs out.

`read_tool_configs(paths)` reads axolotl, LLaMA-Factory, TRL / `TrainingArguments`, PEFT
`adapter_config.json`, torchtune and accelerate files (JSON or YAML, format detected from the
keys) into one `Imported`; `run_from_imported` turns it into a `RunConfig`, flags given on the
command line winning. `export_config(kind, plan)` writes a vramplan plan as a config the tool
runs. One record per tool (`TOOLS`), one module each; pure Python, no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from . import accelerate, axolotl, llama_factory, peft, torchtune, trl
from .common import Imported
from .plan_view import export_plan
from .to_run import run_from_imported


@dataclass(frozen=True)
class Tool:
    key: str  # --export value and the format name shown
    title: str
    detect: Callable[[dict], bool]  # does a parsed document look like this tool's?
    read: Callable  # (document, path) -> Imported
    write: Callable | None = None  # (ExportPlan, base document) -> (document, notes)
    signature: str = ""  # what gives it away, for the "cannot tell" error


# detection order: the most specific keys first (an LLaMA-Factory file also has TrainingArguments keys)
TOOLS: dict[str, Tool] = {tool.key: tool for tool in (
    Tool("peft", "PEFT adapter_config.json", peft.detect, peft.read, signature="peft_type"),
    Tool("torchtune", "torchtune recipe config", torchtune.detect, torchtune.read, signature="model._component_"),
    Tool("accelerate", "accelerate config", accelerate.detect, accelerate.read, accelerate.write, signature="distributed_type"),
    Tool("llama-factory", "LLaMA-Factory config", llama_factory.detect, llama_factory.read, llama_factory.write,
         signature="model_name_or_path with finetuning_type / stage / cutoff_len"),
    Tool("axolotl", "axolotl config", axolotl.detect, axolotl.read, axolotl.write, signature="base_model"),
    Tool("trl", "TRL / TrainingArguments config", trl.detect, trl.read, trl.write,
         signature="per_device_train_batch_size, use_peft, max_length, ..."),
)}
EXPORTS = tuple(key for key, tool in TOOLS.items() if tool.write is not None)


def load_document(path: Path, flag: str = "--from") -> dict:
    """A JSON or YAML mapping from `path`.

    Raises:
        ConfigError: missing, unreadable, not JSON/YAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{flag} {path} does not exist; give an axolotl / LLaMA-Factory / TRL / torchtune / accelerate config or an adapter_config.json")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{flag} {path} cannot be read as UTF-8 text ({exc})") from None
    try:
        if path.suffix.lower() == ".json":
            document = json.loads(text)
        else:
            import yaml

            document = yaml.safe_load(text)
    except Exception as exc:  # json and yaml raise different types; both mean "not readable"
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise ConfigError(f"{flag} {path} is not valid {kind} ({' '.join(str(exc).split())})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{flag} {path} holds a {type(document).__name__}, not a mapping of settings")
    return document


def detect_tool(document: dict, path: Path) -> Tool:
    """The tool whose config `document` is.

    Raises:
        ConfigError: no tool's keys found; the message lists what gives each away.
    """
    for tool in TOOLS.values():
        if tool.detect(document):
            return tool
    if "vramplan_plan" in document:
        raise ConfigError(f"--from {path} is a vramplan plan: read it with --plan {path}")
    hints = "; ".join(f"{tool.title}: {tool.signature}" for tool in TOOLS.values())
    raise ConfigError(f"--from {path}: cannot tell which tool this config is for (keys: {', '.join(map(str, list(document)[:8]))}); expected {hints}")


def read_tool_config(path: Path) -> Imported:
    path = Path(path)
    document = load_document(path)
    return detect_tool(document, path).read(document, path)


def read_tool_configs(paths) -> Imported:
    """Every file read and merged in order (a later file's settings win; tool defaults never do)."""
    imported = None
    for path in paths:
        one = read_tool_config(Path(path))
        imported = one if imported is None else imported.merged(one)
    if imported is None:
        raise ConfigError("--from needs at least one file")
    return imported


def export_config(kind: str, plan: dict, dataset: str | None = None, base: Path | None = None) -> tuple[str, list[str]]:
    """The text of `plan` (a vramplan plan document) as a `kind` config, and notes for the user.

    Args:
        kind: one of EXPORTS.
        plan: what `plan_file.plan_document` returns.
        dataset: the training data path, where the tool's config names one.
        base: a config of the same tool whose other keys (data, logging, output) are kept.

    Raises:
        ConfigError: unknown kind, or a setting the tool cannot express.
    """
    import yaml

    if kind not in EXPORTS:
        raise ConfigError(f"--export {kind!r} is not one of: {', '.join(EXPORTS)}")
    tool = TOOLS[kind]
    base_document = None
    if base is not None:
        base_document = load_document(base)
        if not tool.detect(base_document):
            base_document = None
    document, notes = tool.write(export_plan(plan, dataset), base_document)
    lines = [f"# {tool.title} written by `vramplan recommend --export {kind}` for {plan['model']}"]
    if plan.get("gpu"):
        lines.append(f"# planned for {plan['gpu'].get('name')}; memory-relevant keys set by vramplan, read back with `vramplan estimate --from FILE`")
    if kind == "accelerate":
        lines.append(accelerate.header(plan))
    text = "\n".join(lines) + "\n" + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    return text, notes


__all__ = ["EXPORTS", "Imported", "TOOLS", "Tool", "detect_tool", "export_config", "load_document", "read_tool_config",
           "read_tool_configs", "run_from_imported"]
