"""The analytic model's arithmetic on known cases and its invariants."""

from dataclasses import replace

import pytest

from vramplan.planner.breakdown import DEVICE, OPTIMIZER
from vramplan.planner.catalog import catalog_spec, resolve_gpu
from vramplan.planner.errors import ConfigError
from vramplan.planner.estimator import estimate
from vramplan.planner.limits import max_batch, max_seq_len
from vramplan.planner.methods.base import nf4_constants_bytes
from vramplan.planner.specs import RunConfig

LLAMA3_8B = catalog_spec("meta-llama/Meta-Llama-3-8B")


def terms(model, **run):
    return estimate(model, RunConfig(**run)).breakdown.by_name()


def test_nf4_constants_per_block():
    numel = 4096 * 4096  # 262,144 blocks of 64
    assert nf4_constants_bytes(numel, double_quant=False) == 4 * 262_144
    # uint8 absmax per block + fp32 per 256 blocks + 256-entry code + offset
    assert nf4_constants_bytes(numel, double_quant=True) == 262_144 + 4 * 1024 + 4 * 256 + 4


def test_qlora_weights_half_a_byte_per_linear_param():
    qlora = terms(LLAMA3_8B, method="qlora")
    assert qlora["weights/base"] == LLAMA3_8B.linear_params // 2
    unquantized = LLAMA3_8B.embed_params + LLAMA3_8B.lm_head_params + LLAMA3_8B.norm_params
    assert qlora["weights/unquantized"] == 4 * unquantized  # fp32 after prepare_model_for_kbit_training
    no_dq = terms(LLAMA3_8B, method="qlora", double_quant=False)
    assert no_dq["weights/quant_constants"] > 3.5 * qlora["weights/quant_constants"]


def test_adapter_fp32_by_default_and_bf16_halves_it():
    fp32 = terms(LLAMA3_8B, method="lora", targets=("q", "k", "v", "o", "gate", "up", "down"))
    bf16 = terms(LLAMA3_8B, method="lora", targets=("q", "k", "v", "o", "gate", "up", "down"), adapter_dtype="bf16")
    assert fp32["weights/adapter"] == 4 * 41_943_040
    assert bf16["weights/adapter"] == 2 * 41_943_040
    assert fp32["optimizer/states"] == 2 * 4 * 41_943_040


def test_full_finetuning_peaks_in_the_optimizer_step_regardless_of_checkpointing():
    on = estimate(LLAMA3_8B, RunConfig(method="full", grad_ckpt=True)).breakdown
    off = estimate(LLAMA3_8B, RunConfig(method="full", grad_ckpt=False)).breakdown
    assert on.peak_phase == OPTIMIZER
    assert on.phase_total(OPTIMIZER) == off.phase_total(OPTIMIZER)
    assert on.by_name()["optimizer/states"] == 2 * 2 * LLAMA3_8B.base_params  # bf16 states for bf16 params


def test_mixed_precision_keeps_fp32_master_and_states():
    mixed = terms(LLAMA3_8B, method="full", precision="bf16-mixed")
    assert mixed["weights/base"] == 4 * LLAMA3_8B.base_params
    assert mixed["optimizer/states"] == 8 * LLAMA3_8B.base_params
    assert mixed["weights/autocast_copies"] == 2 * LLAMA3_8B.linear_params


def test_checkpointing_lowers_lora_peak():
    on = estimate(LLAMA3_8B, RunConfig(method="lora", grad_ckpt=True)).breakdown.peak_allocated_bytes
    off = estimate(LLAMA3_8B, RunConfig(method="lora", grad_ckpt=False)).breakdown.peak_allocated_bytes
    assert off > on + 10 * 2**30


def test_eager_attention_is_quadratic_and_sdpa_linear():
    def acts(seq, attention):
        return terms(LLAMA3_8B, method="lora", grad_ckpt=False, seq_len=seq, attention=attention)

    assert acts(4096, "sdpa")["activations/layers"] == 2 * acts(2048, "sdpa")["activations/layers"]
    scores = acts(4096, "eager")["activations/attention_scores"]
    assert scores == 4 * acts(2048, "eager")["activations/attention_scores"]
    assert scores == 32 * (4 + 2) * 32 * 4096 * 4096  # layers x (fp32 probs + bf16 copy) x heads x seq^2


def test_dora_costs_more_than_lora():
    lora = estimate(LLAMA3_8B, RunConfig(method="lora")).breakdown.peak_allocated_bytes
    dora = estimate(LLAMA3_8B, RunConfig(method="dora")).breakdown.peak_allocated_bytes
    assert dora > lora


def test_paged_optimizer_states_are_outside_the_allocator():
    result = estimate(LLAMA3_8B, RunConfig(method="full", optimizer="paged-adamw-8bit")).breakdown
    paged = next(t for t in result.terms if t.name == "optimizer/paged_states")
    assert paged.stat == DEVICE and paged.bytes > LLAMA3_8B.base_params * 2
    assert result.device_used_bytes - result.peak_reserved_bytes >= paged.bytes


def test_cpu_runs_have_no_cuda_overheads():
    names = terms(LLAMA3_8B, method="qlora", device_kind="cpu")
    assert not [name for name in names if name.startswith("overhead/")]


def test_logits_dominate_at_large_vocab():
    small = catalog_spec("meta-llama/Llama-2-7b-hf")  # 32k vocab
    big = terms(LLAMA3_8B, method="qlora")["activations/logits"]
    assert big > 3.5 * terms(small, method="qlora")["activations/logits"]


def test_limits_are_the_boundary():
    gpu = resolve_gpu("l4")
    run = RunConfig(method="qlora", precision="bf16", seq_len=1024)
    batch = max_batch(LLAMA3_8B, run, gpu)
    assert batch >= 1
    assert estimate(LLAMA3_8B, replace(run, batch=batch), gpu).fits
    assert not estimate(LLAMA3_8B, replace(run, batch=batch + 1), gpu).fits
    seq = max_seq_len(LLAMA3_8B, run, gpu)
    assert estimate(LLAMA3_8B, replace(run, seq_len=seq), gpu).fits
    assert not estimate(LLAMA3_8B, replace(run, seq_len=seq + 64), gpu).fits


def test_runconfig_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as info:
        RunConfig(rank=0, batch=-1, optimizer="lion")
    message = str(info.value)
    assert "--rank" in message and "--batch" in message and "--optimizer 'lion'" in message
