"""The bad-input corpus: what a new user might type, each answered by one `Error:` line that says what to do.

Every case runs in a fresh folder of damaged and odd files (`make_files`) and must end with the
exit code given, an error line that starts as given, no traceback, and nothing left behind by
`run` (no output folder, no store). A few flags that do not apply are answered with a note
(exit 0). `test_json_errors` repeats a sample with --json: one JSON object on stdout.
"""

import json
import sqlite3

import pytest
from click.testing import CliRunner

from vramplan.cli import cli

TINY = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 160,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu"}
BERT = {"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 512, "max_position_embeddings": 512}
T5 = {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "d_model": 64, "d_ff": 128, "num_layers": 2,
      "num_heads": 4, "vocab_size": 512, "is_encoder_decoder": True}
CLASSIFIER = {**TINY, "architectures": ["LlamaForSequenceClassification"]}
YARN = {**TINY, "max_position_embeddings": 512, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}}
PLAN = '{"vramplan_plan": 1, "model": "8b", "gpu": null, "config": {"method": "lora"}}'


def make_files(root):
    """Damaged and odd inputs, each a path under `root`; returns {name: path as text}."""
    files = {"root": root}

    def write(name, data):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path

    for name, config in (("tiny", TINY), ("bert", BERT), ("t5", T5), ("classifier", CLASSIFIER), ("yarn", YARN)):
        files[name] = write(f"{name}/config.json", json.dumps(config)).parent
    for name, config in (("cfg_badnum", {**TINY, "hidden_size": "abc"}), ("cfg_neg", {**TINY, "num_hidden_layers": -2}),
                         ("cfg_zero_heads", {**TINY, "num_attention_heads": 0}), ("cfg_float", {**TINY, "vocab_size": 512.5}),
                         ("cfg_bool", {**TINY, "hidden_size": True}), ("cfg_odd_heads", {**TINY, "num_attention_heads": 3}),
                         ("cfg_kv", {**TINY, "num_key_value_heads": 3}), ("cfg_bare", {"model_type": "llama"})):
        files[name] = write(f"{name}/config.json", json.dumps(config)).parent
    files["cfg_list"] = write("list/config.json", "[1, 2]")
    files["cfg_latin1"] = write("latin1/config.json", b'{"model_type": "llama", "name": "caf\xe9"}')
    files["cfg_trunc"] = write("trunc/config.json", json.dumps(TINY)[:40])
    files["empty_dir"] = root / "emptydir"
    files["empty_dir"].mkdir()
    files["binary"] = write("blob.bin", bytes(range(256)) * 8)
    for name, text in (("empty", ""), ("blank", "\n  \n"), ("badline", '{"text": "a"}\n{broken\n'), ("notobj", "[1,2]\n"),
                       ("noshape", '{"prompt": "x"}\n'), ("nullrow", "null\n"), ("badmsgs", '{"messages": "hi"}\n'),
                       ("noassistant", '{"messages": [{"role": "user", "content": "hi"}]}\n'), ("good", '{"text": "count 1 2 3"}\n' * 20)):
        files[f"{name}_jsonl"] = write(f"{name}.jsonl", text)
    files["latin1_jsonl"] = write("latin1.jsonl", b'{"text": "caf\xe9"}\n')
    files["cut_utf8_jsonl"] = write("cut.jsonl", '{"text": "ok"}\n'.encode() + "é".encode()[:1])
    files["plan_missing"] = root / "noplan.yaml"
    for name, text in (("plan_empty", ""), ("plan_notjson", "{not json"), ("plan_list", "[1]"), ("plan_str", '"plan"'),
                       ("plan_trunc", PLAN), ("plan_nogpu", PLAN.replace('"gpu": null, ', "")), ("plan_future", PLAN.replace('"vramplan_plan": 1', '"vramplan_plan": 99')),
                       ("plan_badrank", PLAN.replace('{"method": "lora"}', '{"method": "lora", "rank": "lots", "batch": 1, "seq_len": 64, "grad_ckpt": true, "optimizer": "adamw", "precision": "bf16"}'))):
        files[name] = write(f"{name}.json", text)
    files["plan_latin1"] = write("plan_latin1.json", b'{"vramplan_plan": 1, "model": "caf\xe9"}')
    files["plan_badyaml"] = write("bad.yaml", "config: [unclosed\n")
    files["db_garbage"] = write("garbage.db", b"garbage" * 500)
    files["db_dir"] = root / "dbdir"
    files["db_dir"].mkdir()
    for name, statements in (("db_foreign", ["CREATE TABLE notes (x)"]), ("db_newer", ["CREATE TABLE runs (id)", "PRAGMA user_version = 99"])):
        connection = sqlite3.connect(root / f"{name}.db")
        for statement in statements:
            connection.execute(statement)
        connection.commit()
        connection.close()
        files[name] = root / f"{name}.db"
    files["afile"] = write("afile.txt", "hello")
    files["nowhere"] = root / "no" / "such" / "folder"
    files["run_nomarker"] = root / "rundir"
    files["run_nomarker"].mkdir()
    files["run_badmarker"] = write("badrun/vramplan-run.json", "{oops").parent
    files["run_foreign_marker"] = write("foreignrun/vramplan-run.json", '{"format": "other"}').parent
    files["out_busy"] = write("busy/notes.txt", "mine").parent
    files["out_done"] = write("done/vramplan-run.json", json.dumps({"format": "vramplan-run/1", "status": "finished", "step": 5})).parent
    return {name: str(path) for name, path in files.items()}


