"""Small configs of real architectures for measured runs on CPU: seconds per run, same code paths."""

from __future__ import annotations

PROBE_MODELS: dict[str, dict] = {
    "probe-llama": {  # Llama layout with grouped-query attention
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
        "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 4096,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu",
    },
    "probe-qwen3": {  # q/k norms, tied embeddings, explicit head_dim
        "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 4096,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "hidden_act": "silu",
    },
    "probe-qwen2": {  # bias on q, k, v
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4096,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hidden_act": "silu",
    },
}
