"""`vramplan report` for a vision-language model: the flags turned into a VlmRun, the page built."""

from __future__ import annotations

from pathlib import Path

from .planner.errors import ConfigError


def vlm_report(resolved, model: str, gpus, run, methods, values: dict, db, run_dir) -> str:
    """The VLM report page: components per stage, the resolution sweep and, with `run_dir`, a VLM run.

    Raises:
        ConfigError: a text-only model with image flags, images that overflow --seq-len, a bad --run.
    """
    from .reports.html_report import _check_precision
    from .reports.vlm_html import build_vlm_report
    from .vlm_cmd import vlm_run_from_flags

    from .vlm_recommend_cmd import vlm_spec_of

    spec = vlm_spec_of(resolved, model)
    vlm = vlm_run_from_flags(values)
    if vlm.images < 1:
        raise ConfigError(f"--images must be 1 or more for a VLM report, got {vlm.images}")
    _check_precision(run, gpus)
    if db is not None:
        path = Path(db)
        if not path.is_file():
            raise ConfigError(f"--db {path}: no such measurement store; run `vramplan calibrate --db {path}` first or leave --db out")
    corrections = {}
    for gpu in gpus:
        from .calibrate.lookup import corrections_for

        corrections[gpu.key] = corrections_for(gpu, db)
    section = None
    if run_dir is not None:
        from .reports.vlm_html_run import vlm_run_section

        section = vlm_run_section(run_dir, db)
    return build_vlm_report(resolved, spec, gpus, run, vlm, methods, corrections, section)
