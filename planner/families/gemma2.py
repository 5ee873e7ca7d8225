"""Gemma-2: norms before and after both blocks, tanh-capped logits, tied embeddings by default."""

from .base import Family
from .layouts import gated_mlp, separate_attention

GEMMA2 = Family(
    model_type="gemma2",
    title="Gemma-2",
    projections=separate_attention(qkv_bias="attention_bias", o_bias="attention_bias") + gated_mlp(),
    norms_per_layer=4,  # input, post-attention, pre- and post-feedforward layernorms
    attention="causal-gqa, sliding window on alternate layers, tanh-capped scores",
    logit_softcap_key="final_logit_softcapping",  # logits = cap * tanh(logits / cap)
    attn_softcap_key="attn_logit_softcapping",  # scores = cap * tanh(scores / cap), eager only
    norm_scale_fp32=True,  # Gemma2RMSNorm: (x̂ * (1 + w.float())).type_as(x)
    sdpa=False,  # transformers refuses SDPA for Gemma2ForCausalLM (soft-capped scores): sdpa runs eager
    defaults=(
        ("num_key_value_heads", 4),
        ("head_dim", 256),
        ("tie_word_embeddings", True),
        ("final_logit_softcapping", 30.0),
        ("attn_logit_softcapping", 50.0),
    ),
)
