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
}
