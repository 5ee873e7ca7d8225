"""The estimator's fitted sums (planner/scaling.py) equal the sums of the terms it builds."""

import itertools

from vramplan.planner.architectures import spec_from_config
from vramplan.planner.breakdown import PHASES, MemoryBreakdown, Term
from vramplan.planner.catalog import catalog_spec, gpu_from_preset
from vramplan.planner.estimator import estimate
from vramplan.planner.overhead import Corrections
from vramplan.planner.scaling import fit
from vramplan.planner.specs import RunConfig

from .conftest import TINY_LLAMA

ODD_WIDTHS = {**TINY_LLAMA, "hidden_size": 35, "intermediate_size": 45, "num_attention_heads": 5, "num_key_value_heads": 1, "vocab_size": 101}


def _terms(bytes_at):
    return lambda batch, seq_len: [Term("t", bytes_at(batch, seq_len), "")]


def test_fit_is_exact_where_the_terms_are_affine_and_declines_elsewhere():
    fitted = fit(_terms(lambda b, s: 7 + 3 * b * s + 5 * b * s * s))
    assert fitted.at(6, 1000) == [7 + 3 * 6000 + 5 * 6000 * 1000] * len(PHASES) + [0, 0]
    assert fit(_terms(lambda b, s: (3 * b * s) // 2)) is None  # a halved odd total
    assert fit(_terms(lambda b, s: min(b * s, 2048))) is None  # a cap


def _summed(breakdown):
    """The statistics summed from the terms alone."""
    from_terms = MemoryBreakdown(breakdown.terms)
    return [from_terms.phase_total(p) for p in PHASES] + [from_terms.peak_reserved_bytes, from_terms.device_used_bytes]


def test_statistics_equal_the_summed_terms():
    models = [catalog_spec("meta-llama/Meta-Llama-3-8B"), catalog_spec("google/gemma-2-9b"), spec_from_config(ODD_WIDTHS, "odd")]
    gpus = (None, gpu_from_preset("h100"))
    for model, method, (batch, seq), attention, dropout, device, gpu in itertools.product(
        models, ("full", "lora", "qdora", "adapter"), ((1, 1), (3, 333), (2, 4096)), ("sdpa", "eager"), (0.0, 0.05), ("cuda", "cpu"), gpus
    ):
        run = RunConfig(method=method, batch=batch, seq_len=seq, attention=attention, dropout=dropout, device_kind=device, precision="bf16-mixed")
        breakdown = estimate(model, run, gpu).breakdown
        fast = [breakdown.phase_total(p) for p in PHASES] + [breakdown.peak_reserved_bytes, breakdown.device_used_bytes]
        assert fast == _summed(breakdown), (model.name, run)


def test_a_calibrated_activation_scale_sums_its_rounded_terms():
    corrections = Corrections(activation_scale=1.07)
    run = RunConfig(method="lora", batch=3, seq_len=333)
    breakdown = estimate(catalog_spec("meta-llama/Meta-Llama-3-8B"), run, None, corrections).breakdown
    assert breakdown.device_used_bytes == _summed(breakdown)[-1]


def test_math_kernel_sdpa_runs_are_fitted_per_side_and_exact():
    """A 4-bit base with the fp32 upcast and grouped kv heads on CUDA: its math-kernel SDPA moments are a
    max of two polynomials; each side is fitted and the larger taken per phase, equal to the terms' sums."""
    from vramplan.planner.breakdown import MemoryBreakdown
    from vramplan.planner.catalog import catalog_spec
    from vramplan.planner.estimator import estimate, run_shape
    from vramplan.planner.scaling import MaxOfSums
    from vramplan.planner.specs import RunConfig

    model = catalog_spec("meta-llama/Meta-Llama-3-8B")
    base = RunConfig(method="qlora", grad_ckpt=True)
    assert isinstance(run_shape(model, base, 1.0).sums, MaxOfSums)
    for batch, seq_len in ((1, 256), (1, 2048), (2, 8192), (3, 1001), (1, 32768)):
        run = RunConfig(method="qlora", grad_ckpt=True, batch=batch, seq_len=seq_len)
        fitted = estimate(model, run).breakdown
        summed = MemoryBreakdown(fitted.terms)
        assert (fitted.peak_allocated_bytes, fitted.device_used_bytes) == (summed.peak_allocated_bytes, summed.device_used_bytes)
