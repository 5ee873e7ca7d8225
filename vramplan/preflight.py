"""Fail before the work, never after it: every input and output checked before torch or a model loads.

The commands that work for a long time (`run`, `calibrate`, `report`) call these first; the
quick ones (`estimate`, `recommend`) share the model and sequence-length checks. Nothing here
imports torch, creates a file or changes one.
"""

from __future__ import annotations

import codecs
import os
from pathlib import Path

from .planner.bounds import check_causal_lm, check_config_sizes, check_run_bounds, inapplicable_options
from .planner.context_window import ContextWindow, check_seq_len, context_window, default_seq_len
from .planner.errors import ConfigError, FileAccessError, ResourceError
from .planner.files import check_output_file, check_writable_dir, existing_ancestor

RAM_SHARE = 0.9  # of the RAM available now: the rest is for the OS, Python and the data
UTF8_CHUNK = 1 << 20


# ---------------------------------------------------------------- the model
def check_model_config(model: str | os.PathLike | None, label: str = "--model") -> dict | None:
    """For a local config.json or model directory: refuse non-decoders and malformed sizes before counting.

    Returns:
        The config dict, or None when `model` is not a local path (catalog names, hub ids).

    Raises:
        UnknownModelError: missing or malformed config.json, an encoder, or a size that is not a whole number > 0.
    """
    if not model:
        return None
    path = Path(str(model)).expanduser()
    if not path.exists():
        return None
    from .planner.inventory import read_config

    config = read_config(path)
    file = path / "config.json" if path.is_dir() else path
    check_causal_lm(config, str(file))
    check_config_sizes(config, str(file))
    return config


def sequence_length(seq_len: int, given: bool, config: dict | None, model_name: str, allow_long: bool,
                    flag: str = "--seq-len") -> tuple[int, str | None, ContextWindow | None]:
    """The sequence length to plan with, against the model's context window.

    A length the user gave (flag or plan) beyond the window is refused unless `allow_long`; the
    default is shortened to the window, with a note saying so.

    Returns:
        (sequence length, note or None, the window or None).
    """
    window = context_window(config)
    if given:
        check_seq_len(seq_len, window, model_name, flag, allow_long)
        return seq_len, None, window
    if allow_long:
        return seq_len, None, window
    shortened, note = default_seq_len(seq_len, window)
    return shortened, note, window


def check_run(spec, run) -> None:
    """The run's settings against the model's shape (`planner.bounds.check_run_bounds`)."""
    check_run_bounds(spec, run)


def option_notes(typed: set[str], methods: tuple[str, ...]) -> list[str]:
    """`note:` lines for flags given that the chosen methods do not use."""
    return inapplicable_options(typed, methods)