E = ("estimate", "--model", "llama-3-8b")
R = ("recommend", "--model", "llama-3-8b", "--gpu", "t4")
RUN = ("run", "--model", "{tok}", "--data", "{good_jsonl}", "--device", "cpu")
REP = ("report", "--model", "llama-3-8b", "--gpu", "t4", "--out", "{root}/r.html")
KNOWN_GPUS = "t4, v100-16gb, v100-32gb, a10g, l4, rtx3090, rtx4090, l40s, a100-40gb, a100-80gb, h100, h200"
RUN_NEEDS = "`vramplan run` trains a local model directory (config.json, tokenizer, *.safetensors)"
DATA_FORMATS = "give JSONL, JSON, CSV, Parquet, or a datasets save_to_disk folder with one example per row"
PLAN_AGAIN = "write it again with `vramplan recommend ... --out FILE`"
ENCODER = "is an encoder, not a causal decoder; vramplan plans decoder-only causal-LM fine-tuning"
WIDTH_8B = "is above the model's width (4,096): a LoRA update of a layer that wide has rank at most 4,096; use --rank 4096 or less"
WINDOW_8B = "is beyond the context window of meta-llama/Meta-Llama-3-8B (8,192 tokens, max_position_embeddings): the model never saw longer sequences; use --seq-len 8192 or less, or pass --allow-long-context"
GARBAGE = "{db_garbage} is not a readable vramplan store"
FOREIGN = "{db_foreign} is an SQLite file but not a vramplan store; pass another --db path"
NEWER = "{db_newer} has schema v99, newer than this vramplan (v2): upgrade vramplan"
TOO_MANY_TOKENS = "tokens per micro-batch, more than one step can index (2^31); lower --batch or --seq-len"

