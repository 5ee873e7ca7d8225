"""recommend turns the memory savers on only when nothing fits without them, cheapest first, and says what each buys."""

import pytest

from vramplan.planner.advisor import SAVER_STEPS, recommend
from vramplan.planner.catalog import resolve_gpu, resolve_model
from vramplan.planner.errors import ConfigError
from vramplan.planner.estimator import estimate

SPEC = resolve_model("8b").spec
T4 = resolve_gpu("t4")


def test_a_run_that_fits_plainly_uses_no_saver():
    best = recommend(SPEC, T4, 2048)[0]
    assert (best.run.loss, best.run.offload_activations, best.run.expandable_segments) == ("standard", False, False)
    assert not any("saves" in reason for reason in best.reasons)


def test_a_long_context_fits_with_the_savers_and_says_what_each_buys():
    recs = recommend(SPEC, T4, 12288)
    best = recs[0]
    assert best.run.loss == "chunked" and best.run.offload_activations and best.run.expandable_segments
    assert best.estimate.breakdown.device_used_bytes <= T4.total_bytes * 0.95
    bought = [reason for reason in best.reasons if "saves" in reason]
    assert len(bought) == len(SAVER_STEPS)
    for field, value, _, what in SAVER_STEPS:  # each claim is the difference the switch makes on this config
        from dataclasses import replace

        from vramplan.planner.specs import RunConfig

        plain = replace(best.run, **{field: RunConfig.__dataclass_fields__[field].default})
        saved = estimate(SPEC, plain, T4).breakdown.device_used_bytes - best.estimate.breakdown.device_used_bytes
        assert any(r.startswith(what) and f"saves {saved / 2**30:.2f} GiB" in r for r in bought), (field, bought)


def test_beyond_every_saver_the_error_names_the_longest_context_that_fits():
    with pytest.raises(ConfigError, match=r"fits up to --seq-len [0-9,]+; try a bigger GPU"):
        recommend(SPEC, T4, 65536)


def test_16k_tokens_of_llama_8b_fit_a_t4_with_every_saver_and_each_cost_is_named():
    """The issue's case: `recommend --model 8b --gpu t4 --seq-len 16384`."""
    from click.testing import CliRunner

    from vramplan.cli import cli

    result = CliRunner().invoke(cli, ["recommend", "--model", "8b", "--gpu", "t4", "--seq-len", "16384", "--json"])
    assert result.exit_code == 0, result.output
    import json

    best = json.loads(result.output)["recommendations"][0]
    config = best["config"]
    assert (config["loss"], config["offload_activations"], config["kbit_upcast"]) == ("chunked", True, False)
    bought = [reason for reason in best["reasons"] if "saves" in reason]
    for _, _, _, what in SAVER_STEPS:  # each switch's speed cost is said
        assert any(r.startswith(what) for r in bought), what
    assert any("~15% slower" in r for r in bought) and any("no speed cost" in r for r in bought)
