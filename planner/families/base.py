"""The record of a model family: what one transformers `model_type` puts in a decoder layer.

A `Family` says which Linear modules a decoder layer has and how their shapes follow from
config.json, which `--targets` group each belongs to and which tensor it reads, where the
torch model keeps them (`model.layers.N.self_attn.q_proj`), their biases, the norms per layer
and the logits quirks. The planner builds a `ModelSpec` from it (`planner.architectures`) and
the calibration model builder reads module names and groups from it
(`calibrate.model_build`), so the two cannot disagree. Records hold data only: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

LINEAR_GROUPS = ("attention", "mlp")  # what the --targets presets `attention` / `mlp` select
# Linears that read the same tensor share one saved input (planner.activations):
# q/k/v read the normed stream, o the attention output, gate/up the normed stream, down act(gate)*up
INPUT_GROUPS = ("attention_in", "attn_out", "mlp_in", "mlp_prod", "kv_latent")  # kv_latent: MLA's normed kv latent (kv_b_proj)
# config-derived widths a projection's in/out features are sums of
DIMS = ("hidden", "intermediate", "q", "kv")  # q = heads * head_dim, kv = kv_heads * head_dim
# multi-head latent attention (DeepSeek-V2, planner/mla.py): kv_a = kv_lora_rank + rope dim, kv_latent = kv_lora_rank,
# kv_b = heads * (nope + v dims), attn_v = heads * v dim
DIMS += ("kv_a", "kv_latent", "kv_b", "attn_v")


@dataclass(frozen=True)
class Projection:
    """One Linear of a decoder layer, as its family lays it out.

    `fan_in`/`fan_out` name the widths (`DIMS`) whose sum is in_features/out_features: a fused
    `qkv_proj` has fan_out ("q", "kv", "kv"). `bias` is fixed (True/False) or the config key that
    switches it, read with the family's defaults.
    """

    name: str  # the module's attribute name: what PEFT's target_modules matches
    group: str  # one of LINEAR_GROUPS
    reads: str  # one of INPUT_GROUPS
    fan_in: tuple[str, ...]
    fan_out: tuple[str, ...]
    bias: bool | str = False
    short: str = ""  # --targets short form; "" means the name without "_proj" ("q" for "q_proj")

    def __post_init__(self) -> None:
        problems = []
        if self.group not in LINEAR_GROUPS:
            problems.append(f"group {self.group!r} is not one of {', '.join(LINEAR_GROUPS)}")
        if self.reads not in INPUT_GROUPS:
            problems.append(f"reads {self.reads!r} is not one of {', '.join(INPUT_GROUPS)}")
        for dim in (*self.fan_in, *self.fan_out):
            if dim not in DIMS:
                problems.append(f"width {dim!r} is not one of {', '.join(DIMS)}")
        if not self.fan_in or not self.fan_out:
            problems.append("fan_in and fan_out need at least one width each")
        if problems:
            raise ValueError(f"projection {self.name!r}: " + "; ".join(problems))
        if not self.short:
            object.__setattr__(self, "short", self.name.removesuffix("_proj"))

    def features(self, dims: dict[str, int]) -> tuple[int, int]:
        """(in_features, out_features) for the widths of one config."""
        return sum(dims[d] for d in self.fan_in), sum(dims[d] for d in self.fan_out)


@dataclass(frozen=True)
class MoeLayout:
    """A sparse MLP: a router and fused experts in place of the dense MLP (transformers 5.x).

    transformers 5 keeps all experts of a layer as two 3-D parameters, `mlp.experts.gate_up_proj`
    (E, 2I, H) and `mlp.experts.down_proj` (E, H, I), and the router `mlp.gate` as a TopKRouter
    with a `.weight` (E, H): none of them an nn.Linear (OLMoE, Qwen3-MoE, Mixtral).
    """

    experts_key: str  # config key of the expert count E
    top_k_key: str = "num_experts_per_tok"  # config key of k, the experts each token is routed to
    intermediate_key: str = "intermediate_size"  # config key of one expert's MLP width I
    router: str = "gate"  # the router's attribute name in the MLP module
    # the top-k routing weights stay fp32 and are renormalized in place (Mixtral's router never casts
    # them back), so the expert outputs they scale are promoted to fp32 before the per-token sum
    fp32_routing_weights: bool = False
    # DeepSeek-V2: the router runs on an fp32 copy of its input (its weight is fp32) and its fp32 top-k
    # weights are scaled, not renormalized; config keys of the shared experts (a dense MLP of n x I
    # beside the routed ones, `mlp.shared_experts`) and of the leading dense layers (a dense MLP instead)
    router_fp32: bool = False
    shared_experts_key: str = ""
    dense_layers_key: str = ""
    # gpt-oss (transformers 5 `modeling_gpt_oss.py`): the router and every expert carry a bias
    # (router (E), gate_up (E, 2I), down (E, H)); the experts are stored transposed, (E, H, 2I)
    biases: bool = False
    # peft's all-linear reaches the router and experts only where it converts a transformers-4 layout
    # (separate Linears per expert); gpt-oss was fused already, so its all-linear is the attention only
    all_linear: bool = True
    # gate and up were two Linears of rank r each in transformers 4, so peft gives the fused gate_up
    # rank 2r; gpt-oss's gate_up_proj was always one tensor and gets rank r
    gate_up_rank_doubled: bool = True
    # gpt-oss: softmax over the top-k logits only (16-bit, not fp32 over all E) and a clamped SwiGLU,
    # (up + 1) * gate * sigmoid(alpha * gate), whose clamps and products save more (planner/moe.py)
    clamped_swiglu: bool = False


@dataclass(frozen=True)
class Family:
    """Everything the planner and the model builder need to know about one `model_type`."""

    model_type: str  # the registry key: config.json's "model_type"
    title: str  # for people: "Llama", "Qwen2"
    projections: tuple[Projection, ...]  # in data-flow order (q, k, v, o, gate, up, down): how targets are listed
    attention_module: str = "self_attn"  # parent module of the attention projections in a layer
    mlp_module: str = "mlp"  # parent module of the MLP projections
    layers_module: str = "model.layers"  # the ModuleList of decoder layers in the CausalLM
    norms_per_layer: int = 2  # RMSNorms (hidden-sized weight) on the residual stream per layer
    qk_norm: bool = False  # RMSNorm over head_dim on q and k (Qwen3)
    qk_norm_full: bool = False  # the q/k norms span the whole q and kv widths, not one head (OLMoE)
    moe: MoeLayout | None = None  # a router and fused experts instead of the dense MLP
    mla: bool = False  # multi-head latent attention (DeepSeek-V2): q/k/v widths from the MLA keys (planner/mla.py)
    gated_mlp: bool = True  # down(act(gate(x)) * up(x))
    attention: str = "causal-gqa"  # causal self-attention, grouped-query (MHA when kv heads == heads), rotary
    logit_softcap_key: str = ""  # config key whose value tanh-caps the final logits (Gemma-2)
    # config key of a sliding attention window on every layer (Mistral, Phi-3): once seq_len reaches
    # it transformers passes SDPA an explicit mask, so k/v are expanded to all heads (measured, issue 13)
    sliding_window_key: str = ""
    sdpa: bool = True  # transformers has an SDPA path; False: `--attention sdpa` runs eager (Gemma-2)
    norm_scale_fp32: bool = False  # RMSNorm scales by its weight in fp32 (Gemma: x̂ * (1 + w), then cast)
    attn_softcap_key: str = ""  # config key whose value tanh-caps the attention scores (Gemma-2)
    # gpt-oss: a learned logit per head ("sink") joins every softmax row: one parameter per head per
    # layer, and the eager scores are softmaxed in the stream's dtype over seq + 1 columns
    attention_sinks: bool = False
    # transformers' config-class defaults of the optional keys the planner reads, where they are
    # not the generic ones (kv heads = heads, head_dim = hidden / heads, untied, no bias)
    defaults: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        names = [p.name for p in self.projections]
        problems = []
        if not names and self.moe is None:
            problems.append("no projections")
        if len(set(names)) != len(names):
            problems.append(f"duplicate projection names in {names}")
        shorts = [p.short for p in self.projections]
        if len(set(shorts)) != len(shorts):
            problems.append(f"duplicate short names in {shorts}")
        if self.norms_per_layer < 0:
            problems.append(f"norms_per_layer {self.norms_per_layer} < 0")
        if problems:
            raise ValueError(f"family {self.model_type!r}: " + "; ".join(problems))

    def option(self, config: dict, key: str, fallback: object = None) -> object:
        """config[key] if config.json sets it, else the family's default, else `fallback`."""
        if key in config:
            return config[key]
        return dict(self.defaults).get(key, fallback)

    def has_bias(self, projection: Projection, config: dict) -> bool:
        if isinstance(projection.bias, str):
            return bool(self.option(config, projection.bias, False))
        return projection.bias

    def parent(self, projection: Projection) -> str:
        """The layer's submodule that holds this projection ("self_attn" or "mlp")."""
        return self.attention_module if projection.group == "attention" else self.mlp_module

    def module_path(self, layer: int, projection: Projection) -> str:
        """Full module name in the CausalLM: `model.layers.3.self_attn.q_proj`."""
        return f"{self.layers_module}.{layer}.{self.parent(projection)}.{projection.name}"

    @cached_property
    def fused_qkv(self) -> bool:
        """q, k and v come out of one Linear, as views of its output (Phi-3's qkv_proj)."""
        return any(p.fan_out == ("q", "kv", "kv") for p in self.projections)

    @cached_property
    def short_names(self) -> dict[str, str]:
        """--targets short forms -> module names (`q` -> `q_proj`, `qkv` -> `qkv_proj`)."""
        return {p.short: p.name for p in self.projections}

    @cached_property
    def groups(self) -> dict[str, str]:
        """Module name -> its group, in layer order."""
        return {p.name: p.group for p in self.projections}
