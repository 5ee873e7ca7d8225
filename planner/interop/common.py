"""What another tool's config says about a run, in vramplan's terms.

A reader walks a tool's document (axolotl YAML, LLaMA-Factory YAML, TRL/`TrainingArguments`,
a PEFT `adapter_config.json`, a torchtune recipe, an accelerate config) with a `Reader`: every
key it looks at is either mapped to a vramplan *setting* (the RunConfig fields, plus the model,
gradient accumulation and the multi-GPU settings), or known to have no effect on memory, or
memory-relevant but outside the model ("not modelled"); every key it never looks at is listed as
"not understood". Absent keys take the tool's documented default, marked as such.

Settings are plain values keyed by the names in `SETTINGS`; `adapter` is the adapter kind's
name (`lora`, `dora`) or None for full fine-tuning, and with `quantized` it picks the method from
the registry (`method_for`), never by comparing method names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError

SETTINGS = (
    "model", "adapter", "quantized", "rank", "alpha", "dropout", "targets", "batch", "grad_accum", "seq_len",
    "grad_ckpt", "optimizer", "precision", "attention", "double_quant", "adapter_dtype", "strategy", "offload",
    "gpus", "use_rslora", "learning_rate", "epochs", "lr_scheduler", "warmup_ratio",
    "loss", "loss_chunk", "offload_activations", "packing",  # the memory savers (planner/savers.py)
)
# the flag that gives a setting on the command line (what a problem tells the user to pass)
FLAGS = {
    "model": "--model", "adapter": "--method", "quantized": "--method", "rank": "--rank", "alpha": "--alpha",
    "dropout": "--dropout", "targets": "--targets", "batch": "--batch", "seq_len": "--seq-len",
    "grad_ckpt": "--grad-ckpt/--no-grad-ckpt", "optimizer": "--optimizer", "precision": "--precision",
    "attention": "--attention", "double_quant": "--double-quant/--no-double-quant", "adapter_dtype": "--adapter-dtype",
    "strategy": "--strategy", "offload": "--offload", "gpus": "--gpus", "loss": "--loss", "loss_chunk": "--loss-chunk",
    "offload_activations": "--offload-activations", "packing": "--packing",
}
MISSING = object()
TRUE_STRINGS, FALSE_STRINGS = ("true", "yes", "on", "1"), ("false", "no", "off", "0", "none", "")


@dataclass(frozen=True)
class Mapped:
    """One of the tool's keys and the setting it became."""

    key: str  # dotted for nested keys, e.g. "model.lora_rank"
    setting: str
    value: object
    default: bool = False  # the key was absent: the tool's documented default


@dataclass(frozen=True)
class Imported:
    """What one or more tool configs say; `merged` puts a later file over an earlier one."""

    files: tuple[str, ...]  # "PATH (format)"
    settings: dict = field(default_factory=dict)
    mapped: tuple[Mapped, ...] = ()
    no_effect: tuple[str, ...] = ()  # understood, no effect on memory (learning rate, logging, paths)
    not_understood: tuple[str, ...] = ()
    not_modelled: tuple[str, ...] = ()  # "key: why": changes memory in ways the estimate leaves out
    problems: tuple[tuple[str, str], ...] = ()  # (setting, message): the estimate needs a flag for it
    notes: tuple[str, ...] = ()

    def get(self, name: str, default=None):
        return self.settings.get(name, default)

    def merged(self, other: "Imported") -> "Imported":
        settings = {**self.settings, **other.settings}
        clash = [f"{name}: {other.files[0]} gives {other.settings[name]!r} over {self.settings[name]!r}"
                 for name in other.settings if name in self.settings and self.settings[name] != other.settings[name]
                 and not _default_only(other, name)]
        for name in other.settings:  # a tool default never overrides a value another file set
            if name in self.settings and _default_only(other, name) and not _default_only(self, name):
                settings[name] = self.settings[name]
        return Imported(
            files=self.files + other.files, settings=settings, mapped=self.mapped + other.mapped,
            no_effect=self.no_effect + other.no_effect, not_understood=self.not_understood + other.not_understood,
            not_modelled=self.not_modelled + other.not_modelled, problems=self.problems + other.problems,
            notes=self.notes + other.notes + tuple(clash),
        )

    def summary(self) -> dict:
        """JSON-ready: what came from where and what was left out."""
        return {
            "files": list(self.files),
            "mapped": [{"key": m.key, "setting": m.setting, "value": _plain(m.value), "default": m.default} for m in self.mapped],
            "no_effect": list(self.no_effect),
            "not_understood": list(self.not_understood),
            "not_modelled": list(self.not_modelled),
            "notes": list(self.notes),
        }