# ---------------------------------------------------------------- host memory
def available_ram_bytes() -> int | None:
    """RAM available to a new process now (MemAvailable), or None where the OS does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_cpu_ram(spec, run, force: bool = False) -> str | None:
    """On CPU the run's tensors live in RAM: refuse an estimated peak above what is available.

    Returns:
        A note when `force` lets a run start that is estimated not to fit, else None.

    Raises:
        ResourceError: the estimated peak is above RAM_SHARE of the available RAM (unless `force`).
    """
    from dataclasses import replace

    from .planner.estimator import estimate
    from .planner.units import format_gib

    available = available_ram_bytes()
    if available is None:
        return None
    peak = estimate(spec, replace(run, device_kind="cpu")).breakdown.peak_allocated_bytes
    limit = int(available * RAM_SHARE)
    if peak <= limit:
        return None
    message = (
        f"on CPU the estimated peak is {format_gib(peak)} but {format_gib(available)} of RAM is available "
        f"({RAM_SHARE:.0%} of it is the limit, {format_gib(limit)})"
    )
    if force:
        return f"{message}; starting anyway (--force)"
    raise ResourceError(f"{message}; lower --seq-len or --batch, use a smaller model, or pass --force to start anyway")


# ---------------------------------------------------------------- files
def check_data_file(path, flag: str = "--data") -> Path:
    """Training rows that can be read: a regular file (a JSONL one UTF-8, scanned in chunks so the
    first bad byte is reported with its line), or a `datasets` save_to_disk folder.

    Raises:
        ConfigError: missing, a plain folder, a device, or a JSONL file that is not UTF-8.
        FileAccessError: it cannot be read.
    """
    from .planner.interop.rows import FORMATS, data_format, is_dataset_dir

    path = Path(path)
    wanted = f"give {FORMATS} with one example per row"
    if is_dataset_dir(path):
        return path
    if not path.exists():
        raise ConfigError(f"{flag} {path} does not exist; {wanted}")
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory (not a datasets save_to_disk folder); {wanted}")
    if not path.is_file():
        raise ConfigError(f"{flag} {path} is not a regular file (a device or a pipe); {wanted}")
    try:
        if data_format(path) == "jsonl":  # an empty file is the loader's to say (with the row shapes it needs)
            _check_utf8_lines(path)
    except OSError as exc:
        from .planner.files import describe_os_error

        raise FileAccessError(describe_os_error(exc, flag)) from None
    return path


def _check_utf8_lines(path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as handle:
        while chunk := handle.read(UTF8_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += chunk[: max(0, exc.start)].count(b"\n")
                raise ConfigError(f"{path}:{line}: not UTF-8 text ({exc.reason}); the data must be UTF-8") from None
            line += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}:{line}: not UTF-8 text ({exc.reason}: the file ends mid-character); the data must be UTF-8") from None


def check_html(path, flag: str = "--html") -> Path | None:
    """An HTML page path that can be written (about 5 MB: plotly.js is embedded)."""
    if path is None:
        return None
    return check_output_file(path, flag, need_bytes=6 * 10**6)


def check_plan_out(path, flag: str = "--out") -> Path | None:
    """A plan file path that can be written."""
    if path is None:
        return None
    return check_output_file(path, flag, need_bytes=1 << 16)


def check_out_dir(out: Path, resume: bool, need_bytes: int = 0, allow: tuple[str, ...] = ()) -> None:
    """The run's output folder: the trainer's own rules (`calibrate.trainer.marker`), checked without
    creating anything, then writable with room for what the run will save.

    Raises:
        ConfigError: a file, holds another run (without --resume), holds other files, nothing to resume.
        BusyError: a run is in progress there.
        FileAccessError: cannot be written, or too little free space.
    """
    from .calibrate.trainer.marker import check_out_dir as check_claim

    check_claim(Path(out), resume, allow)
    check_writable_dir(existing_ancestor(Path(out)), "--out", need_bytes)


def output_bytes(spec, run, keep_checkpoints: int = 2, merge: bool = False) -> int:
    """Roughly what a run writes: the final weights, `keep_checkpoints` checkpoints (weights + optimizer
    states), and with `merge` the merged model in 16 bits."""
    from .planner.estimator import estimate

    est = estimate(spec, run)
    trainable = est.trainable_params
    weight_bytes = 2 if (run.method_record.trains_base and run.precision in ("bf16", "fp16")) or run.adapter_dtype in ("bf16", "fp16") else 4
    states = sum(n for name, n in est.breakdown.by_name().items() if name.startswith("optimizer/states"))
    need = trainable * weight_bytes * (1 + keep_checkpoints) + states * keep_checkpoints
    if merge:
        need += spec.base_params * 2
    return int(need)


def cuda_possible() -> bool:
    """Whether a GPU driver is present at all (NVIDIA or ROCm): if not, the device is the CPU without importing torch."""
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd"))


def default_device(device: str | None) -> str:
    """`--device` as given, else cuda where torch sees one (torch is imported only where a driver exists)."""
    if device is not None:
        return device
    if not cuda_possible():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_model_dir(path) -> tuple[Path, dict]:
    """`run --model`: a local directory with a config.json that describes a causal decoder; (path, config)."""
    from .calibrate.trainer.model_path import check_model_path

    path = check_model_path(path)
    return path, check_model_config(path)


# ---------------------------------------------------------------- the planning commands
def resolve_checked(model: str):
    """`resolve_model`, after a local config.json has been checked (an encoder or a malformed size is refused first)."""
    from .planner.catalog import resolve_model

    check_model_config(model)
    return resolve_model(model)


def typed_flags() -> set[str]:
    """Names of the current command's parameters given on the command line (not defaults)."""
    import click
    from click.core import ParameterSource

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return set()
    return {name for name in ctx.params if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}


