"""Image-text JSONL: the three record shapes, what the loss sees, and every bad record as file:line."""

import json
import subprocess
import sys

import pytest
import torch

from vramplan.calibrate.trainer.data import IGNORE, DataError
from vramplan.calibrate.trainer.vlm_data import collate, encode, load_vlm_dataset
from vramplan.calibrate.vlm_model_dir import caption_rows, make_processor, make_tokenizer, tiny_config
from vramplan.planner.vision.image_text_file import read_image_text_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def processors():
    tokenizer = make_tokenizer()
    return {family: make_processor(family, tiny_config(family, tokenizer), tokenizer) for family in ("llava", "qwen2_vl")}


@pytest.fixture()
def images(tmp_path):
    caption_rows(3, tmp_path / "img", size=(112, 84))
    return sorted(p.name for p in (tmp_path / "img").iterdir())


def write(path, rows):
    path.write_text("".join(row if isinstance(row, str) else json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def three_shapes(names):
    return [
        {"image": f"img/{names[0]}", "caption": "a picture of red"},
        {"image": f"img/{names[1]}", "conversations": [{"from": "human", "value": "<image>\nwhat is the color"},
                                                       {"from": "gpt", "value": "the color is green"}]},
        {"images": [f"img/{names[2]}"], "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe this"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "it shows blue"}]}]},
    ]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_every_shape_trains_only_the_answer(processors, images, tmp_path, family):
    processor = processors[family]
    data = write(tmp_path / "d.jsonl", three_shapes(images))
    records, problems, rows = read_image_text_file(data)
    assert (problems, rows, [r.format for r in records]) == ([], 3, ["caption", "llava", "chat"])
    assert all(r.sizes == ((112, 84),) for r in records)
    tok = processor.tokenizer
    for record, answer in zip(records, ("a picture of red", "the color is green", "it shows blue")):
        ids, labels, extras, _ = encode(record, processor, family)
        trained = [t for t in labels if t != IGNORE]
        assert tok.decode(trained[:-1]).split() == answer.split() and trained[-1] == tok.eos_token_id  # the answer (and its turn end), the EOS
        image_id = processor.image_token_id if family == "qwen2_vl" else tok.convert_tokens_to_ids("<image>")
        assert ids.count(image_id) > 0 and all(label == IGNORE for t, label in zip(ids, labels) if t == image_id)
        if family == "qwen2_vl":
            assert extras["mm_token_type_ids"] == [int(t == image_id) for t in ids]


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_collate_pads_masks_and_adds_the_pixels(processors, images, tmp_path, family):
    processor = processors[family]
    ds = load_vlm_dataset(write(tmp_path / "d.jsonl", three_shapes(images)), processor, family, seq_len=400, eval_fraction=0)
    batch = collate(ds.train[:2], processor, pad_id=processor.tokenizer.pad_token_id, width=300)
    assert batch["input_ids"].shape == (2, 300)
    padding = batch["attention_mask"] == 0
    assert padding.any() and (batch["labels"][padding] == IGNORE).all()
    if family == "qwen2_vl":  # one row of 14x14 patches per 4 patches' image token (2x2 merge)
        tokens = int((batch["input_ids"] == processor.image_token_id).sum())
        assert batch["pixel_values"].shape[0] == 4 * tokens and batch["image_grid_thw"].shape == (2, 3)
    else:
        assert batch["pixel_values"].shape == (2, 3, 224, 224)


BAD = [
    ("malformed JSON", '{"image": "img/x.png", "caption": \n', "malformed JSON"),
    ("unknown format", {"picture": "img/{0}", "text": "red"}, "unknown format"),
    ("missing image", {"image": "img/nope.png", "caption": "red"}, "missing image"),
    ("unreadable image", {"image": "img/broken.png", "caption": "red"}, "unreadable image"),
    ("LLaVA placeholders", {"image": "img/{0}", "conversations": [{"from": "human", "value": "<image> <image> hi"}, {"from": "gpt", "value": "red"}]},
     "wrong placeholder count: 2 <image> placeholders for 1 image(s)"),
    ("chat placeholders", {"images": ["img/{0}", "img/{1}"], "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]},
                                                                          {"role": "assistant", "content": "red"}]},
     "wrong placeholder count: 1 {'type': 'image'} parts for 2 image(s)"),
]


def _bad_row(row, names):
    return row if isinstance(row, str) else json.loads(json.dumps(row).replace("{0}", names[0]).replace("{1}", names[1]))


@pytest.mark.parametrize("kind,row,message", BAD, ids=[b[0] for b in BAD])
def test_each_bad_record_kind_is_one_file_line_error(processors, images, tmp_path, kind, row, message):
    (tmp_path / "img" / "broken.png").write_bytes(b"not a png at all")
    data = write(tmp_path / "d.jsonl", [three_shapes(images)[0], _bad_row(row, images)])
    with pytest.raises(DataError) as exc:
        load_vlm_dataset(data, processors["llava"], "llava", seq_len=400)
    lines = str(exc.value).splitlines()
    assert lines[0].startswith(f"{data}:2: {message}")
    assert lines[-1].startswith(f"1 bad record(s) in {data}")