def _default_only(imported: Imported, name: str) -> bool:
    entries = [m for m in imported.mapped if m.setting == name]
    return bool(entries) and all(m.default for m in entries)


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


class Reader:
    """Walks one document, remembering which keys were used and how.

    Args:
        document: the parsed file (a mapping).
        label: how messages name the file, e.g. "axolotl config train.yml".
    """

    def __init__(self, document: dict, label: str):
        self.doc, self.label = document, label
        self._whole: set[str] = set()  # keys consumed with everything under them
        self.settings: dict = {}
        self.mapped: list[Mapped] = []
        self.no_effect: list[str] = []
        self.not_modelled: list[str] = []
        self.problems: list[tuple[str, str]] = []
        self.notes: list[str] = []
        self.errors: list[str] = []

    # ---------------------------------------------------------------- looking up keys
    def _lookup(self, key: str):
        node = self.doc
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return MISSING
            node = node[part]
        return node

    def has(self, key: str) -> bool:
        return self._lookup(key) is not MISSING

    def get(self, key: str, default=None):
        """The value at a dotted key (marked as used), or `default` when absent or null."""
        value = self._lookup(key)
        if value is MISSING:
            return default
        self._whole.add(key)
        return default if value is None else value

    def peek(self, key: str, default=None):
        """The value without marking it used (to decide how to read other keys)."""
        value = self._lookup(key)
        return default if value is MISSING or value is None else value

    # ---------------------------------------------------------------- typed values
    def _bad(self, key: str, value, what: str) -> None:
        self.errors.append(f"{key} must be {what}, got {value!r}")

    def int(self, key: str, default=None):
        value = self.get(key, MISSING)
        if value is MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            self._bad(key, value, "a whole number")
            return default
        try:
            number = float(value)
        except ValueError:
            self._bad(key, value, "a whole number")
            return default
        if number != int(number):
            self._bad(key, value, "a whole number")
            return default
        return int(number)

    def float(self, key: str, default=None):
        value = self.get(key, MISSING)
        if value is MISSING:
            return default
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            self._bad(key, value, "a number")
            return default

    def bool(self, key: str, default=None):
        value = self.get(key, MISSING)
        if value is MISSING:
            return default
        return self.as_bool(key, value, default)

    def as_bool(self, key: str, value, default=None):
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in TRUE_STRINGS + FALSE_STRINGS:
            return value.strip().lower() in TRUE_STRINGS
        self._bad(key, value, "true or false")
        return default

    # ---------------------------------------------------------------- recording
    def set(self, setting: str, value, key: str, default: bool = False) -> None:
        """Map the tool's `key` to a vramplan setting."""
        if setting not in SETTINGS:
            raise ValueError(f"unknown setting {setting!r}")
        self.settings[setting] = value
        self.mapped.append(Mapped(key, setting, value, default))

    def set_default(self, setting: str, value, key: str) -> None:
        """The tool's documented default for an absent key (unless something already set it)."""
        if setting not in self.settings:
            self.set(setting, value, key, default=True)

    def ignore(self, *keys: str) -> None:
        """Keys this tool documents that do not change memory (learning rate, paths, logging)."""
        for key in keys:
            if self.has(key) and key not in self._whole:
                self._whole.add(key)
                self.no_effect.append(key)

    def ignore_prefixed(self, *prefixes: str) -> None:
        for key in self.doc:
            if isinstance(key, str) and key.startswith(prefixes):
                self.ignore(key)

    def skip(self, key: str, why: str, when=lambda value: bool(value)) -> None:
        """A memory-relevant key outside the model: listed with why, when its value matters."""
        value = self._lookup(key)
        if value is MISSING:
            return
        self._whole.add(key)
        if when(value):
            self.not_modelled.append(f"{key}: {why}")
        else:
            self.no_effect.append(key)

    def problem(self, setting: str, message: str) -> None:
        """The file asks for something the estimate cannot do; a flag for `setting` resolves it."""
        self.problems.append((setting, f"{self.label}: {message}"))

    def note(self, message: str) -> None:
        self.notes.append(message)

    # ---------------------------------------------------------------- result
    def _unknown(self, node: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in self._whole or value is None:  # an empty key says nothing
                continue
            if isinstance(value, dict) and any(seen.startswith(path + ".") for seen in self._whole):
                out += self._unknown(value, path + ".")
            else:
                out.append(path)
        return out

    def finish(self, fmt: str, path: str) -> Imported:
        """The import, or every malformed value at once.

        Raises:
            ConfigError: values of the wrong type (each named with its key).
        """
        if self.errors:
            raise ConfigError(f"{self.label}: " + "; ".join(self.errors))
        return Imported(
            files=(f"{path} ({fmt})",), settings=dict(self.settings), mapped=tuple(self.mapped),
            no_effect=tuple(self.no_effect), not_understood=tuple(self._unknown(self.doc)),
            not_modelled=tuple(self.not_modelled), problems=tuple(self.problems), notes=tuple(self.notes),
        )


def split_names(value) -> tuple[str, ...]:
    """A list or a comma-separated string of module names, as a tuple."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(part).strip() for part in value if str(part).strip())
    return ()


def method_for(adapter: str | None, quantized: bool) -> str | None:
    """The registered method with this adapter kind (None: the base trains) and base weights."""
    from ..methods import METHODS

    for key, method in METHODS.items():
        kind = method.adapter.name if method.adapter is not None else None
        if kind == adapter and method.quantizes_base == quantized and method.trains_base == (adapter is None):
            return key
    return None


def method_parts(method: str) -> tuple[str | None, bool]:
    """(adapter kind name or None, quantized base) of a registered method."""
    from ..methods import method_record

    record = method_record(method)
    return (record.adapter.name if record.adapter is not None else None), record.quantizes_base


# bitsandbytes / torch optimizer names as transformers' `optim` and axolotl's `optimizer` spell them
HF_OPTIMIZERS = {
    "adamw_torch": "adamw", "adamw_torch_fused": "adamw", "adamw_hf": "adamw", "adamw": "adamw",
    "adamw_apex_fused": "adamw", "adamw_bnb_8bit": "adamw-8bit", "adamw_8bit": "adamw-8bit",
    "paged_adamw_8bit": "paged-adamw-8bit", "paged_adamw_32bit": "paged-adamw-32bit", "paged_adamw": "paged-adamw-32bit",
    "sgd": "sgd",
}
EXPORT_OPTIMIZERS = {"adamw": "adamw_torch", "adamw-8bit": "adamw_bnb_8bit", "paged-adamw-8bit": "paged_adamw_8bit",
                     "paged-adamw-32bit": "paged_adamw_32bit", "sgd": "sgd"}


def map_hf_optimizer(reader: Reader, key: str, value) -> None:
    """transformers' `optim` names; anything else is a problem --optimizer resolves."""
    name = str(value).strip().lower()
    if name in HF_OPTIMIZERS:
        reader.set("optimizer", HF_OPTIMIZERS[name], key)
        if name.endswith("fused"):
            reader.note(f"{key} {value}: estimated as torch AdamW; the fused kernel keeps no state-sized step temporary, so a little less on CUDA")
    else:
        reader.problem("optimizer", f"{key} {value!r} is not modelled (vramplan models {', '.join(sorted(set(HF_OPTIMIZERS.values())))}); "
                                    "pass --optimizer with the nearest one")


def row_shape(path: str | None) -> str:
    """The shape of a dataset's first row: "messages", "instruction" or "text" (the default)."""
    import json
    from pathlib import Path

    if path and Path(path).is_file() and Path(path).suffix in (".jsonl", ".json", ".ndjson"):
        try:
            with open(path, encoding="utf-8-sig") as handle:
                first = next((line for line in handle if line.strip()), "")
            row = json.loads(first)
            row = row[0] if isinstance(row, list) and row else row
        except (OSError, ValueError):
            return "text"
        if isinstance(row, dict):
            return next((shape for shape in ("messages", "instruction") if shape in row), "text")
    return "text"


AUTOCAST_NOTE = ("16-bit weights under {amp} autocast: PEFT's fp32 adapters then compute in 16 bits, which the estimate "
                 "does not model; it keeps their fp32 input copies (an upper bound, 5-10% on the CPU probes)")


def set_precision(r: Reader, weights: str | None, autocast: str | None, key: str, default: bool = False) -> None:
    """vramplan's --precision for weights in `weights` ("bf16", "fp16", "fp32"; None: the GPU's 16-bit
    dtype) trained under `autocast` ("bf16", "fp16", "auto": the GPU's; None: off).

    fp32 weights under autocast are the *-mixed precisions. 16-bit weights under autocast of the
    same dtype are estimated as the pure 16-bit run: a full fine-tune is the same, an adapter run
    a little smaller (said in a note).
    """
    if weights == "fp32":
        value = f"{autocast}-mixed" if autocast else "fp32"
    elif autocast not in (None, "auto") and weights is not None and autocast != weights:
        r.problem("precision", f"{key}: {weights} weights under {autocast} autocast are not modelled; pass --precision")
        return
    else:
        value = weights or "auto"
        if autocast and r.settings.get("adapter") is not None:
            r.note(f"{key}: " + AUTOCAST_NOTE.format(amp=autocast if autocast != "auto" else "16-bit"))
    r.set("precision", None if value == "auto" else value, key, default=default)
