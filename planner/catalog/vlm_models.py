"""Built-in vision-language models: the published config.json of each (transformers 5 classes).

Same rules as `models.py`: every key that changes the parameter count or the memory, copied
from the hub `config.json` of the repository named by the key; each entry checked by building
it on the meta device against the published count (`# params:`). Qwen2-VL files keep the text
keys flat at the top level, as the hub files do. `processor` holds the `preprocessor_config.json`
values that set image tokens.
"""

from __future__ import annotations

_QWEN_VISION = {"depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_channels": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "hidden_act": "quick_gelu"}
_QWEN25_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "in_chans": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu"}
_QWEN_PROCESSOR = {"min_pixels": 3136, "max_pixels": 12845056}  # preprocessor_config.json of the Qwen2-VL / Qwen2.5-VL checkpoints
_CLIP_336 = {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "projection_dim": 768, "vocab_size": 32000}
_LLAVA = {"vision_feature_layer": -2, "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu", "image_token_index": 32000, "image_seq_length": 576}
# Qwen3-VL's preprocessor_config.json: size {shortest_edge 65536, longest_edge 16777216}, patch 16, merge 2
_QWEN3_PROCESSOR = {"min_pixels": 65536, "max_pixels": 16777216}
_QWEN3_VISION_S = {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096}  # 2B and 4B
_QWEN3_VISION_L = {"depth": 27, "hidden_size": 1152, "intermediate_size": 4304}  # 8B


def _qwen3_vl(width: int, mlp: int, layers: int, heads: int, tie: bool, vision: dict, deepstack: list) -> dict:
    # as transformers 5 reads the hub file (and rewrites the dict it is given): the vision model_type
    # "qwen3_vl" renamed to "qwen3_vl_vision", rope_theta copied into rope_scaling
    return {
        "model_type": "qwen3_vl", "architectures": ["Qwen3VLForConditionalGeneration"], "tie_word_embeddings": tie,
        "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
        "text_config": {"model_type": "qwen3_vl_text", "hidden_size": width, "intermediate_size": mlp, "num_hidden_layers": layers,
                        "num_attention_heads": heads, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                        "max_position_embeddings": 262144, "rms_norm_eps": 1e-06, "hidden_act": "silu", "attention_bias": False,
                        "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True, "rope_theta": 5000000},
                        "rope_theta": 5000000, "tie_word_embeddings": tie, "dtype": "bfloat16"},
        "vision_config": {"model_type": "qwen3_vl_vision", **vision, "num_heads": 16, "hidden_act": "gelu_pytorch_tanh", "in_channels": 3,
                          "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2, "num_position_embeddings": 2304,
                          "out_hidden_size": width, "deepstack_visual_indexes": deepstack},
    }


_SIGLIP_SO400M = {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
                  "num_attention_heads": 16, "patch_size": 14, "vision_use_head": False}
# PaliGemma / PaliGemma 2: transformers' conversion scripts (src/transformers/models/paligemma/convert_paligemma_weights_to_hf.py,
# convert_paligemma2_weights_to_hf.py) write these config.json values; both resize the 257,152-token vocabulary by the
# <image> token (+2) to a multiple of 64: 257,216. PaliGemma 2's text_config is gemma-2-2b-it's Gemma2Config with the
# script's per-size overrides (the sliding window and soft-caps below are gemma-2's, as in models.py's google/gemma-2-2b).
_PALIGEMMA_TEXT = {"model_type": "gemma", "hidden_size": 2048, "intermediate_size": 16384, "num_hidden_layers": 18,
                   "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 257216,
                   "hidden_activation": "gelu_pytorch_tanh"}
