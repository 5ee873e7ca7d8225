"""gpt-oss (transformers 5 `modeling_gpt_oss.py`): Llama-style attention with biases and a learned
sink logit per head, sliding-window (128) and full attention on alternate layers (`layer_types`),
eager attention only (`_supports_sdpa = False`), and a sparse MLP: a router with a bias picks the
top-k of E experts and softmaxes those k logits; the experts are fused 3-D parameters with biases,
gate_up_proj interleaving gate and up columns, under a clamped SwiGLU (alpha 1.702, limit 7).

The hub checkpoints ship the experts MXFP4-quantized; fine-tuning dequantizes them to bf16 on load
(`Mxfp4Config(dequantize=True)`), which is what the planner counts: 16-bit experts, or the same
experts beside an NF4 attention for QLoRA (bitsandbytes quantizes nn.Linear only).
"""

from .base import Family, MoeLayout
from .layouts import separate_attention

GPT_OSS = Family(
    model_type="gpt_oss",
    title="gpt-oss",
    projections=separate_attention(qkv_bias="attention_bias", o_bias="attention_bias"),
    moe=MoeLayout(
        experts_key="num_local_experts",
        router="router",
        biases=True,
        all_linear=False,
        gate_up_rank_doubled=False,
        clamped_swiglu=True,
    ),
    attention="causal-gqa with per-head sinks, sliding window (128) on alternate layers",
    attention_sinks=True,
    sdpa=False,  # GptOssForCausalLM refuses SDPA: `--attention sdpa` runs eager
    norm_scale_fp32=True,  # GptOssRMSNorm: (w * x̂_fp32).to(dtype), so a trainable weight keeps the fp32 x̂
    defaults=(
        ("num_key_value_heads", 8),
        ("head_dim", 64),
        ("attention_bias", True),
        ("num_local_experts", 128),
        ("num_experts_per_tok", 4),
        ("sliding_window", 128),
        ("tie_word_embeddings", False),
    ),
)
