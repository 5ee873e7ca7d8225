"""`vramplan.integrations.VramplanCallback` on real HF Trainer runs (CPU, probe-sized Llama): the
run, its config and its measured peak land in the store beside the estimate, within the CPU
error bounds; a failure inside the callback is a warning and training goes on."""

import json
import statistics
import warnings

import pytest
import torch
from click.testing import CliRunner

from vramplan.calibrate.probe_models import PROBE_MODELS
from vramplan.calibrate.store import Store
from vramplan.cli import cli
from vramplan.integrations import VramplanCallback

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
SEQ, BATCH, STEPS = 128, 2, 3


class Rows(torch.utils.data.Dataset):
    """Fixed-length random token rows: every batch is batch x SEQ, as the estimate assumes."""

    def __init__(self, n, vocab):
        self.ids = torch.randint(0, vocab, (n, SEQ), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def train(db, method="lora", dtype=torch.float32, ckpt=False, bf16=False, grad_accum=1, optim="adamw_torch", callback=None):
    from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainingArguments

    config = AutoConfig.for_model(**PROBE_MODELS["probe-llama"])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if method == "lora":
        import peft

        if ckpt:
            model.enable_input_require_grads()
        lora = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, lora)
    args = TrainingArguments(
        output_dir=str(db.parent / "out"), per_device_train_batch_size=BATCH, gradient_accumulation_steps=grad_accum,
        max_steps=STEPS, optim=optim, bf16=bf16, use_cpu=True, report_to=[], save_strategy="no", logging_steps=100,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    callback = callback or VramplanCallback(db=db)
    trainer = Trainer(model=model, args=args, train_dataset=Rows(16, config.vocab_size), callbacks=[callback])
    trainer.train()
    return callback, trainer


CONFIGS = {  # name -> train() settings: adapters and full fine-tuning, fp32 and autocast, checkpointing, accumulation
    "lora fp32": {},
    "full fp32": {"method": "full"},
    "lora ckpt bf16-mixed accum 2": {"ckpt": True, "bf16": True, "grad_accum": 2},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    db = tmp_path_factory.mktemp("callback") / "store.db"
    callbacks = {name: train(db, **settings)[0] for name, settings in CONFIGS.items()}
    return db, callbacks


def test_callback_runs_land_in_the_store_with_config_and_peak(runs):
    db, callbacks = runs
    with Store.open(db) as store:
        records = {record.id: record for record in store.runs()}
    assert sorted(records) == sorted(cb.record_id for cb in callbacks.values())
    lora = records[callbacks["lora fp32"].record_id]
    assert (lora.source, lora.outcome, lora.model_name) == ("cpu", "ok", "llama")
    assert lora.run_config | {"targets": tuple(lora.run_config["targets"])} == lora.run_config | {
        "method": "lora", "rank": 8, "alpha": 16.0, "dropout": 0.05, "batch": BATCH, "seq_len": SEQ, "grad_ckpt": False,
        "optimizer": "adamw", "precision": "fp32", "attention": "sdpa", "adapter_dtype": "fp32", "device_kind": "cpu",
        "targets": ("down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj")}
    assert lora.model_config["hidden_size"] == 256 and lora.environment["trainer"]["kind"] == "hf trainer callback"
    assert set(lora.phases) == {"forward", "backward", "optimizer"} and lora.peak_allocated_bytes == max(lora.phases.values())
    full = records[callbacks["full fp32"].record_id]
    assert full.run_config["method"] == "full"
    mixed = records[callbacks["lora ckpt bf16-mixed accum 2"].record_id]
    assert (mixed.run_config["precision"], mixed.run_config["grad_ckpt"]) == ("bf16-mixed", True)
    assert mixed.environment["trainer"]["grad_accum"] == 2 and mixed.environment["trainer"]["shapes"] == [[BATCH, SEQ]] * 2


def test_the_estimate_beside_each_run_is_within_the_cpu_bounds(runs):
    db, _ = runs
    with Store.open(db) as store:
        errors = [abs(r.est_peak_allocated_bytes - r.peak_allocated_bytes) / r.peak_allocated_bytes * 100 for r in store.runs()]
    assert statistics.median(errors) <= 2.0 and max(errors) <= 5.0, errors


def test_calibrate_report_shows_the_callback_runs(runs):
    db, callbacks = runs
    result = CliRunner().invoke(cli, ["calibrate", "--report", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {row["id"] for row in rows} >= {cb.record_id for cb in callbacks.values()}
    assert all(row["source"] == "cpu" and row["measured_bytes"] for row in rows)


def test_a_failure_inside_the_callback_is_a_warning_and_training_goes_on(tmp_path):
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    db = tmp_path / "store.db"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callback, trainer = train(db, optim="adafactor")  # an optimizer the estimator does not model
    assert trainer.state.global_step == STEPS  # the run finished
    messages = [str(w.message) for w in caught if "vramplan" in str(w.message)]
    assert len(messages) == 1 and "not modelled" in messages[0] and "training goes on, this run is not recorded" in messages[0]
    assert callback.record_id is None and not db.exists()
    assert _get_current_dispatch_mode() is None  # the CPU tracker is not left behind


def test_16_bit_weights_under_autocast_are_estimated_as_the_pure_run_and_said_so(tmp_path):
    callback, _ = train(tmp_path / "store.db", dtype=torch.bfloat16, bf16=True, callback=VramplanCallback(record=False))
    record = callback.result["record"]
    assert record.run_config["precision"] == "bf16" and record.run_config["adapter_dtype"] == "fp32"
    assert any("16-bit weights under bf16 autocast" in note for note in record.environment["trainer"]["notes"])
    assert record.est_peak_allocated_bytes >= record.peak_allocated_bytes  # an upper bound, as the note says