_GEMMA2_TEXT = {"model_type": "gemma2", "vocab_size": 257216, "max_position_embeddings": 8192, "rms_norm_eps": 1e-06,
                "hidden_activation": "gelu_pytorch_tanh", "rope_theta": 10000.0, "attention_bias": False, "sliding_window": 4096,
                "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0, "head_dim": 256, "query_pre_attn_scalar": 256}


def _paligemma(size: int, text: dict, width: int) -> dict:
    return {"model_type": "paligemma", "architectures": ["PaliGemmaForConditionalGeneration"], "image_token_index": 257152,
            "projection_dim": width, "text_config": text,
            "vision_config": {**_SIGLIP_SO400M, "image_size": size, "num_image_tokens": (size // 14) ** 2, "projection_dim": width}}


VLM_CONFIGS: dict[str, dict] = {
    "Qwen/Qwen2-VL-2B-Instruct": {
        "aliases": ("qwen2-vl-2b",),
        "processor": _QWEN_PROCESSOR,
        "config": {  # params: 2,208,985,600 (vision 665,271,296 incl. merger 34,087,936)
            "model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"],
            "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
            "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "hidden_act": "silu", "torch_dtype": "bfloat16",
            "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
            "vision_config": {**_QWEN_VISION, "hidden_size": 1536},
        },
    },
    "Qwen/Qwen2-VL-7B-Instruct": {
        "aliases": ("qwen2-vl-7b",),
        "processor": _QWEN_PROCESSOR,
        "config": {  # params: 8,291,375,616 (vision 675,759,104 incl. merger 44,575,744; lm_head 544,997,376)
            "model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"],
            "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
            "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "hidden_act": "silu", "torch_dtype": "bfloat16",
            "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
            "vision_config": {**_QWEN_VISION, "hidden_size": 3584},
        },
    },
    "Qwen/Qwen2.5-VL-3B-Instruct": {
        "aliases": ("qwen2.5-vl-3b",),
        "processor": _QWEN_PROCESSOR,
        "config": {  # params: 3,754,622,976 (vision 668,684,288 incl. merger 36,708,608)
            "model_type": "qwen2_5_vl", "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
            "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True, "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "hidden_act": "silu", "torch_dtype": "bfloat16",
            "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
            "vision_config": {**_QWEN25_VISION, "out_hidden_size": 2048},
        },
    },
    "Qwen/Qwen2.5-VL-7B-Instruct": {
        "aliases": ("qwen2.5-vl-7b",),
        "processor": _QWEN_PROCESSOR,
        "config": {  # params: 8,292,166,656 (vision 676,550,144 incl. merger 44,574,464)
            "model_type": "qwen2_5_vl", "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
            "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False, "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "hidden_act": "silu", "torch_dtype": "bfloat16",
            "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
            "vision_config": {**_QWEN25_VISION, "out_hidden_size": 3584},
        },
    },
    # Qwen3-VL: config.json of the hub repos named by the keys (text nested in text_config,
    # tie_word_embeddings at the root). 2B and 8B as ported in pytorch/torchtitan
    # (torchtitan/experiments/qwen3_vl/__init__.py: widths, layers, heads, kv heads, head_dim 128, tying,
    # vision towers, DeepStack taps, mrope_section [24, 20, 20]); 4B as vendored verbatim in kohya-ss'
    # Krea 2 loader (QWEN3_VL_4B_INSTRUCT_CONFIG); its tower as in amdrajeevp1/onnxruntime-genai's
    # examples/python/qwen3-vl-4b notes. 32B is left out: no citable config.json was found.
    "Qwen/Qwen3-VL-2B-Instruct": {
        "aliases": ("qwen3-vl-2b",),
        "processor": _QWEN3_PROCESSOR,
        "config": _qwen3_vl(2048, 6144, 28, 16, True, _QWEN3_VISION_S, [5, 11, 17]),  # params: 2,127,532,032 (vision 306,242,560; mergers 100,714,496)
    },
    "Qwen/Qwen3-VL-4B-Instruct": {
        "aliases": ("qwen3-vl-4b",),
        "processor": _QWEN3_PROCESSOR,
        "config": _qwen3_vl(2560, 9728, 36, 32, True, _QWEN3_VISION_S, [5, 11, 17]),  # params: 4,437,815,808 (vision 306,242,560; mergers 109,105,152)
    },
    "Qwen/Qwen3-VL-8B-Instruct": {
        "aliases": ("qwen3-vl-8b",),
        "processor": _QWEN3_PROCESSOR,
        "config": _qwen3_vl(4096, 12288, 36, 32, False, _QWEN3_VISION_L, [8, 16, 24]),  # params: 8,767,123,696 (vision 415,891,440; mergers 160,496,896)
    },
    # Llama-3.2-11B-Vision(-Instruct) share one config.json. vision_config and preprocessor_config.json as
    # quoted from the hub files in danbev/learning-ai (notes on Llama-3.2-11B-Vision-Instruct); text_config
    # as transformers 5.24's MllamaTextConfig documents the meta-llama/Llama-3.2-11B-Vision configuration
    # (its defaults), matching the copies in the mlx/candle test fixtures (40 layers, cross layers
    # 3, 8, ..., 38, 32/8 heads, 4096 wide). 90B is left out: no citable config.json was found.
    "meta-llama/Llama-3.2-11B-Vision-Instruct": {
        "aliases": ("llama-3.2-11b-vision", "llama-3.2-11b-vision-instruct", "mllama-11b"),
        "processor": {"max_image_tiles": 4, "size": {"height": 560, "width": 560}},
        "config": {  # params: 10,670,220,835 (vision 863,567,379; projector 31,461,376)
            "model_type": "mllama", "architectures": ["MllamaForConditionalGeneration"], "image_token_index": 128256,
            "torch_dtype": "bfloat16",
            "text_config": {"model_type": "mllama_text_model", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 40,
                            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
                            "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": False,
                            "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38], "torch_dtype": "bfloat16"},
            "vision_config": {"model_type": "mllama_vision_model", "attention_heads": 16, "hidden_act": "gelu", "hidden_size": 1280,
                              "image_size": 560, "intermediate_size": 5120, "max_num_tiles": 4, "num_channels": 3, "num_global_layers": 8,
                              "num_hidden_layers": 32, "patch_size": 14, "norm_eps": 1e-05, "vision_output_dim": 7680,
                              "intermediate_layers_indices": [3, 7, 15, 23, 30],
                              "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]},
        },
    },
    "llava-hf/llava-1.5-7b-hf": {
        "aliases": ("llava-1.5-7b", "llava-7b"),
        "config": {  # params: 7,063,427,072 (CLIP 303,507,456; projector 20,979,712)
            "model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], **_LLAVA,
            "text_config": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064, "max_position_embeddings": 4096,
                            "rms_norm_eps": 1e-05, "torch_dtype": "float16", "tie_word_embeddings": False},
            "vision_config": _CLIP_336,
        },
    },
    "llava-hf/llava-1.5-13b-hf": {
        "aliases": ("llava-1.5-13b", "llava-13b"),
        "config": {  # params: 13,351,494,656 (CLIP 303,507,456; projector 31,467,520)
            "model_type": "llava", "architectures": ["LlavaForConditionalGeneration"], **_LLAVA,
            "text_config": {"model_type": "llama", "hidden_size": 5120, "intermediate_size": 13824, "num_hidden_layers": 40,
                            "num_attention_heads": 40, "num_key_value_heads": 40, "vocab_size": 32064, "max_position_embeddings": 4096,
                            "rms_norm_eps": 1e-05, "torch_dtype": "float16", "tie_word_embeddings": False},
            "vision_config": _CLIP_336,
        },
    },
    "llava-hf/llava-v1.6-mistral-7b-hf": {
        "aliases": ("llava-next-7b", "llava-v1.6-mistral-7b"),
        "config": {  # params: 7,566,747,648 (CLIP 303,507,456; projector 20,979,712 + image_newline 4,096)
            "model_type": "llava_next", "architectures": ["LlavaNextForConditionalGeneration"], **_LLAVA,
            "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
            "text_config": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32064, "max_position_embeddings": 32768,
                            "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": None, "torch_dtype": "bfloat16",
                            "tie_word_embeddings": False},
            "vision_config": _CLIP_336,
        },
    },
    "google/paligemma-3b-pt-224": {
        "aliases": ("paligemma-3b-224", "paligemma-3b"),
        "config": _paligemma(224, _PALIGEMMA_TEXT, 2048),  # params: 2,923,466,480 (SigLIP 412,442,352; projector 2,361,344)
    },
    "google/paligemma-3b-pt-448": {
        "aliases": ("paligemma-3b-448",),
        "config": _paligemma(448, _PALIGEMMA_TEXT, 2048),  # params: 2,924,351,216 (1,024 positions)
    },
    "google/paligemma2-3b-pt-224": {
        "aliases": ("paligemma2-3b-224", "paligemma2-3b"),
        "config": _paligemma(224, {**_GEMMA2_TEXT, "hidden_size": 2304, "num_hidden_layers": 26, "intermediate_size": 9216,
                                   "num_attention_heads": 8, "num_key_value_heads": 4}, 2304),  # params: 3,032,242,416
    },
    "google/paligemma2-10b-pt-224": {
        "aliases": ("paligemma2-10b-224", "paligemma2-10b"),
        "config": _paligemma(224, {**_GEMMA2_TEXT, "hidden_size": 3584, "num_hidden_layers": 42, "intermediate_size": 14336,
                                   "num_attention_heads": 16, "num_key_value_heads": 8}, 3584),  # params: 9,662,638,832
    },
    # config.json and preprocessor_config.json as quoted verbatim in qewr1234/Lightweight-VLA tests/offline_vlm_cache.py;
    # the tower's width and depth are SmolVLMVisionConfig defaults there (3072, 12: SigLIP base-patch16-512)
    "HuggingFaceTB/SmolVLM2-500M-Video-Instruct": {
        "aliases": ("smolvlm2-500m", "smolvlm2-500m-video-instruct"),
        "processor": {"longest_edge": 2048, "tile": 512, "do_image_splitting": True},
        "config": {  # params: 507,482,304 (vision 86,433,024; connector 11,796,480)
            "model_type": "smolvlm", "architectures": ["SmolVLMForConditionalGeneration"], "image_token_id": 49190,
            "scale_factor": 4, "tie_word_embeddings": False,
            "text_config": {"model_type": "llama", "head_dim": 64, "hidden_size": 960, "intermediate_size": 2560,
                            "max_position_embeddings": 8192, "num_attention_heads": 15, "num_hidden_layers": 32,
                            "num_key_value_heads": 5, "rms_norm_eps": 1e-05, "rope_theta": 100000, "vocab_size": 49280},
            "vision_config": {"model_type": "smolvlm_vision", "hidden_size": 768, "image_size": 512, "num_attention_heads": 12,
                              "patch_size": 16, "max_image_size": {"longest_edge": 512}, "size": {"longest_edge": 2048}},
        },
    },
}
