"""Resumable, idempotent calibration: one measured config counts once.

A config is the same when its source, device, software stack, model (name and config.json)
and run settings are. A re-run of `vramplan calibrate` skips the configs the store already
holds an `ok` or `oom` measurement of (a failure, `error`, is measured again), so a matrix
killed half-way finishes where it stopped; `--redo` measures everything again. The error
report and the fit read one record per config: the latest measurement, never a failure over a
measurement.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from .store import RunRecord

MEASURED = ("ok", "oom")  # outcomes that are a measurement; an `error` is retried


def _plain(value):
    """JSON-normal form: tuples become lists, keys sorted (what the store gives back)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def config_key(source: str, device_name: str, stack: str, model_name: str, model_config: dict, run_config: dict) -> str:
    """A stable digest of everything that makes two measurements the same config."""
    payload = json.dumps([source, device_name, stack, model_name, _plain(model_config), _plain(run_config)], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def record_key(record: RunRecord) -> str:
    return config_key(record.source, record.device_name, record.stack, record.model_name, record.model_config, _with_defaults(record.run_config))


def _with_defaults(run_config: dict) -> dict:
    """A stored run's settings with today's defaults filled in: a row measured before a setting
    existed (e.g. `loss`) is the same config as one that states its default."""
    from .runner import run_config_from_dict

    values = dict(run_config)
    vlm = values.pop("vlm", None)  # a VLM run: the decoder's settings plus its images and stage
    try:
        filled = asdict(run_config_from_dict(values))
    except (TypeError, ValueError):  # another kind of run: compare as stored
        return run_config
    if vlm is not None:
        from vramplan.planner.vision.run import VlmRun

        filled["vlm"] = VlmRun.from_dict(vlm).as_dict()
    return filled


def run_settings(run) -> dict:
    """The run settings a matrix entry is stored with: a `RunConfig`'s fields, and a VLM case's
    (`calibrate.vlm_runner.VlmCase`) under `vlm` beside them."""
    if hasattr(run, "vlm"):
        return {**asdict(run.run), "vlm": run.vlm.as_dict()}
    return asdict(run)


def planned_key(source: str, environment: dict, model_name: str, model_config: dict, run) -> str:
    """The key a matrix entry (model name, RunConfig) will be stored under."""
    return config_key(source, environment["device_name"], environment["stack"], model_name, model_config, run_settings(run))


def measured_keys(records: list[RunRecord]) -> set[str]:
    """Keys of the configs already measured (ok or oom)."""
    return {record_key(r) for r in records if r.outcome in MEASURED}


def latest_per_config(records: list[RunRecord]) -> list[RunRecord]:
    """One record per config, in store order: the latest measurement, or the latest failure when there is none."""
    chosen: dict[str, RunRecord] = {}
    for record in records:  # oldest first
        key = record_key(record)
        held = chosen.get(key)
        if held is None or record.outcome in MEASURED or held.outcome not in MEASURED:
            chosen[key] = record
    keep = {id(r) for r in chosen.values()}
    return [r for r in records if id(r) in keep]


def duplicates(records: list[RunRecord]) -> int:
    """How many records `latest_per_config` leaves out."""
    return len(records) - len(latest_per_config(records))
