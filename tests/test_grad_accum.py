"""Gradient accumulation: the kept gradients are live through every later micro-batch."""

from vramplan.calibrate.trainer.fallback import next_config_down
from vramplan.planner.advisor import EFFECTIVE_BATCH, candidates, recommend
from vramplan.planner.breakdown import ALL_PHASES, BACKWARD_END, OPTIMIZER
from vramplan.planner.catalog import catalog_spec, resolve_gpu
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import RunConfig

SPEC = catalog_spec("meta-llama/Llama-3.1-8B")


def _terms(run):
    return {t.name: t for t in estimate(SPEC, run).breakdown.terms}


def test_accumulated_gradients_are_live_in_every_phase():
    one, four = _terms(RunConfig(method="lora")), _terms(RunConfig(method="lora", grad_accum=4))
    assert one["grads/trainable"].phases == frozenset({BACKWARD_END, OPTIMIZER})
    assert four["grads/trainable"].phases == ALL_PHASES and four["grads/trainable"].bytes == one["grads/trainable"].bytes
    lora = [estimate(SPEC, RunConfig(method="lora", grad_accum=g)).breakdown for g in (1, 4)]
    assert lora[1].peak_allocated_bytes - lora[0].peak_allocated_bytes == one["grads/trainable"].bytes  # the forward peak gains them


def test_full_fine_tuning_does_not_count_the_upper_layers_twice():
    from vramplan.planner.catalog import catalog_spec as spec_of

    moe = spec_of("allenai/OLMoE-1B-7B-0924")  # the only layout with a grads/upper_layers term
    names = {g: {t.name for t in estimate(moe, RunConfig(method="full", grad_accum=g, dropout=0.0)).breakdown.terms} for g in (1, 2)}
    assert "grads/upper_layers" in names[1] and "grads/upper_layers" not in names[2]


def test_the_advisor_estimates_each_micro_batch_with_its_accumulation():
    runs = candidates(2048, "fp16", ("lora",))
    assert {(r.batch, r.grad_accum) for r in runs} >= {(1, EFFECTIVE_BATCH), (2, EFFECTIVE_BATCH // 2)}
    assert all(r.grad_accum * r.batch >= EFFECTIVE_BATCH for r in runs)
    best = recommend(SPEC, resolve_gpu("t4"), 2048)[0]
    assert best.estimate.run.grad_accum == best.grad_accum


def test_the_oom_fallback_keeps_the_accumulation_it_prints():
    run, accum, reason = next_config_down(RunConfig(batch=4, grad_accum=2), 2)
    assert (run.batch, run.grad_accum, accum) == (2, 4, 4) and "--grad-accum 4" in reason


def test_bad_accumulation_is_a_one_line_error():
    from click.testing import CliRunner

    from vramplan.cli import cli

    result = CliRunner().invoke(cli, ["estimate", "--model", "8b", "--grad-accum", "0"])
    assert result.exit_code == 1 and result.output.strip() == "Error: --grad-accum must be a whole number of at least 1, got 0"
    ok = CliRunner().invoke(cli, ["estimate", "--model", "8b", "--method", "lora", "--grad-accum", "4", "--json"])
    import json

    assert ok.exit_code == 0 and json.loads(ok.output)["estimates"][0]["config"]["grad_accum"] == 4
