"""A VLM's memory, component by component: the text estimate for the decoder (its sequence is
`--seq-len`, image tokens included) composed with the vision tower's and the projector's terms,
for one training stage.

Every term is named by its component: `llm/...` (the decoder's own terms, unchanged),
`vision/...`, `projector/...`; optimizer states cover every component's trainable tensors
at once (`optimizer/...`), and the CUDA overhead follows the combined peak (`overhead/...`).
What the libraries really do, and this counts:

* gradients flow back through the frozen LLM into a trainable projector, so the LLM's
  activations are kept in stage 1 too, and layer 0 keeps all of its (its input needs grad);
* `gradient_checkpointing_enable()` calls `enable_input_require_grads()`, which also hooks the
  frozen vision tower's patch embedding: the tower then saves its (checkpointed) activations;
  without checkpointing a frozen tower saves nothing;
* QLoRA quantizes only the LLM's decoder Linears (`--quantize-vision`: the tower's too) and
  `prepare_model_for_kbit_training` upcasts every other 16-bit weight, vision tower and projector
  included, to fp32, so the tower and projector also compute in fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import cycle, islice

from .activations import first_layer_savings
from .breakdown import BACKWARD, BACKWARD_END, FORWARD, OPTIMIZER, MemoryBreakdown, Term
from .dtypes import DtypePlan, dtype_plan
from .errors import ConfigError
from .estimator import activation_terms, adapter_weight_terms
from .methods import METHODS
from .methods.base import nf4_constants_bytes
from .optimizer import _bnb_state_bytes
from .savers import packed_inputs_bytes
from .overhead import Corrections, overhead_terms
from .specs import GpuSpec, ModelSpec, RunConfig
from .vision import ImageTokens, VlmSpec
from .vision.run import VlmRun

FP32 = 4
FWD_BWD = frozenset({FORWARD, BACKWARD})
GRADS = frozenset({BACKWARD_END, OPTIMIZER})
COMPONENTS = ("vision", "projector", "llm")


@dataclass(frozen=True)
class ImagePlan:
    """The images of one example and what they become."""

    sizes: tuple[tuple[int, int], ...]  # (width, height) per image
    per_image: tuple[ImageTokens, ...]

    @property
    def llm_tokens(self) -> int:
        return sum(t.llm for t in self.per_image)

    @property
    def vit_tokens(self) -> int:
        return sum(t.vit for t in self.per_image)

    @property
    def tiles(self) -> int:
        return sum(t.tiles for t in self.per_image)


def image_plan(spec: VlmSpec, run: RunConfig, vlm: VlmRun) -> ImagePlan:
    """Tokens of each image of one example (`--image-size` cycled over `--images`).

    Raises:
        ConfigError: the images alone do not fit in `--seq-len`.
    """
    sizes = tuple(islice(cycle(vlm.image_sizes or (spec.family.default_image,)), vlm.images))
    per_image = tuple(spec.family.image_tokens(spec, w, h, vlm.max_pixels) for w, h in sizes)
    plan = ImagePlan(sizes, per_image)
    if plan.llm_tokens >= run.seq_len:
        raise ConfigError(
            f"--seq-len {run.seq_len} is the whole sequence the LLM sees, but {vlm.images} image(s) alone take "
            f"{plan.llm_tokens:,} tokens: raise --seq-len, or lower --image-size / --max-pixels / --images"
        )
    return plan


@dataclass(frozen=True)
class VlmEstimate:
    """One stage of a VLM run: the breakdown, the image tokens and the per-component accounts."""

    spec: VlmSpec
    run: RunConfig
    vlm: VlmRun
    gpu: GpuSpec | None
    plan: ImagePlan
    breakdown: MemoryBreakdown
    trainable: dict  # component -> trainable params
    llm_adapted: tuple[str, ...]
    calibration: str

    @property
    def trainable_params(self) -> int:
        return sum(self.trainable.values())

    @property
    def fits(self) -> bool | None:
        return None if self.gpu is None else self.breakdown.device_used_bytes <= self.gpu.total_bytes

    @property
    def headroom_bytes(self) -> int | None:
        return None if self.gpu is None else self.gpu.total_bytes - self.breakdown.device_used_bytes

    def components(self) -> dict:
        """Per component: params, trainable params, and bytes by term (counted in the peak)."""
        at_peak = self.breakdown.at_peak()
        params = {"vision": self.spec.vision.params, "projector": self.spec.projector.params, "llm": self.spec.decoder.base_params}
        out = {}
        for part in COMPONENTS:
            terms = {name: b for name, b in at_peak.items() if name.startswith(part + "/")}
            out[part] = {"params": params[part], "trainable_params": self.trainable[part], "bytes": terms, "total_bytes": sum(terms.values())}
        return out


    def target_components(self) -> dict:
        """Per component: Linears PEFT would wrap given `--targets` as names, and those adapted here."""
        from .vision.target_match import PARTS, adapted_modules, peft_matches

        matched = peft_matches(self.spec, self.run.targets)
        adapted = adapted_modules(self.spec, self.llm_adapted, self.vlm.vision == "lora")
        return {part: {"matched_modules": matched[part], "adapted_modules": adapted[part]} for part in PARTS}


def _prefixed(prefix: str, terms: list[Term]) -> list[Term]:
    return [replace(term, name=f"{prefix}/{term.name}") for term in terms]


def _frozen_key(base) -> str:
    """A registered method with this base, to read the frozen LLM's terms through (no adapter placed)."""
    return next(key for key, method in METHODS.items() if method.base is base)


