"""Layer blocks several families share; a family composes its projections from these."""

from __future__ import annotations

from .base import Projection


def separate_attention(qkv_bias: bool | str = False, o_bias: bool | str = False) -> tuple[Projection, ...]:
    """q_proj, k_proj, v_proj, o_proj: Llama's attention, which most families copy.

    Args:
        qkv_bias: bias on q, k and v: fixed, or the config key that switches it.
        o_bias: bias on o_proj, the same way.
    """
    return (
        Projection("q_proj", "attention", "attention_in", ("hidden",), ("q",), qkv_bias),
        Projection("k_proj", "attention", "attention_in", ("hidden",), ("kv",), qkv_bias),
        Projection("v_proj", "attention", "attention_in", ("hidden",), ("kv",), qkv_bias),
        Projection("o_proj", "attention", "attn_out", ("q",), ("hidden",), o_bias),
    )


def gated_mlp(bias: bool | str = False) -> tuple[Projection, ...]:
    """gate_proj, up_proj, down_proj: down(act(gate(x)) * up(x)), Llama's SwiGLU MLP."""
    return (
        Projection("gate_proj", "mlp", "mlp_in", ("hidden",), ("intermediate",), bias),
        Projection("up_proj", "mlp", "mlp_in", ("hidden",), ("intermediate",), bias),
        Projection("down_proj", "mlp", "mlp_prod", ("intermediate",), ("hidden",), bias),
    )
