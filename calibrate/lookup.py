"""Find the calibration that matches a GPU, for `estimate` and `recommend`."""

from __future__ import annotations

from pathlib import Path

from vramplan.planner.overhead import Corrections
from vramplan.planner.specs import GpuSpec

from .store import Store, StoreError, default_db_path

CORRECTION_FIELDS = ("cuda_context_bytes", "allocator_slack_ratio", "cublas_workspace_bytes", "activation_scale", "held_out_worst_pct")


def corrections_for(gpu: GpuSpec | None, db: str | Path | None) -> Corrections:
    """The newest calibration for `gpu` in the store, or the defaults saying that none matched.

    The default store is read only if it already exists (an estimate never creates files).
    """
    if gpu is None:
        return Corrections(source="defaults (uncalibrated; no GPU given)")
    path = Path(db) if db is not None else default_db_path()
    if db is None and not path.exists():
        return Corrections(source=f"defaults (uncalibrated; no measurement store at {path})")
    if not path.exists():  # an estimate never creates a store, nor its folder
        raise StoreError(f"--db {path}: no such measurement store; run `vramplan calibrate --db {path}` first or leave --db out")
    with Store.open(path) as store:
        found = store.latest_calibration(gpu.key)
    if found is None:
        return Corrections(source=f"defaults (uncalibrated; no calibration for {gpu.key} in {path})")
    params = {name: found["params"][name] for name in CORRECTION_FIELDS if name in found["params"]}
    scales = found["params"].get("method_activation_scales") or ()
    params["method_activation_scales"] = tuple((method, float(scale)) for method, scale in scales)
    label = f"calibration #{found['id']} from {found['device_name']}, {found['stack']}, {found['created_at']}"
    return Corrections(**params, source=label)