def _vision_as_model(spec: VlmSpec) -> ModelSpec:
    """The tower seen as a stack of layers, so that adapter kinds can count on it as on a decoder."""
    v = spec.vision
    return ModelSpec(
        name=f"{spec.name} vision", model_type="", hidden_size=v.width, intermediate_size=v.mlp_width,
        num_layers=v.num_layers, num_heads=v.num_heads, num_kv_heads=v.num_heads, head_dim=v.width // v.num_heads,
        vocab_size=1, tie_embeddings=True, linears=v.linears, norm_params_per_layer=v.norm_params_per_layer,
        final_norm_params=0, gated_mlp=v.gated_mlp, source="vision tower",
    )


def _vision_block_saved(spec: VlmSpec, tokens: int, b: int, run: RunConfig, dt: DtypePlan, trainable: str, adapted) -> int:
    """Bytes one ViT block saves for backward over `tokens` patches (activation dtype `b`).

    LayerNorm: its input and fp32 mean/rstd (RMSNorm: input + fp32 rstd); SDPA: q, k, v, output and
    fp32 logsumexp per head; the MLP activation (QuickGELU x*sigmoid(1.702x): input and sigmoid;
    SwiGLU: gate, up, act); a trainable Linear saves its input, LoRA its own copies.
    """
    v = spec.vision
    norm = tokens * (v.width * b + (FP32 if v.layer_norm else 0) * 1 + FP32)
    attention = 4 * tokens * v.width * b + FP32 * tokens * v.num_heads
    if run.attention == "eager":
        attention += (FP32 + b) * v.num_heads * tokens * tokens  # per image in practice; an upper bound
    mlp = (3 if v.gated_mlp else v.mlp_act_saved) * tokens * v.mlp_width * b
    saved = 2 * norm + attention + mlp
    if trainable == "full":
        saved += tokens * b * (3 * v.width + v.mlp_width)  # inputs of qkv, proj, fc1, fc2
    elif trainable == "lora" and adapted:
        vrun = replace(run, batch=1, seq_len=tokens)
        vmodel = _vision_as_model(spec)
        in_dtype = dict.fromkeys(("attention_in", "attn_out", "mlp_in", "mlp_prod"), b)
        inputs, extra = run.method_record.adapter.layer_saved(vmodel, vrun, dt, adapted, in_dtype, False) if run.method_record.adapter else (0, 0)
        saved += inputs + extra
    return saved