def test_all_bad_lines_are_listed_and_can_be_skipped(processors, images, tmp_path):
    good = three_shapes(images)
    rows = [good[0], "not json\n", good[1], {"image": "img/gone.png", "caption": "red"}, good[2]]
    data = write(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as exc:
        load_vlm_dataset(data, processors["qwen2_vl"], "qwen2_vl", seq_len=400)
    assert [line.split(": ")[0] for line in str(exc.value).splitlines()[:2]] == [f"{data}:2", f"{data}:4"]
    ds = load_vlm_dataset(data, processors["qwen2_vl"], "qwen2_vl", seq_len=400, skip_bad_rows=True, eval_fraction=0)
    assert (len(ds.train), ds.skipped) == (3, 2)


def test_images_beyond_seq_len_drop_the_record(processors, images, tmp_path):
    data = write(tmp_path / "d.jsonl", three_shapes(images))
    with pytest.raises(DataError, match="no usable records out of 3"):
        load_vlm_dataset(data, processors["llava"], "llava", seq_len=100)  # 256 image tokens each


def test_the_record_reader_imports_no_torch():
    code = "import sys, vramplan.planner.vision.image_text_file; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_pixels_are_the_processors_own(processors, images, tmp_path):
    """The batch's pixels are what the processor makes of the same image, in record order."""
    from PIL import Image

    processor = processors["qwen2_vl"]
    ds = load_vlm_dataset(write(tmp_path / "d.jsonl", three_shapes(images)[:1]), processor, "qwen2_vl", seq_len=400, eval_fraction=0)
    batch = collate(ds.train, processor, processor.tokenizer.pad_token_id)
    own = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[Image.open(tmp_path / "img" / images[0]).convert("RGB")], return_tensors="pt")
    assert torch.equal(batch["pixel_values"], own["pixel_values"])


def test_estimate_dataset_plans_the_largest_example(images, tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from vramplan.cli import cli

    Image.new("RGB", (448, 336), (1, 2, 3)).save(tmp_path / "img" / "big.png")
    rows = three_shapes(images) + [{"image": "img/big.png", "caption": "a plain black image"}]
    data = write(tmp_path / "d.jsonl", rows)
    result = CliRunner().invoke(cli, ["estimate", "--model", "qwen2-vl-7b", "--gpu", "t4", "--method", "qlora", "--dataset", str(data), "--json"])
    assert result.exit_code == 0, result.output
    # Qwen2-VL: 112x84 -> 112x84 (4x3 tokens + 2 specials), 448x336 -> 16x12 + 2; the median of [14, 14, 14, 194] is 14
    assert f"--dataset {data}: 4 examples, image tokens per example median 14, p99 194, max 194; planned with the largest (line 4: 448x336)" in result.output
    bad = CliRunner().invoke(cli, ["estimate", "--model", "qwen2-vl-7b", "--dataset", str(data), "--image-size", "448x448"])
    assert bad.exit_code != 0 and "Error: give either --dataset or --image-size/--images" in bad.output
    text = CliRunner().invoke(cli, ["estimate", "--model", "llama-3-8b", "--dataset", str(data)])
    assert text.exit_code != 0 and "Error: --dataset on estimate measures a VLM's images" in text.output


def test_a_chat_template_that_fails_is_a_file_line_error(images, tmp_path):
    tokenizer = make_tokenizer()
    tokenizer.chat_template = "{{ raise_exception('this template takes no assistant turns') }}"
    processor = make_processor("llava", tiny_config("llava", tokenizer), tokenizer)
    data = write(tmp_path / "d.jsonl", three_shapes(images))
    with pytest.raises(DataError) as exc:
        load_vlm_dataset(data, processor, "llava", seq_len=400)
    assert str(exc.value).startswith(f"{data}:2: the tokenizer's chat template failed on this row")


def test_chat_template_renders_the_turns(images, tmp_path):
    tokenizer = make_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }} \n {{ m['content'] }} \n {% endfor %}{% if add_generation_prompt %}assistant \n {% endif %}"
    processor = make_processor("qwen2_vl", tiny_config("qwen2_vl", tokenizer), tokenizer)
    ds = load_vlm_dataset(write(tmp_path / "d.jsonl", three_shapes(images)[1:2]), processor, "qwen2_vl", seq_len=400, eval_fraction=0)
    assert ds.chat_template
    example = ds.train[0]
    trained = [t for t in example.labels if t != IGNORE]
    assert tokenizer.decode(trained).split() == "the color is green \n".split()
    assert processor.image_token_id in example.input_ids
