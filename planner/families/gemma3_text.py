"""Gemma 3, text only (`Gemma3ForCausalLM`): Gemma-2's four norms per layer and tied 262k
embeddings, plus per-head q/k RMSNorms; no soft-caps, so SDPA runs; a sliding window on five
layers of every six (`layer_types`), global attention on the sixth (transformers 5 `modeling_gemma3.py`)."""

from .base import Family
from .layouts import gated_mlp, separate_attention

GEMMA3_TEXT = Family(
    model_type="gemma3_text",
    title="Gemma 3",
    projections=separate_attention(qkv_bias="attention_bias", o_bias="attention_bias") + gated_mlp(),
    norms_per_layer=4,  # input, post-attention, pre- and post-feedforward layernorms
    qk_norm=True,  # q_norm and k_norm over head_dim, like Qwen3's
    attention="causal-gqa, sliding window on 5 of 6 layers",
    sliding_window_key="sliding_window",
    norm_scale_fp32=True,  # Gemma3RMSNorm: (x̂ * (1 + w.float())).type_as(x)
    defaults=(("num_key_value_heads", 4), ("head_dim", 256), ("tie_word_embeddings", True), ("sliding_window", 4096)),
)