class ModelChecks:
    """What `check_planned` found: the run to plan, the window, and notes for the user."""

    def __init__(self, run, window: ContextWindow | None, notes: list[str], allow_long: bool):
        self.run, self.window, self.notes, self.allow_long = run, window, notes, allow_long

    def cap(self, results: list) -> list:
        """Each result's `max_seq_len` capped at the context window (noted once), unless --allow-long-context."""
        from dataclasses import replace

        from .planner.context_window import cap_note

        capped, said = [], set()
        for result in results:
            value, note = cap_note(result.max_seq_len, self.window, self.allow_long)
            if note and note.split(";")[0] not in said:
                said.add(note.split(";")[0])
                self.notes.append(note)
            capped.append(replace(result, max_seq_len=value) if value != result.max_seq_len else result)
        return capped

    def json_fields(self) -> dict:
        window = {"tokens": self.window.tokens, "source": self.window.source} if self.window else None
        return {"context_window": window, "notes": list(self.notes)}

    def echo(self, err: bool = True) -> None:
        import click

        for note in self.notes:
            click.echo(f"note: {note}", err=err)


def check_planned(resolved, run, methods: tuple[str, ...], allow_long: bool, seq_given: bool) -> ModelChecks:
    """The planned run against the model: sequence length vs context window, the model's bounds, and
    notes for options none of `methods` uses.

    Raises:
        ConfigError: a given --seq-len beyond the window (without `allow_long`), a rank above the width, ...
    """
    from dataclasses import replace

    seq_len, note, window = sequence_length(run.seq_len, seq_given, resolved.config, resolved.spec.name, allow_long)
    notes = [note] if note else []
    if seq_len != run.seq_len:
        run = replace(run, seq_len=seq_len)
    typed = typed_flags()
    run, dropout_note = moe_default_dropout(resolved.spec, run, methods, "dropout" in typed)
    notes += [dropout_note] if dropout_note else []
    for method in methods:
        check_run(resolved.spec, replace(run, method=method))
    notes += option_notes(typed, methods)
    return ModelChecks(run, window, notes, allow_long)


def moe_default_dropout(spec, run, methods: tuple[str, ...], dropout_given: bool):
    """A mixture of experts whose router/experts are targeted at the default --dropout: peft refuses
    dropout there, so the default becomes 0 (with a note); a --dropout given is kept (and refused)."""
    from dataclasses import replace

    from .planner.moe import dropout_refused_on

    refused = set()
    for method in methods:
        refused.update(dropout_refused_on(spec, replace(run, method=method)))
    if dropout_given or not refused:
        return run, None
    return replace(run, dropout=0.0), (
        f"--dropout 0 (not the default {run.dropout:g}): peft cannot put dropout on the router or fused experts; "
        "--targets attention keeps it"
    )


def recommend_window(resolved, seq_len: int | None, allow_long: bool) -> ContextWindow | None:
    """`recommend`: check a given --seq-len against the window; the window, for `within`."""
    window = context_window(resolved.config)
    if seq_len is not None:
        check_seq_len(seq_len, window, resolved.spec.name, "--seq-len", allow_long)
    return window


def within(seq_len: int, window: ContextWindow | None, allow_long: bool, notes: dict, why: str) -> int:
    """A chosen (not given) sequence length kept within the window; `notes["context_window"]` says when it was cut."""
    if window is None or allow_long or seq_len <= window.tokens:
        return seq_len
    notes["context_window"] = f"seq-len {window.tokens:,}: the model's context window ({window.source}); {why} {seq_len:,} is beyond it"
    return window.tokens