def _vision_stem_saved(spec: VlmSpec, plan: ImagePlan, batch: int, b: int, hooked: bool, full: bool) -> int:
    """Bytes outside the blocks that stay alive while the tower is in the backward graph.

    Qwen's 2D rotary cos/sin (fp32, one row per patch) are every block's input; with CLIP's
    pre_layrnorm the hooked patch-embedding output is a leaf of its own (autograd's AccumulateGrad
    holds it) and the norm saves its input and fp32 mean/rstd (issue 10, measured on the probes).
    """
    v = spec.vision
    tokens = batch * plan.vit_tokens
    saved = 2 * tokens * (v.width // v.num_heads) * FP32 if v.rotary else 0
    if v.stem_norm and (hooked or full):
        saved += tokens * (v.width * b + 2 * FP32)
        if hooked:
            saved += (tokens - batch * plan.tiles) * v.width * b  # patches only: the class token is added after
    if v.embed_leaf and hooked:
        saved += tokens * v.width * b  # SigLIP: the hooked patch output, positions are added into a new tensor
    if v.post_norm and (hooked or full):
        saved += tokens * (v.width * b + 2 * FP32)  # post_layernorm: its input and fp32 mean/rstd
    return saved


def _optimizer_terms(run: RunConfig, tensors: list[tuple[int, int, int]]) -> list[Term]:
    """States and step temporaries over every trainable tensor (numel, count, bytes) of every component."""
    n_bytes = sum(n * c * b for n, c, b in tensors)
    if run.optimizer == "sgd" or not tensors:
        return [Term("optimizer/states", 0, "SGD without momentum keeps no state" if tensors else "nothing trains")]
    if run.optimizer == "adamw":
        if run.device_kind == "cuda":
            temp, note = n_bytes, "foreach AdamW: sqrt(exp_avg_sq) for every tensor at once"
        else:
            temp, note = 2 * max(n * b for n, _, b in tensors), "per-tensor AdamW on CPU: sqrt and divide of the largest tensor"
        return [
            Term("optimizer/states", 2 * n_bytes, "Adam m and v in each parameter's dtype, every component"),
            Term("optimizer/step_temporaries", temp, note, frozenset({OPTIMIZER})),
        ]
    eight = "8bit" in run.optimizer
    states = sum(c * _bnb_state_bytes(n, eight) for n, c, _ in tensors)
    return [Term("optimizer/states", states, "bitsandbytes Adam states, every component")]


def _llm_terms(spec: VlmSpec, run: RunConfig, vlm: VlmRun, input_grad: bool, images: int, vit_tokens: int = 0) -> tuple[list[Term], tuple[str, ...], list, int]:
    """The decoder's terms for this stage, its trainable tensors (numel, count, bytes) and trainable count."""
    dec = spec.decoder
    method = run.method_record
    if vlm.trains_llm:
        llm_run = run
    else:  # stage 1: the LLM is frozen (4-bit if the method quantizes), nothing attached to it
        base = method.base if not method.base.trainable else next(m.base for m in METHODS.values() if not m.base.trainable and not m.base.quantized)
        llm_run = replace(run, method=_frozen_key(base))
    if spec.family.prefix_lm and images and not llm_run.grad_ckpt:
        # token_type_ids: an explicit prefix-LM mask, built once (with its int64 block ids) and handed
        # to every layer, whose SDPA keeps a copy in q's dtype, as for a packed batch
        llm_run = replace(llm_run, packing=True)
    llm_method = llm_run.method_record
    dt = dtype_plan(llm_run)
    adapted = llm_method.adapter.placements(dec, llm_run) if (llm_method.adapter and vlm.trains_llm) else ()
    terms = [*llm_method.base.terms(dec, llm_run, dt), *adapter_weight_terms(dec, llm_run, dt, adapted)]
    if not vlm.trains_llm:
        terms = [t for t in terms if not t.name.startswith(("weights/adapter", "grads/"))]
    if spec.family.cross_attention_layers is not None:  # Mllama: the images enter through cross-attention layers
        from .vision.cross_attention import cross_decoder_terms

        terms += cross_decoder_terms(spec, llm_run, dt, adapted, vlm, vit_tokens)
        input_grad, images = False, 0  # layer 0 reads text only; no image features scattered into the embeddings
    else:
        terms += activation_terms(dec, llm_run, dt, adapted)
    if spec.family.prefix_lm and images and llm_run.grad_ckpt:
        # checkpointed, no layer's mask copy is alive at the peak: only the mask and its block ids
        # (measured on probe-paligemma, LoRA and QLoRA: mask minus causal = b*s*s + 8*b*s exactly)
        mask = packed_inputs_bytes(replace(run, packing=True))
        terms.append(Term("activations/prefix_mask", mask, "PaliGemma's prefix-LM mask (bool, batch x seq x seq) and its int64 block ids, built once", FWD_BWD))
    if llm_run.grad_ckpt and images:
        # enable_input_require_grads() makes the token embeddings a leaf that needs a gradient;
        # the image features are scattered into a copy, so autograd's AccumulateGrad keeps the leaf
        leaf = run.batch * run.seq_len * dec.hidden_size * dt.stream_bytes
        terms.append(Term("activations/embedding_leaf", leaf, "token embeddings hooked by enable_input_require_grads(), kept beside the copy the image features go into", FWD_BWD | {BACKWARD_END}))
    if input_grad and not llm_run.grad_ckpt:
        # the image features need a gradient: layer 0 saves what it would skip for a frozen embedding
        back = first_layer_savings(dec, llm_run, dt, adapted)
        if back:
            terms.append(Term("activations/layer0_input_grad", back, "layer 0 keeps its saved tensors: its input (image features) needs a gradient", FWD_BWD))
    tensors, trainable = [], 0
    if vlm.trains_llm:
        if llm_method.trains_base:
            from .optimizer import full_model_tensors

            tensors = [(n, c, dt.weight_bytes) for n, c in full_model_tensors(dec)]
            if dec.extra_params:  # Mllama's cross-layer q/k norms and gates, extra embedding rows
                tensors.append((dec.extra_params, 1, dt.weight_bytes))
        if llm_method.adapter is not None:
            tensors += [(n, c, dt.adapter_bytes) for n, c in llm_method.adapter.tensors(dec, llm_run, adapted)]
        trainable = sum(n * c for n, c, _ in tensors)
    return _prefixed("llm", terms), adapted, tensors, trainable


def _component_bytes(run: RunConfig, quantized_llm: bool) -> int:
    """Vision tower and projector weights: 16-bit as loaded, fp32 after prepare_model_for_kbit_training."""
    return FP32 if quantized_llm else dtype_plan(run).weight_bytes


def _vision_projector_terms(spec: VlmSpec, run: RunConfig, vlm: VlmRun, plan: ImagePlan, quantized_llm: bool):
    v, proj = spec.vision, spec.projector
    b = _component_bytes(run, quantized_llm)
    dt = dtype_plan(run)
    terms: list[Term] = []
    tensors: list[tuple[int, int, int]] = []
    trainable = {"vision": 0, "projector": 0}
    # --- weights
    block_linear = v.num_layers * sum(linear.in_features * linear.out_features for linear in v.linears)
    if vlm.quantize_vision and quantized_llm:
        constants = v.num_layers * sum(nf4_constants_bytes(l.in_features * l.out_features, run.double_quant) for l in v.linears)
        rest = v.params - block_linear
        terms += [
            Term("vision/weights", block_linear // 2, "--quantize-vision: NF4 block Linears, two weights per byte"),
            Term("vision/quant_constants", constants, "NF4 absmax per 64-weight block"),
            Term("vision/weights_unquantized", rest * FP32, f"patch/position embeddings, norms, biases: {rest:,} x 4 B (kbit prep upcasts)"),
        ]
    else:
        terms.append(Term("vision/weights", v.params * b, f"{v.params:,} params x {b} B" + (" (prepare_model_for_kbit_training upcasts to fp32)" if b == FP32 and quantized_llm else "")))
    terms.append(Term("projector/weights", proj.params * b, f"{proj.params:,} params x {b} B"))
    # --- trainable tensors
    vadapted: tuple[str, ...] = ()
    if vlm.vision == "full":
        trainable["vision"] = v.params
        tensors.append((v.params, 1, b))
        terms.append(Term("vision/grads", v.params * b, "--vision full: a gradient per tower weight", GRADS))
    elif vlm.vision == "lora":
        adapter = METHODS[_frozen_key(next(m.base for m in METHODS.values() if m.adapter is not None and m.adapter.uses_rank))].adapter
        vmodel = _vision_as_model(spec)
        vadapted = tuple(linear.name for linear in v.linears)
        vt = adapter.tensors(vmodel, run, vadapted)
        n = sum(numel * count for numel, count in vt)
        trainable["vision"] = n
        tensors += [(numel, count, dt.adapter_bytes) for numel, count in vt]
        terms += [
            Term("vision/lora_weights", n * dt.adapter_bytes, f"--vision lora: r={run.rank} on {', '.join(vadapted)} of {v.num_layers} blocks"),
            Term("vision/lora_grads", n * dt.adapter_bytes, "a gradient per vision LoRA param", GRADS),
        ]
    if vlm.trains_projector:
        trainable["projector"] = proj.params
        tensors.append((proj.params, 1, b))
        terms.append(Term("projector/grads", proj.params * b, "the projector trains in full (LLaVA stage 1 and 2)", GRADS))
    # --- activations
    batch = run.batch
    pixels = batch * sum(v.pixel_values(t.vit, t.tiles) for t in plan.per_image)
    terms.append(Term("vision/pixel_inputs", pixels * FP32, f"the batch's pixel values as the processor hands them: {pixels:,} fp32", FWD_BWD))
    vit_tokens = batch * plan.vit_tokens
    llm_image_tokens = batch * sum(t.llm for t in plan.per_image)
    vision_trains = vlm.vision != "freeze"
    hooked = run.grad_ckpt and spec.family.vision_hooked  # enable_input_require_grads() hooks the tower's patch embedding too
    if spec.family.cross_attention_layers is not None:  # Mllama's tiled tower: planner/vision/cross_attention.py
        from .vision.cross_attention import mllama_vision_terms

        return terms + mllama_vision_terms(spec, run, vlm, plan, b, hooked), tensors, trainable
    if vision_trains or hooked:
        block = _vision_block_saved(spec, vit_tokens, b, run, dt, vlm.vision, vadapted)
        layers = v.graph_layers
        if run.grad_ckpt and spec.family.vision_checkpointed:
            inputs = layers * vit_tokens * v.width * b
            why = "frozen tower pulled into autograd by enable_input_require_grads()" if not vision_trains else f"--vision {vlm.vision}"
            terms += [
                Term("vision/checkpoint_inputs", inputs, f"{layers} block inputs kept by checkpointing ({why})", FWD_BWD | {BACKWARD_END}),
                Term("vision/activations", block, "one block recomputed in backward", frozenset({BACKWARD_END})),
            ]
        else:
            terms.append(Term("vision/activations", layers * block, f"{layers} blocks x {block:,} B saved for backward", FWD_BWD | {BACKWARD_END}))
        stem = _vision_stem_saved(spec, plan, batch, b, hooked, vlm.vision == "full")
        if stem:
            terms.append(Term("vision/stem", stem, "what the blocks' shared inputs keep alive: 2D rotary tables, CLIP's hooked patch output and pre-norm", FWD_BWD | {BACKWARD_END}))
    if vlm.trains_projector or vision_trains or hooked:
        # a trainable projector saves each Linear's input and the activation's input; Qwen's merger
        # also its LayerNorm (input + mean/rstd); LLaVA's first Linear keeps the tower's hidden state
        if spec.projector.in_tokens_per_out > 1:
            saved = vit_tokens * (2 * v.width * b + 2 * FP32) + 2 * llm_image_tokens * proj.linears[0].out_features * b
            # Qwen3-VL's DeepStack mergers save alike; a norm input the tower's next block keeps is one storage
            saved *= proj.branches
            shared = proj.shared_inputs + (proj.block_shared_inputs if vision_trains or hooked else 0)
            saved -= shared * vit_tokens * v.width * b
        elif not proj.act_between:
            saved = vit_tokens * v.width * b  # one Linear: its input (Idefics3's pixel-shuffled copy, same size)
        else:
            images = batch * len(plan.per_image)
            saved = images * (plan.per_image[0].vit if plan.per_image else 0) * v.width * b + 2 * llm_image_tokens * proj.linears[0].out_features * b
        terms.append(Term("projector/activations", saved, "projector inputs and its activation's input, saved for backward", FWD_BWD | {BACKWARD_END}))
    return terms, tensors, trainable


def estimate_vlm(spec: VlmSpec, run: RunConfig, vlm: VlmRun, gpu: GpuSpec | None = None, corrections: Corrections | None = None) -> VlmEstimate:
    """One stage of a VLM run.

    Raises:
        ConfigError: the images do not fit in --seq-len, a method the VLM planner does not place, bad targets.
    """
    corrections = corrections or Corrections()
    method = run.method_record
    if vlm.trains_llm and method.adapter is not None and not method.adapter.uses_rank:
        raise ConfigError(f"--method {run.method}: only LoRA-style adapters are planned for VLMs yet; use one of "
                          + ", ".join(k for k, m in METHODS.items() if m.adapter is None or m.adapter.uses_rank))
    plan = image_plan(spec, run, vlm)
    quantized_llm = method.quantizes_base
    vision_terms, tensors, trainable = _vision_projector_terms(spec, run, vlm, plan, quantized_llm)
    input_grad = vlm.trains_projector or vlm.vision != "freeze"
    llm_terms, adapted, llm_tensors, llm_trainable = _llm_terms(spec, run, vlm, input_grad, plan.llm_tokens, plan.vit_tokens)
    trainable["llm"] = llm_trainable
    scale = corrections.scale_for(run.method)
    terms = [*vision_terms, *llm_terms, *_optimizer_terms(run, llm_tensors + tensors)]
    if scale != 1.0:
        terms = [replace(t, bytes=round(t.bytes * scale)) if "activations" in t.name else t for t in terms]
    allocated = MemoryBreakdown(tuple(terms)).peak_allocated_bytes
    terms += overhead_terms(run, gpu, allocated, corrections)
    return VlmEstimate(spec, run, vlm, gpu, plan, MemoryBreakdown(tuple(terms)), trainable, adapted, corrections.source)


def estimate_schedule(spec: VlmSpec, run: RunConfig, vlm: VlmRun, gpu: GpuSpec | None = None, corrections: Corrections | None = None) -> list[VlmEstimate]:
    """`--schedule two-stage`: stage 1 then stage 2 with the same images and flags."""
    return [estimate_vlm(spec, run, replace(vlm, stage=stage), gpu, corrections) for stage in (1, 2)]
