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
    # --- one probe per remaining catalog family (issue 13), shaped like its real config.json ---
    "probe-gemma2": {  # tied embeddings, tanh-capped logits and scores, sliding window below the seq length
        "model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"],
        "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 8192,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
        "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 64, "sliding_window": 128,
        "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
    },
    "probe-phi3": {  # fused qkv_proj and gate_up_proj, multi-head attention (Phi-3-mini)
        "model_type": "phi3", "architectures": ["Phi3ForCausalLM"],
        "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 3,
        "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 4096,
        "max_position_embeddings": 4096, "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False, "hidden_act": "silu", "sliding_window": None,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,  # Phi3Config's 32000 default is past this vocab
    },
    "probe-mistral": {  # Llama layout, sliding-window attention below the seq length
        "model_type": "mistral", "architectures": ["MistralForCausalLM"],
        "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 3,
        "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 4096,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
        "hidden_act": "silu", "sliding_window": 128,
    },
    "probe-llama2": {  # Llama-2: multi-head attention (kv heads = heads), 32k-style small vocab
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 3,
        "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 4096,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu",
    },
    "probe-gemma": {  # Gemma 1: GeGLU, tied embeddings, one kv head (gemma-2b), fp32 (1 + w) norm scale, no soft-caps
        "model_type": "gemma", "architectures": ["GemmaForCausalLM"],
        "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 64, "vocab_size": 8192,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
        "hidden_act": "gelu_pytorch_tanh",
    },
    "probe-gemma3": {  # Gemma 3 text: q/k norms, 4 norms per layer, tied; windowed layers 0-4, global layer 5
        "model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"],
        "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 6,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 64, "vocab_size": 8192,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
        "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 64,
        "sliding_window": 128, "sliding_window_pattern": 6, "rope_theta": 1000000, "rope_local_base_freq": 10000,
        "final_logit_softcapping": None, "attn_logit_softcapping": None,
    },
    # --- mixture of experts (issue 13): fused experts and a top-k router; a small vocab so the layers weigh ---
    "probe-deepseek-v2": {  # MLA (V2-Lite's layout: q_proj, a kv latent of 64, q/k heads of 48 + 16, v of 48), layer 0 dense, 2 shared experts
        "model_type": "deepseek_v2", "architectures": ["DeepseekV2ForCausalLM"],
        "hidden_size": 256, "intermediate_size": 512, "moe_intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 1024,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hidden_act": "silu",
        "n_routed_experts": 8, "num_experts_per_tok": 2, "n_shared_experts": 2, "first_k_dense_replace": 1,
        "kv_lora_rank": 64, "q_lora_rank": None, "qk_nope_head_dim": 48, "qk_rope_head_dim": 16, "v_head_dim": 48,
        "routed_scaling_factor": 1.0, "topk_method": "greedy", "n_group": 1, "topk_group": 1, "norm_topk_prob": False,
        "pad_token_id": None, "eos_token_id": 2, "bos_token_id": 1,
    },
    "probe-olmoe": {  # 8 experts, 2 per token; q/k norms over the full q and kv widths
        "model_type": "olmoe", "architectures": ["OlmoeForCausalLM"],
        "hidden_size": 256, "intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu",
        "num_experts": 8, "num_experts_per_tok": 2, "pad_token_id": 1, "eos_token_id": 0, "bos_token_id": None,
    },
    "probe-qwen3-moe": {  # 8 experts of moe_intermediate_size, 2 per token, normalized top-k; per-head q/k norms
        "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"],
        "hidden_size": 256, "intermediate_size": 768, "moe_intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 1024,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "hidden_act": "silu",
        "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": True, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "pad_token_id": 1, "eos_token_id": 0, "bos_token_id": None,
    },
    "probe-mixtral": {  # 8 experts, 2 per token; fp32 routing weights (the router softmax is not cast back)
        "model_type": "mixtral", "architectures": ["MixtralForCausalLM"],
        "hidden_size": 256, "intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "hidden_act": "silu",
        "num_local_experts": 8, "num_experts_per_tok": 2, "sliding_window": None, "router_jitter_noise": 0.0,
        "pad_token_id": None, "eos_token_id": 2, "bos_token_id": 1,
    },
    "probe-gpt-oss": {  # 8 experts, 2 per token, biases everywhere, sinks, sliding (128) / full layers, eager only
        "model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"],
        "hidden_size": 256, "intermediate_size": 128, "num_hidden_layers": 3,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 1024,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "attention_bias": True,
        "num_local_experts": 8, "num_experts_per_tok": 2, "sliding_window": 128, "swiglu_limit": 7.0,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        "pad_token_id": 1, "eos_token_id": 0, "bos_token_id": None,
    },
}
# the router load-balancing loss switched on (config.json's output_router_logits), as people train MoEs
PROBE_MODELS["probe-mixtral-aux"] = {**PROBE_MODELS["probe-mixtral"], "output_router_logits": True, "router_aux_loss_coef": 0.02}
MOE_PROBES = ("probe-olmoe", "probe-qwen3-moe", "probe-mixtral", "probe-gpt-oss", "probe-deepseek-v2")  # measured by matrix._cpu_moe
FAMILY_PROBES = ("probe-gemma2", "probe-phi3", "probe-mistral", "probe-llama2", "probe-gemma", "probe-gemma3")  # measured by matrix._cpu_families
