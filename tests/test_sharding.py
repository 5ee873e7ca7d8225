"""Per-GPU arithmetic of DDP, FSDP and ZeRO on known cases."""

import pytest

from vramplan.planner.catalog import catalog_spec, resolve_gpu
from vramplan.planner.errors import ConfigError
from vramplan.planner.estimator import estimate
from vramplan.planner.sharding import ParallelPlan, gpus_needed, shard
from vramplan.planner.specs import RunConfig

LLAMA3_70B = catalog_spec("meta-llama/Meta-Llama-3-70B")
A100 = resolve_gpu("a100-80gb")


def single(method="full", **run):
    return estimate(LLAMA3_70B, RunConfig(method=method, **run), A100)


def terms(sharded):
    return sharded.breakdown.by_name()


def test_zero_stages_divide_states_then_grads_then_params():
    # ZeRO paper §5.1: P_os divides optimizer states, P_os+g also gradients, P_os+g+p also parameters
    base = single(precision="bf16-mixed").breakdown.by_name()
    n = 8
    z1, z2, z3 = (terms(shard(single(precision="bf16-mixed"), ParallelPlan(s, n))) for s in ("zero1", "zero2", "zero3"))
    assert z1["optimizer/states"] == base["optimizer/states"] // n and z1["grads/trainable"] == base["grads/trainable"]
    assert z2["grads/trainable"] == base["grads/trainable"] // n and z2["weights/base"] == base["weights/base"]
    assert z3["weights/base"] == base["weights/base"] // n
    # 16 bytes per parameter in mixed precision (fp32 weights, grads, m, v): ZeRO-3 leaves 16/N
    params_grads_states = base["weights/base"] + base["grads/trainable"] + base["grads/lm_head"] + base["optimizer/states"]
    assert params_grads_states == 16 * LLAMA3_70B.base_params
    z3_total = z3["weights/base"] + z3["grads/trainable"] + z3["grads/lm_head"] + z3["optimizer/states"]
    assert abs(z3_total - 16 * LLAMA3_70B.base_params / n) <= 4


def test_activations_are_never_sharded():
    one = single("lora").breakdown.by_name()
    for strategy in ("ddp", "zero2", "fsdp"):
        sharded = terms(shard(single("lora"), ParallelPlan(strategy, 4)))
        assert sharded["activations/logits"] == one["activations/logits"]
        assert sharded["activations/checkpoint_inputs"] == one["activations/checkpoint_inputs"]


def test_frozen_base_replicated_under_ddp_divided_under_full_shard():
    one = single("lora").breakdown.by_name()["weights/base"]
    assert terms(shard(single("lora"), ParallelPlan("ddp", 4)))["weights/base"] == one
    assert terms(shard(single("lora"), ParallelPlan("zero2", 4)))["weights/base"] == one
    assert terms(shard(single("lora"), ParallelPlan("fsdp", 4)))["weights/base"] == one // 4


def test_ddp_adds_a_copy_of_the_gradients():
    sharded = terms(shard(single("full"), ParallelPlan("ddp", 2)))
    assert sharded["distributed/ddp_buckets"] == sharded["grads/trainable"] + sharded["grads/lm_head"]


def test_optimizer_offload_moves_states_to_host():
    result = shard(single("full"), ParallelPlan("zero3", 8, "optimizer"))
    assert terms(result)["optimizer/states"] == 0
    assert result.host_bytes >= single("full").breakdown.by_name()["optimizer/states"]


def test_70b_lora_needs_full_shard_on_80gb_cards():
    assert not single("lora").fits
    assert gpus_needed(single("lora"), "ddp", max_gpus=8) is None  # replicating 140 GB of weights never fits
    needed = gpus_needed(single("lora"), "fsdp", max_gpus=8)
    assert needed is not None and 2 <= needed <= 4


@pytest.mark.parametrize(
    "plan,message",
    [
        (dict(strategy="zero4", gpus=2), "--strategy 'zero4' is not one of"),
        (dict(strategy="ddp", gpus=1), "--gpus must be 2 or more"),
        (dict(strategy="zero2", gpus=2, offload="params"), "--offload params needs a parameter-sharding strategy"),
        (dict(strategy="ddp", gpus=2, offload="optimizer"), "--offload needs fsdp or a DeepSpeed ZeRO stage"),
    ],
)
def test_bad_plans(plan, message):
    with pytest.raises(ConfigError, match=message):
        ParallelPlan(**plan)