# (args, exit code, the start of the last `Error:` line; with exit 0, a line the output holds)
CASES = [
    # ---------------------------------------------------------------- estimate: the model
    (("estimate",), 1, "Error: --model is required (or --plan FILE)"),
    (("estimate", "--model", ""), 1, "Error: --model is required (or --plan FILE)"),
    (("estimate", "--model", "nope"), 1, "Error: unknown model 'nope': run `vramplan models` for the catalog"),
    (("estimate", "--model", "7bb"), 1, "Error: unknown model '7bb': did you mean 7b"),
    (("estimate", "--model", "llama-9-8b"), 1, "Error: unknown model 'llama-9-8b': did you mean"),
    (("estimate", "--model", "{empty_dir}"), 1, "Error: {empty_dir} has no config.json; pass a model directory that contains one"),
    (("estimate", "--model", "{cfg_list}"), 1, "Error: {cfg_list} has no 'model_type'; it does not look like a transformers config.json"),
    (("estimate", "--model", "{cfg_latin1}"), 1, "Error: {cfg_latin1} is not valid JSON ('utf-8' codec can't decode byte 0xe9"),
    (("estimate", "--model", "{cfg_trunc}"), 1, "Error: {cfg_trunc} is not valid JSON"),
    (("estimate", "--model", "{cfg_badnum}"), 1, "Error: {cfg_badnum}/config.json: hidden_size is 'abc', not a whole number greater than 0; fix the config.json"),
    (("estimate", "--model", "{cfg_neg}"), 1, "Error: {cfg_neg}/config.json: num_hidden_layers is -2, not a whole number greater than 0"),
    (("estimate", "--model", "{cfg_zero_heads}"), 1, "Error: {cfg_zero_heads}/config.json: num_attention_heads is 0, not a whole number greater than 0"),
    (("estimate", "--model", "{cfg_float}"), 1, "Error: {cfg_float}/config.json: vocab_size is 512.5, not a whole number greater than 0"),
    (("estimate", "--model", "{cfg_bool}"), 1, "Error: {cfg_bool}/config.json: hidden_size is True, not a whole number greater than 0"),
    (("estimate", "--model", "{cfg_odd_heads}"), 1, "Error: {cfg_odd_heads}/config.json: hidden_size 64 is not divisible by num_attention_heads 3"),
    (("estimate", "--model", "{cfg_kv}"), 1, "Error: {cfg_kv}/config.json: num_attention_heads 4 is not divisible by num_key_value_heads 3"),
    (("estimate", "--model", "{cfg_bare}"), 1, "Error: {cfg_bare}/config.json: no hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, vocab_size"),
    (("estimate", "--model", "{bert}"), 1, "Error: {bert}/config.json: model_type 'bert' (BertForMaskedLM) " + ENCODER),
    (("estimate", "--model", "{t5}"), 1, "Error: {t5}/config.json: model_type 't5' (T5ForConditionalGeneration) is an encoder-decoder model, not a causal decoder"),
    (("estimate", "--model", "{classifier}"), 1, "Error: {classifier}/config.json: model_type 'llama' (LlamaForSequenceClassification) is a masked-LM or classification model"),
    (("estimate", "--model", "{binary}"), 1, "Error: {binary} is not valid JSON"),
    (("estimate", "--model", "/dev/null"), 1, "Error: /dev/null has no config.json"),
    (("estimate", "--model", "{nowhere}/config.json"), 1, "Error: unknown model '{nowhere}/config.json': run `vramplan models`"),
    (("estimate", "--model", "{plan_notjson}"), 1, "Error: {plan_notjson} is not valid JSON"),
    (("estimate", "--model", "{tiny}", "--seq-len", "4096"), 1, "Error: --seq-len 4096 is beyond the context window of tiny (512 tokens, max_position_embeddings)"),
    (("estimate", "--model", "{yarn}", "--seq-len", "4096"), 1, "Error: --seq-len 4096 is beyond the context window of yarn (2,048 tokens, 512 x rope_scaling yarn factor 4)"),
    (("estimate", "--model", "{tiny}"), 0, "note: seq-len 512: the model's context window (max_position_embeddings); the default 2,048 is beyond it"),
    (("estimate", "--model", "{yarn}", "--gpu", "h200", "--method", "lora"), 0, "note: max seq len is capped at the context window, 2,048 tokens (512 x rope_scaling yarn factor 4)"),
    # ---------------------------------------------------------------- estimate: the GPU
    ((*E, "--gpu", "nope"), 1, f"Error: unknown GPU 'nope': known: {KNOWN_GPUS}; or give --gpu-mem 22GiB"),
    ((*E, "--gpu", "t5"), 1, "Error: unknown GPU 't5': did you mean t4"),
    ((*E, "--gpu", "a100"), 1, "Error: --gpu 'a100' is ambiguous: choose one of a100-40gb, a100-80gb"),
    ((*E, "--gpu", "t4", "--gpu-mem", "16GB"), 1, "Error: give either --gpu or --gpu-mem, not both"),
    *[((*E, "--gpu-mem", size), 1, f"Error: --gpu-mem '{size}' is not a memory size; write a number and a unit, e.g. 22GiB or 24GB")
      for size in ("abc", "-5GiB", "1e30GB", "22", "22XB", "nanGB", "infGiB", "GiB", "22 G i B")],
    ((*E, "--gpu-mem", "0GB"), 1, "Error: --gpu-mem '0GB' must be greater than zero"),
    # ---------------------------------------------------------------- estimate: methods and run flags
    ((*E, "--method", "foo"), 1, "Error: --method 'foo' is not one of: full, lora, qlora, dora, qdora"),
    ((*E, "--method", "lora,foo"), 1, "Error: --method 'foo' is not one of: full, lora"),
    ((*E, "--method", "ia3"), 1, "Error: --method 'ia3' is not one of"),
    ((*E, "--rank", "0"), 1, "Error: --rank must be a whole number greater than 0, got 0"),
    ((*E, "--rank", "-1"), 1, "Error: --rank must be a whole number greater than 0, got -1"),
    ((*E, "--rank", "100000"), 1, "Error: --rank 100000 " + WIDTH_8B),
    ((*E, "--rank", "4097"), 1, "Error: --rank 4097 " + WIDTH_8B),
    ((*E, "--rank", "1e21"), 2, "Error: Invalid value for '--rank' / '-r': '1e21' is not a valid integer."),
    ((*E, "--rank", "abc"), 2, "Error: Invalid value for '--rank' / '-r': 'abc' is not a valid integer."),
    ((*E, "--rank", "8.5"), 2, "Error: Invalid value for '--rank' / '-r': '8.5' is not a valid integer."),
    ((*E, "--alpha", "-1"), 1, "Error: --alpha must be greater than 0, got -1.0"),
    ((*E, "--alpha", "0"), 1, "Error: --alpha must be greater than 0, got 0.0"),
    ((*E, "--alpha", "nan"), 1, "Error: --alpha must be a finite number, got nan"),
    ((*E, "--alpha", "inf"), 1, "Error: --alpha must be a finite number, got inf"),
    ((*E, "--alpha", "x"), 2, "Error: Invalid value for '--alpha': 'x' is not a valid float."),
    ((*E, "--dropout", "-0.1"), 1, "Error: --dropout must be in [0, 1), got -0.1"),
    ((*E, "--dropout", "1"), 1, "Error: --dropout must be in [0, 1), got 1.0"),
    ((*E, "--dropout", "nan"), 1, "Error: --dropout must be in [0, 1), got nan"),
    ((*E, "--targets", ""), 1, "Error: --targets is empty; give module names or one of: attention, mlp, all-linear"),
    ((*E, "--targets", ","), 1, "Error: --targets is empty; give module names"),
    ((*E, "--targets", "foo"), 1, "Error: --targets 'foo' not in meta-llama/Meta-Llama-3-8B; it has: q_proj"),
    ((*E, "--targets", "q,wq"), 1, "Error: --targets 'wq' not in meta-llama/Meta-Llama-3-8B"),
    ((*E, "--batch", "0"), 1, "Error: --batch must be a whole number greater than 0, got 0"),
    ((*E, "--batch", "-4"), 1, "Error: --batch must be a whole number greater than 0, got -4"),
    ((*E, "--batch", "1000000000000"), 1, "Error: --batch 1000000000000 x --seq-len 2048 = 2,048,000,000,000,000 " + TOO_MANY_TOKENS),
    ((*E, "--batch", "5000000"), 1, "Error: --batch 5000000 x --seq-len 2048 = 10,240,000,000 " + TOO_MANY_TOKENS),
    ((*E, "--seq-len", "0"), 1, "Error: --seq-len must be a whole number greater than 0, got 0"),
    ((*E, "--seq-len", "-1"), 1, "Error: --seq-len must be a whole number greater than 0, got -1"),
    ((*E, "--seq-len", "1000000000"), 1, "Error: --seq-len 1000000000 " + WINDOW_8B),
    ((*E, "--seq-len", "100000"), 1, "Error: --seq-len 100000 " + WINDOW_8B),
    ((*E, "--seq-len", "8193"), 1, "Error: --seq-len 8193 " + WINDOW_8B),
    ((*E, "--seq-len", "3000000000", "--allow-long-context"), 1, "Error: --batch 1 x --seq-len 3000000000 = 3,000,000,000 " + TOO_MANY_TOKENS),
    ((*E, "--optimizer", "lion"), 2, "Error: Invalid value for '--optimizer': 'lion' is not one of"),
    ((*E, "--precision", "foo"), 2, "Error: Invalid value for '--precision': 'foo' is not one of"),
    ((*E, "--attention", "foo"), 2, "Error: Invalid value for '--attention': 'foo' is not one of"),
    ((*E, "--adapter-dtype", "int8"), 2, "Error: Invalid value for '--adapter-dtype': 'int8' is not one of"),
    ((*E, "--gpu", "t4", "--precision", "bf16"), 1, "Error: NVIDIA Tesla T4 has no bf16 support: use --precision fp16 or fp16-mixed"),
    ((*E, "--gpu", "t4", "--adapter-dtype", "bf16"), 1, "Error: NVIDIA Tesla T4 has no bf16 support"),
    ((*E, "--gpus", "0"), 1, "Error: --gpus must be 1 or more, got 0"),
    ((*E, "--gpus", "-1"), 1, "Error: --gpus must be 1 or more, got -1"),
    ((*E, "--gpus", "4"), 1, "Error: --gpus above 1 needs --strategy: ddp, fsdp, fsdp-grad-op, zero1, zero2 or zero3"),
    ((*E, "--gpus", "1", "--strategy", "ddp"), 1, "Error: --gpus must be 2 or more with --strategy, got 1"),
    ((*E, "--strategy", "foo"), 2, "Error: Invalid value for '--strategy': 'foo' is not one of"),
    ((*E, "--gpus", "2", "--strategy", "zero2", "--offload", "params"), 1, "Error: --offload params needs a parameter-sharding strategy (fsdp or zero3), not zero2"),
    ((*E, "--offload", "disk"), 2, "Error: Invalid value for '--offload': 'disk' is not one of"),
    ((*E, "--method", "full", "--rank", "8"), 0, "note: --rank does not apply to Full (no LoRA-style adapter); ignored"),
    ((*E, "--method", "full", "--targets", "q,v"), 0, "note: --targets does not apply to Full (no LoRA-style adapter); ignored"),
    ((*E, "--method", "lora", "--no-double-quant"), 0, "note: --double-quant/--no-double-quant does not apply to LoRA (no 4-bit base); ignored"),
    ((*E, "--gpu", "h200", "--method", "lora"), 0, "note: max seq len is capped at the context window, 8,192 tokens"),
    ((*E, "--bogus"), 2, "Error: No such option '--bogus'."),
    # ---------------------------------------------------------------- estimate: files
    (("estimate", "--plan", "{plan_missing}"), 1, "Error: --plan {plan_missing} does not exist; make one with `vramplan recommend ... --out noplan.yaml`"),
    (("estimate", "--plan", "{plan_empty}"), 1, "Error: --plan {plan_empty} is not valid JSON (Expecting value"),
    (("estimate", "--plan", "{plan_notjson}"), 1, "Error: --plan {plan_notjson} is not valid JSON"),
    (("estimate", "--plan", "{plan_list}"), 1, "Error: --plan {plan_list} is not a vramplan plan (written by `vramplan recommend --out`)"),
    (("estimate", "--plan", "{plan_str}"), 1, "Error: --plan {plan_str} is not a vramplan plan"),
    (("estimate", "--plan", "{plan_latin1}"), 1, "Error: --plan {plan_latin1} is not UTF-8 text (byte 34)"),
    (("estimate", "--plan", "{plan_trunc}"), 1, "Error: --plan {plan_trunc}: config has no batch, seq_len, grad_ckpt, optimizer, precision (a truncated file?); " + PLAN_AGAIN),
    (("estimate", "--plan", "{plan_nogpu}"), 1, "Error: --plan {plan_nogpu} has no gpu (a truncated file?): " + PLAN_AGAIN),
    (("estimate", "--plan", "{plan_badyaml}"), 1, "Error: --plan {plan_badyaml} is not valid YAML"),
    (("estimate", "--plan", "{plan_future}"), 1, "Error: --plan {plan_future} has plan format 99; this vramplan reads format 1"),
    (("estimate", "--plan", "{plan_badrank}"), 1, "Error: --plan {plan_badrank}"),
    (("estimate", "--plan", "{empty_dir}"), 2, "Error: Invalid value for '--plan': File '{empty_dir}' is a directory."),
    (("estimate", "--plan", "{binary}"), 1, "Error: --plan {binary} is not UTF-8 text (byte 128)"),
    (("estimate", "--plan", "/dev/null"), 1, "Error: --plan /dev/null is not a regular file"),
    ((*E, "--html", "{empty_dir}"), 1, "Error: --html {empty_dir} is a directory; give a file name such as {empty_dir}/report.html"),
    ((*E, "--html", "{nowhere}/x.html"), 1, "Error: --html {nowhere}/x.html: the folder {nowhere} does not exist"),
    ((*E, "--html", "{afile}/x.html"), 1, "Error: --html {afile}/x.html: {afile} is a file, not a folder"),
    ((*E, "--gpu", "t4", "--db", "{db_garbage}"), 1, "Error: " + GARBAGE),
    ((*E, "--gpu", "t4", "--db", "{db_dir}"), 2, "Error: Invalid value for '--db': File '{db_dir}' is a directory."),
    ((*E, "--gpu", "t4", "--db", "{db_foreign}"), 1, "Error: " + FOREIGN),
    ((*E, "--gpu", "t4", "--db", "{db_newer}"), 1, "Error: " + NEWER),
    ((*E, "--gpu", "t4", "--db", "{nowhere}/x.db"), 1, "Error: --db {nowhere}/x.db: no such measurement store; run `vramplan calibrate --db {nowhere}/x.db` first or leave --db out"),
    # ---------------------------------------------------------------- recommend
    (("recommend", "--model", "8b"), 1, "Error: recommend needs a GPU: --gpu KEY (see `vramplan gpus`) or --gpu-mem SIZE"),
    (("recommend", "--model", "8b", "--gpu", "nope"), 1, "Error: unknown GPU 'nope'"),
    (("recommend", "--model", "nope", "--gpu", "t4"), 1, "Error: unknown model 'nope'"),
    (("recommend", "--model", "{bert}", "--gpu", "t4"), 1, "Error: {bert}/config.json: model_type 'bert' (BertForMaskedLM) " + ENCODER),
    (("recommend", "--model", "{cfg_zero_heads}", "--gpu", "t4"), 1, "Error: {cfg_zero_heads}/config.json: num_attention_heads is 0"),
    (("recommend", "--model", "70b", "--gpu", "t4"), 1, "Error: nothing fits meta-llama/Meta-Llama-3-70B on one NVIDIA Tesla T4 at seq-len 2048"),
    (("recommend", "--model", "8b", "--gpu-mem", "1KB"), 1, "Error: --gpu-mem '1KB' is not a memory size"),
    ((*R, "--gpu-mem", "abc"), 1, "Error: give either --gpu or --gpu-mem, not both"),
    ((*R, "--dataset", "{plan_missing}"), 1, f"Error: --dataset {{plan_missing}} does not exist; {DATA_FORMATS}"),
    ((*R, "--dataset", "{empty_dir}"), 1, f"Error: --dataset {{empty_dir}} is a directory (not a datasets save_to_disk folder); {DATA_FORMATS}"),
    ((*R, "--dataset", "/dev/null"), 1, f"Error: --dataset /dev/null is not a regular file (a device or a pipe); {DATA_FORMATS}"),
    ((*R, "--dataset", "{binary}"), 1, "Error: {binary}:2: not UTF-8 text (invalid start byte); the data must be UTF-8"),
    ((*R, "--dataset", "{latin1_jsonl}"), 1, "Error: {latin1_jsonl}:1: not UTF-8 text (invalid continuation byte)"),
    ((*R, "--dataset", "{cut_utf8_jsonl}"), 1, "Error: {cut_utf8_jsonl}:2: not UTF-8 text"),
    ((*R, "--dataset", "{empty_jsonl}"), 1, "Error: --dataset {empty_jsonl} has no rows"),
    ((*R, "--dataset", "{blank_jsonl}"), 1, "Error: --dataset {blank_jsonl} has no rows"),
    ((*R, "--dataset", "{badline_jsonl}"), 1, "Error: {badline_jsonl}:2: "),
    ((*R, "--dataset", "{notobj_jsonl}"), 1, "Error: {notobj_jsonl}:1: not a JSON object"),
    ((*R, "--dataset", "{nullrow_jsonl}"), 1, "Error: {nullrow_jsonl}:1: not a JSON object"),
    ((*R, "--dataset", "{noshape_jsonl}"), 1, "Error: {noshape_jsonl}:1: no 'text', 'messages' or 'instruction'/'input'/'output' field"),
    ((*R, "--dataset", "{good_jsonl}", "--dataset-size", "5"), 1, "Error: give either --dataset or --dataset-size, not both"),
    ((*R, "--dataset-size", "0"), 1, "Error: --dataset-size must be greater than 0, got 0"),
    ((*R, "--dataset-size", "-3"), 1, "Error: --dataset-size must be greater than 0, got -3"),
    ((*R, "--seq-len", "0"), 1, "Error: --seq-len must be greater than 0, got 0"),
    ((*R, "--seq-len", "100000"), 1, "Error: --seq-len 100000 " + WINDOW_8B),
    ((*R, "--seq-len", "1000000000"), 1, "Error: --seq-len 1000000000 " + WINDOW_8B),
    ((*R, "--seq-len", "100000", "--allow-long-context"), 1, "Error: nothing fits meta-llama/Meta-Llama-3-8B on one NVIDIA Tesla T4 at seq-len 100000"),
    ((*R, "--top", "0"), 1, "Error: --top must be greater than 0, got 0"),
    ((*R, "--gpus", "0"), 1, "Error: --gpus must be greater than 0, got 0"),
    ((*R, "--goal", "foo"), 2, "Error: Invalid value for '--goal': 'foo' is not one of"),
    ((*R, "--method", "foo"), 1, "Error: --method 'foo' is not one of"),
    ((*R, "--out", "{nowhere}/plan.yaml"), 1, "Error: --out {nowhere}/plan.yaml: the folder {nowhere} does not exist"),
    ((*R, "--out", "{empty_dir}"), 2, "Error: Invalid value for '--out': File '{empty_dir}' is a directory."),
    ((*R, "--html", "{nowhere}/x.html"), 1, "Error: --html {nowhere}/x.html: the folder {nowhere} does not exist"),
    ((*R, "--html", "{empty_dir}"), 1, "Error: --html {empty_dir} is a directory"),
    ((*R, "--db", "{db_garbage}"), 1, "Error: " + GARBAGE),
    ((*R, "--db", "{db_newer}"), 1, "Error: " + NEWER),
    ((*R, "--db", "{nowhere}/x.db"), 1, "Error: --db {nowhere}/x.db: no such measurement store"),
    (("recommend", "--model", "{tiny}", "--gpu", "t4"), 0, "seq-len 512: the model's context window (max_position_embeddings); the default 2,048 is beyond it"),
    # ---------------------------------------------------------------- run: checked before torch loads
    (("run",), 2, "Error: Missing option '--model' / '-m'."),
    (("run", "--model", "{tok}"), 2, "Error: Missing option '--data' / '-d'."),
    (("run", "--model", "{nowhere}", "--data", "{good_jsonl}"), 1, f"Error: --model {{nowhere}}: not a directory; {RUN_NEEDS}"),
    (("run", "--model", "{afile}", "--data", "{good_jsonl}"), 1, f"Error: --model {{afile}}: not a directory; {RUN_NEEDS}"),
    (("run", "--model", "{empty_dir}", "--data", "{good_jsonl}"), 1, f"Error: --model {{empty_dir}} has no config.json; {RUN_NEEDS}"),
    (("run", "--model", "{bert}", "--data", "{good_jsonl}"), 1, "Error: {bert}/config.json: model_type 'bert' (BertForMaskedLM) " + ENCODER),
    (("run", "--model", "{t5}", "--data", "{good_jsonl}"), 1, "Error: {t5}/config.json: model_type 't5' (T5ForConditionalGeneration) is an encoder-decoder model"),
    (("run", "--model", "{cfg_neg}", "--data", "{good_jsonl}"), 1, "Error: {cfg_neg}/config.json: num_hidden_layers is -2"),
    (("run", "--model", "{tok}", "--data", "{plan_missing}"), 1, f"Error: --data {{plan_missing}} does not exist; {DATA_FORMATS}"),
    (("run", "--model", "{tok}", "--data", "{empty_dir}"), 1, f"Error: --data {{empty_dir}} is a directory (not a datasets save_to_disk folder); {DATA_FORMATS}"),
    (("run", "--model", "{tok}", "--data", "/dev/null"), 1, f"Error: --data /dev/null is not a regular file (a device or a pipe); {DATA_FORMATS}"),
    (("run", "--model", "{tok}", "--data", "{binary}"), 1, "Error: {binary}:2: not UTF-8 text (invalid start byte); the data must be UTF-8"),
    (("run", "--model", "{tok}", "--data", "{latin1_jsonl}"), 1, "Error: {latin1_jsonl}:1: not UTF-8 text (invalid continuation byte)"),
    ((*RUN, "--plan", "{plan_missing}"), 1, "Error: --plan {plan_missing} does not exist"),
    ((*RUN, "--plan", "{plan_notjson}"), 1, "Error: --plan {plan_notjson} is not valid JSON"),
    ((*RUN, "--plan", "{plan_nogpu}"), 1, "Error: --plan {plan_nogpu} has no gpu (a truncated file?)"),
    ((*RUN, "--plan", "{plan_latin1}"), 1, "Error: --plan {plan_latin1} is not UTF-8 text"),
    ((*RUN, "--plan", "{plan_trunc}"), 1, "Error: --plan {plan_trunc}: it was made for model '8b', not {tok}; make a plan for this setup, or pass --force"),
    ((*RUN, "--plan", "{binary}"), 1, "Error: --plan {binary} is not UTF-8 text"),
    ((*RUN, "--out", "{afile}"), 2, "Error: Invalid value for '--out' / '-o': Directory '{afile}' is a file."),
    ((*RUN, "--out", "{run_badmarker}"), 1, "Error: {run_badmarker}/vramplan-run.json is not readable"),
    ((*RUN, "--out", "{run_foreign_marker}"), 1, "Error: {run_foreign_marker}/vramplan-run.json is not a vramplan run marker; pass another --out"),
    ((*RUN, "--out", "{out_busy}"), 1, "Error: --out {out_busy} is not empty and holds no vramplan run; give a new or empty directory"),
    ((*RUN, "--out", "{out_done}"), 1, "Error: --out {out_done} already holds a run (status finished, step 5): pass --resume to continue it"),
    ((*RUN, "--out", "{empty_dir}", "--resume"), 1, "Error: --resume: {empty_dir} holds no run to resume; drop --resume to start one there"),
    ((*RUN, "--db", "{db_dir}"), 2, "Error: Invalid value for '--db': File '{db_dir}' is a directory."),
    ((*RUN, "--db", "{db_garbage}"), 1, "Error: {db_garbage} is not a readable vramplan store (not an SQLite file); nothing was changed"),
    ((*RUN, "--db", "{db_foreign}"), 1, "Error: " + FOREIGN),
    ((*RUN, "--db", "{db_newer}"), 1, "Error: " + NEWER),
    ((*RUN, "--db", "/dev/null"), 1, "Error: --db /dev/null is not a regular file"),
    ((*RUN, "--html", "{empty_dir}"), 2, "Error: Invalid value for '--html': File '{empty_dir}' is a directory."),
    ((*RUN, "--html", "{nowhere}/x.html"), 1, "Error: --html {nowhere}/x.html: the folder {nowhere} does not exist"),
    ((*RUN, "--seq-len", "1000000000"), 1, "Error: --seq-len 1000000000 is beyond the context window of {tok} (256 tokens, max_position_embeddings)"),
    ((*RUN, "--seq-len", "100000"), 1, "Error: --seq-len 100000 is beyond the context window of {tok} (256 tokens"),
    ((*RUN, "--seq-len", "1000000000", "--allow-long-context"), 3, "Error: on CPU the estimated peak is "),
    ((*RUN, "--seq-len", "200000", "--batch", "64", "--allow-long-context"), 3, "Error: on CPU the estimated peak is "),
    ((*RUN, "--rank", "100000"), 1, "Error: --rank 100000 is above the model's width (64)"),
    ((*RUN, "--grad-accum", "0"), 1, "Error: --grad-accum must be a whole number of at least 1, got 0"),
    ((*RUN, "--lr", "0"), 1, "Error: --lr must be greater than 0, got 0.0"),
    ((*RUN, "--lr", "-1e-4"), 1, "Error: --lr must be greater than 0, got -0.0001"),
    ((*RUN, "--epochs", "0"), 1, "Error: --epochs must be greater than 0, got 0.0"),
    ((*RUN, "--max-steps", "0"), 1, "Error: --max-steps must be at least 1, got 0"),
    ((*RUN, "--save-every", "0"), 1, "Error: --save-every must be at least 1, got 0"),
    ((*RUN, "--gpus", "2"), 1, "Error: --gpus above 1 needs --strategy: ddp or fsdp"),
    ((*RUN, "--gpus", "2", "--strategy", "fsdp"), 1, "Error: --strategy fsdp needs CUDA devices"),
    ((*RUN, "--strategy", "ddp"), 1, "Error: --strategy needs --gpus 2 or more"),
    (("run", "--model", "{tok}", "--data", "{good_jsonl}", "--device", "cuda"), 1, "Error: --device cuda: no CUDA device is visible to torch; use --device cpu"),
    ((*RUN, "--device", "tpu"), 2, "Error: Invalid value for '--device': 'tpu' is not one of"),
    ((*RUN, "--batch", "0"), 1, "Error: --batch must be a whole number greater than 0, got 0"),
    ((*RUN, "--gpu", "nope"), 1, "Error: unknown GPU 'nope'"),
    ((*RUN, "--method", "foo"), 2, "Error: Invalid value for '--method': 'foo' is not one of"),
    ((*RUN, "--gpu", "t4", "--precision", "bf16"), 1, "Error: NVIDIA Tesla T4 has no bf16 support"),
    ((*RUN, "--method", "adapter", "--merge"), 1, "Error: --merge: Adapter adapters have a nonlinearity and cannot be merged"),
    # ---------------------------------------------------------------- calibrate
    (("calibrate", "--steps", "1"), 1, "Error: --steps must be at least 2: the steady state starts at step 2"),
    (("calibrate", "--device", "cuda"), 1, "Error: --device cuda: no CUDA device is visible to torch; use --device cpu"),
    (("calibrate", "--device", "cpu", "--models", "nope"), 1, "Error: --models/--methods"),
    (("calibrate", "--device", "cpu", "--methods", "nope"), 1, "Error: --models/--methods"),
    (("calibrate", "--preset", "huge"), 2, "Error: Invalid value for '--preset': 'huge' is not one of"),
    (("calibrate", "--report", "--db", "{db_dir}"), 2, "Error: Invalid value for '--db': File '{db_dir}' is a directory."),
    (("calibrate", "--report", "--db", "{db_garbage}"), 1, "Error: {db_garbage} is not a readable vramplan store (not an SQLite file)"),
    (("calibrate", "--report", "--db", "{db_foreign}"), 1, "Error: " + FOREIGN),
    (("calibrate", "--report", "--db", "{db_newer}"), 1, "Error: " + NEWER),
    (("calibrate", "--report", "--db", "{nowhere}/x.db"), 1, "Error: the store {nowhere}/x.db does not exist yet (it holds no runs): run `vramplan calibrate` first"),
    (("calibrate", "--report", "--db", "{root}/new.db", "--html", "{nowhere}/p.html"), 1, "Error: --html {nowhere}/p.html: the folder {nowhere} does not exist"),
    (("calibrate", "--html", "x.html"), 1, "Error: --html goes with --report (the page shows the store's runs)"),
    (("calibrate", "--trace"), 1, "Error: --trace needs --model (e.g. --model 8b)"),
    (("calibrate", "--trace", "--model", "nope"), 1, "Error: unknown model 'nope'"),
    (("calibrate", "--trace", "--model", "{bert}"), 1, "Error: {bert}/config.json: model_type 'bert' (BertForMaskedLM) " + ENCODER),
    (("calibrate", "--trace", "--model", "8b", "--seq-len", "0"), 1, "Error: --seq-len must be a whole number greater than 0, got 0"),
    (("calibrate", "--trace", "--model", "llama-3-8b", "--seq-len", "1000000000"), 1, "Error: --seq-len 1000000000 " + WINDOW_8B),
    (("calibrate", "--trace", "--model", "8b", "--rank", "100000"), 1, "Error: --rank 100000 " + WIDTH_8B),
    (("calibrate", "--trace", "--model", "8b", "--method", "foo"), 2, "Error: Invalid value for '--method': 'foo' is not one of"),
    (("calibrate", "--device", "cpu", "--db", "{db_garbage}"), 1, "Error: {db_garbage} is not a readable vramplan store"),
    (("calibrate", "--device", "cpu", "--db", "{db_newer}"), 1, "Error: " + NEWER),
    (("calibrate", "--device", "cpu", "--db", "{db_foreign}"), 1, "Error: " + FOREIGN),
    (("calibrate", "--device", "cpu", "--db", "{db_dir}"), 2, "Error: Invalid value for '--db': File '{db_dir}' is a directory."),
    (("calibrate", "--device", "cpu", "--db", "/dev/null"), 1, "Error: --db /dev/null is not a regular file"),
    # ---------------------------------------------------------------- report
    (("report", "--model", "8b", "--gpu", "nope", "--out", "{root}/r.html"), 1, "Error: unknown GPU 'nope'"),
    (("report", "--model", "8b", "--gpu", "", "--out", "{root}/r.html"), 1, "Error: --gpu is empty; give a GPU key such as --gpu t4"),
    (("report", "--model", "nope", "--gpu", "t4", "--out", "{root}/r.html"), 1, "Error: unknown model 'nope'"),
    (("report", "--model", "{bert}", "--gpu", "t4", "--out", "{root}/r.html"), 1, "Error: {bert}/config.json: model_type 'bert' (BertForMaskedLM) " + ENCODER),
    (("report", "--model", "8b", "--gpu", "t4"), 2, "Error: Missing option '--out' / '-o'."),
    (("report", "--model", "8b", "--gpu", "t4", "--out", "{nowhere}/r.html"), 1, "Error: --out {nowhere}/r.html: the folder {nowhere} does not exist"),
    (("report", "--model", "8b", "--gpu", "t4", "--out", "{empty_dir}"), 1, "Error: --out {empty_dir} is a directory; give a file name such as {empty_dir}/report.html"),
    ((*REP, "--run", "{nowhere}"), 1, "Error: --run {nowhere}: no such directory; give the --out directory of a `vramplan run`"),
    ((*REP, "--run", "{run_nomarker}"), 1, "Error: --run {run_nomarker}: no vramplan-run.json here; give the --out directory of a `vramplan run`"),
    ((*REP, "--run", "{run_badmarker}"), 1, "Error: {run_badmarker}/vramplan-run.json is not readable"),
    ((*REP, "--db", "{db_garbage}"), 1, "Error: {db_garbage} is not a readable vramplan store"),
    ((*REP, "--db", "{db_newer}"), 1, "Error: " + NEWER),
    ((*REP, "--db", "{root}/none.db"), 1, "Error: --db {root}/none.db: no such measurement store"),
    ((*REP, "--seq-len", "100000"), 1, "Error: --seq-len 100000 " + WINDOW_8B),
    ((*REP, "--rank", "100000"), 1, "Error: --rank 100000 " + WIDTH_8B),
    ((*REP, "--method", "foo"), 1, "Error: --method 'foo' is not one of"),
    # ---------------------------------------------------------------- the rest
    (("models", "extra"), 2, "Error: Got unexpected extra argument (extra)"),
    (("gpus", "--foo"), 2, "Error: No such option '--foo'."),
    (("nope",), 2, "Error: No such command 'nope'."),
    (("estimate", "--model"), 2, "Error: Option '--model' requires an argument."),
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A config-only tiny llama with a tokenizer (context window 256): what `run` accepts as a model."""
    from tests.test_trainer import make_tokenizer, tiny_llama_config

    path = tmp_path_factory.mktemp("bad-input") / "tok"
    tokenizer = make_tokenizer()
    tiny_llama_config(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _invoke(args, tmp_path, tok):
    files = {**make_files(tmp_path), "tok": tok}
    args = [arg.format(**files) for arg in args]
    if args[0] == "run":  # a run always gets its own out dir and store, to check nothing is left behind
        args += [] if "--out" in args else ["--out", str(tmp_path / "out")]
        args += [] if "--db" in args else ["--db", str(tmp_path / "runs.db")]
    return CliRunner().invoke(cli, args), files


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 150


@pytest.mark.parametrize("args, code, expected", CASES, ids=[" ".join(a)[:80] for a, _, _ in CASES])
def test_bad_input(args, code, expected, tmp_path, tok):
    result, files = _invoke(args, tmp_path, tok)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "a vramplan bug" not in result.output, result.output
    assert result.exit_code == code, result.output
    expected = expected.format(**files)
    if code == 0:  # a note, maybe wrapped by rich: compared with the whitespace folded
        assert " ".join(expected.split()) in " ".join(result.output.split()), result.output
    else:
        errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
        assert errors and errors[-1].startswith(expected), result.output
    if args[0] == "run":
        assert not (tmp_path / "out").exists() and not (tmp_path / "runs.db").exists()


JSON_CASES = [
    (("estimate", "--model", "8b", "--rank", "0", "--json"), 1, "--rank must be a whole number greater than 0, got 0", None),
    (("estimate", "--model", "llama-3-8b", "--seq-len", "100000", "--json"), 1, "--seq-len 100000 is beyond", "use --seq-len 8192 or less, or pass --allow-long-context to plan it anyway"),
    (("estimate", "--json", "--model", "nope"), 1, "unknown model 'nope'", "run `vramplan models` for the catalog, or pass a local config.json or model directory"),
    (("estimate", "--model", "8b", "--json", "--optimizer", "foo"), 2, "Invalid value for '--optimizer'", "run the command with --help to see its options"),
    (("estimate", "--model", "8b", "--gpu", "t4", "--db", "{db_garbage}", "--json"), 1, "{db_garbage} is not a readable vramplan store", "move it aside or pass another --db path"),
    (("recommend", "--model", "8b", "--gpu", "t4", "--seq-len", "0", "--json"), 1, "--seq-len must be greater than 0, got 0", None),
    (("recommend", "--model", "8b", "--gpu", "t4", "--dataset", "{binary}", "--json"), 1, "{binary}:2: not UTF-8 text", None),
    (("recommend", "--model", "8b", "--gpu", "t4", "--out", "{nowhere}/p.yaml", "--json"), 1, "--out {nowhere}/p.yaml: the folder {nowhere} does not exist", None),
    (("calibrate", "--report", "--db", "{db_newer}", "--json"), 1, "{db_newer} has schema v99", "upgrade vramplan"),
    (("calibrate", "--trace", "--model", "{bert}", "--json"), 1, "{bert}/config.json: model_type 'bert'", "pass such a model"),
    (("models", "--json", "extra"), 2, "Got unexpected extra argument (extra)", "run the command with --help to see its options"),
]


@pytest.mark.parametrize("args, code, error, hint", JSON_CASES, ids=[" ".join(a)[:80] for a, _, _, _ in JSON_CASES])
def test_json_errors(args, code, error, hint, tmp_path, tok):
    files = {**make_files(tmp_path), "tok": tok}
    result = CliRunner().invoke(cli, [arg.format(**files) for arg in args])
    assert result.exit_code == code
    document = json.loads(result.stdout)  # stdout is exactly one JSON object
    assert document["error"].startswith(error.format(**files))
    assert document["hint"] == (hint.format(**files) if hint else None)
    assert (document["exit_code"], document["kind"]) == (code, {1: "input", 2: "usage"}[code])
    assert "Error:" not in result.stdout


def test_the_exit_codes_are_documented():
    from pathlib import Path

    from vramplan.errors_json import EXIT_CODES, KINDS

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for code in EXIT_CODES:
        row = f"| {code} | `{KINDS[code]}` |" if code else "| 0 | | success |"
        assert row in readme, code
