"""--packing: whole examples in one row, positions restarting, nothing attends across examples."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from vramplan.calibrate.trainer.data import IGNORE, Example, collate
from vramplan.calibrate.trainer.packing import PackedBatches, packed_collate
from vramplan.planner.catalog import resolve_model
from vramplan.planner.errors import ConfigError
from vramplan.planner.estimator import estimate
from vramplan.planner.specs import RunConfig

from .conftest import TINY_LLAMA
from .test_trainer import cli_run, tiny  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")

A = Example([5, 6, 7, 8, 9], [5, 6, 7, 8, 9])
B = Example([10, 11, 12, 13, 14, 15, 16], [IGNORE, IGNORE, 12, 13, 14, 15, 16])  # a masked prompt


def test_rows_restart_positions_and_never_predict_across_examples():
    batch = packed_collate([[A, B]], pad_id=0, width=14)
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4] + list(range(9))  # B's run continues over the padding
    assert batch["labels"][0, 5] == IGNORE  # B's first token would be predicted from A's last
    assert batch["attention_mask"][0].tolist() == [1] * 12 + [0] * 2


def test_batches_fill_rows_with_whole_examples():
    examples = [Example([1] * n, [1] * n) for n in (3, 4, 2, 5)]
    batches = PackedBatches(examples, batch=2, pad_id=0, seed=0, seq_len=6)
    first = batches.next()
    assert first["input_ids"].shape == (2, 6) and batches.position >= 3
    assert all(int(row.sum()) <= 6 for row in first["attention_mask"])


def test_packed_loss_equals_the_padded_loss():
    """The same targets through sdpa's block-diagonal mask give the padded batch's loss (fp32)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**TINY_LLAMA), dtype=torch.float32, attn_implementation="sdpa").eval()
    model.config.use_cache = False  # as in training: with a KV cache transformers does not look for packed rows
    padded = collate([A, B], pad_id=0)
    padded.pop("attention_mask")
    packed = packed_collate([[A, B]], pad_id=0, width=12)
    packed.pop("attention_mask")
    with torch.no_grad():
        assert float(model(**packed).loss) == pytest.approx(float(model(**padded).loss), abs=1e-3)
        unmasked = {k: v for k, v in packed.items() if k != "position_ids"}  # without the restarts B would see A
        assert float(model(**unmasked).loss) != pytest.approx(float(model(**padded).loss), abs=1e-3)


def test_estimate_counts_the_explicit_mask_and_refuses_eager():
    spec = resolve_model("llama-3-8b").spec
    plain = estimate(spec, RunConfig(method="lora", grad_ckpt=False, seq_len=1024))
    packed = estimate(spec, RunConfig(method="lora", grad_ckpt=False, seq_len=1024, packing=True))
    extra = packed.breakdown.peak_allocated_bytes - plain.breakdown.peak_allocated_bytes
    per_layer = 2 * 2 * 1024 * (4096 - 1024) + 2 * 1024 * 1024  # k/v repeated to every head + the float mask copy
    assert extra >= 32 * per_layer
    with pytest.raises(ConfigError, match="--packing needs"):
        RunConfig(packing=True, attention="eager")


@pytest.mark.slow
def test_run_packing_trains_and_is_measured(tiny, tmp_path):
    from vramplan.calibrate.store import Store

    out, db = tmp_path / "out", tmp_path / "runs.db"
    result = cli_run("--model", tiny["model"], "--data", tiny["data"], "--out", out, "--db", db, "--max-steps", 12, "--lr", "0.01",
                     "--method", "lora", "--rank", "8", "--seq-len", "64", "--batch", "2", "--precision", "fp32", "--no-grad-ckpt",
                     "--dropout", "0", "--packing", "--no-progress")
    assert result.exit_code == 0, result.output
    (record,) = Store.open(db).runs()
    losses = [loss for _, loss in record.environment["trainer"]["loss_curve"]]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert record.run_config["packing"] is True
    assert abs(record.est_peak_allocated_bytes - record.peak_allocated_bytes) / record.peak_allocated_bytes < 0.05


def test_dataset_padding_share():
    from vramplan.planner.dataset_stats import DatasetStats

    stats = DatasetStats((100, 300, 600), "test")
    assert stats.padding_share(512) == pytest.approx(1 - (100 + 300 + 512) / (3 * 512))


@pytest.mark.slow
def test_a_plan_keeps_its_memory_savers(tiny, tmp_path):
    from vramplan.calibrate.store import Store
    from vramplan.planner.plan_file import write_plan

    plan = tmp_path / "plan.yaml"
    config = {"method": "lora", "rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["q_proj", "v_proj"], "batch": 2,
              "grad_accum": 1, "grad_ckpt": True, "optimizer": "adamw", "precision": "fp32", "seq_len": 64,
              "learning_rate": 1e-3, "epochs": 1, "loss": "chunked", "loss_chunk": 32, "packing": True,
              "offload_activations": True}
    write_plan(plan, {"model": str(tiny["model"]), "gpu": None, "goal": "quality", "config": config, "reasons": []})
    result = cli_run("--apply-recommendation", "--plan", plan, "--model", tiny["model"], "--data", tiny["data"],
                     "--out", tmp_path / "out", "--db", tmp_path / "runs.db", "--max-steps", 2, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "ignored unknown config keys" not in result.output
    (record,) = Store.open(tmp_path / "runs.db").runs()
    saved = record.run_config
    assert (saved["loss"], saved["loss_chunk"], saved["packing"], saved["offload_activations"]) == ("chunked", 32, True, True)
