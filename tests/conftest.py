"""Shared fixtures: tiny local configs, never the network."""

import json

import pytest

TINY_LLAMA = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 160,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 512,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "hidden_act": "silu",
}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices gain nothing from more threads, and lose a lot when the cores are shared.

    Opt in per module: `pytestmark = pytest.mark.usefixtures("one_thread")`.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def oom_above_batch(monkeypatch):
    """`oom_above_batch(n)`: every trainer step (text or VLM session) of a micro-batch above n raises
    CUDA's out-of-memory error, as a GPU too small for it would."""

    def patch(limit: int) -> None:
        import torch

        from vramplan.calibrate.trainer.loop import _Session

        real_step = _Session._step

        def step(self, model, optimizer, scheduler, scaler, batches, run, accum, meter):
            if run.batch > limit:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real_step(self, model, optimizer, scheduler, scaler, batches, run, accum, meter)

        monkeypatch.setattr(_Session, "_step", step)

    return patch


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Tests never touch the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def tiny_config_dir(tmp_path):
    path = tmp_path / "tiny-llama"
    path.mkdir()
    (path / "config.json").write_text(json.dumps(TINY_LLAMA))
    return path
