"""The released checkpoints' config.json files and weight maps (spec 3.1, 3.2, 3.7), written out
so layout tests compare against them without downloading anything."""

# Released config.json of liuhaotian/llava-v1.5-7b (spec 3.1); mm_vision_tower is replaced per test.
LLAVA_V15_7B_CONFIG = {
    "_name_or_path": "./checkpoints/llava-v1.5-7b",
    "architectures": ["LlavaLlamaForCausalLM"],
    "model_type": "llava",
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "max_length": 4096,
    "rms_norm_eps": 1e-05,
    "initializer_range": 0.02,
    "pretraining_tp": 1,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "transformers_version": "4.31.0",
    "use_cache": True,
    "vocab_size": 32000,
    "image_aspect_ratio": "pad",
    "mm_hidden_size": 1024,
    "mm_projector_type": "mlp2x_gelu",
    "mm_vision_tower": "openai/clip-vit-large-patch14-336",
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch",
    "mm_use_im_start_end": False,
    "mm_use_im_patch_token": False,
    "mm_resampler_type": None,
    "use_mm_proj": True,
    "tune_mm_mlp_adapter": False,
    "freeze_mm_mlp_adapter": False,
    "freeze_mm_vision_resampler": False,
    "tune_mm_vision_resampler": False,
    "unfreeze_mm_vision_tower": False,
}
LLAVA_V15_13B_CONFIG = {
    **LLAVA_V15_7B_CONFIG,
    "_name_or_path": "./checkpoints/llava-v1.5-13b",
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 40,
    "num_attention_heads": 40,
    "num_key_value_heads": 40,
}
# The checkpoint's dimensions, written out from spec 3.7 rather than read from the config.
WEIGHT_MAP_DIMS = {
    "7b": dict(vocab=32000, hidden=4096, ffn=11008, layers=32, head_dim=128, vision=1024),
    "13b": dict(vocab=32000, hidden=5120, ffn=13824, layers=40, head_dim=128, vision=1024),
}
# config.json of liuhaotian/llava-v1.6-vicuna-7b; mm_vision_tower is replaced per test.
LLAVA_V16_VICUNA_7B_CONFIG = {
    "_name_or_path": "liuhaotian/llava-v1.6-vicuna-7b",
    "architectures": ["LlavaLlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "freeze_mm_mlp_adapter": False,
    "freeze_mm_vision_resampler": False,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "image_aspect_ratio": "anyres",
    "image_crop_resolution": 224,
    "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    "image_split_resolution": 224,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "mm_hidden_size": 1024,
    "mm_patch_merge_type": "spatial_unpad",
    "mm_projector_lr": None,
    "mm_projector_type": "mlp2x_gelu",
    "mm_resampler_type": None,
    "mm_use_im_patch_token": False,
    "mm_use_im_start_end": False,
    "mm_vision_select_feature": "patch",
    "mm_vision_select_layer": -2,
    "mm_vision_tower": "openai/clip-vit-large-patch14-336",
    "mm_vision_tower_lr": 2e-06,
    "model_type": "llava",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "pad_token_id": 0,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
    "tokenizer_model_max_length": 4096,
    "tokenizer_padding_side": "right",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.36.2",
    "tune_mm_mlp_adapter": False,
    "tune_mm_vision_resampler": False,
    "unfreeze_mm_vision_tower": True,
    "use_cache": True,
    "use_mm_proj": True,
    "vocab_size": 32000,
}


def expected_weight_map(vocab, hidden, ffn, layers, head_dim, vision):
    """{key: shape} of the released LLaVA-1.5 checkpoint (spec 3.7)."""
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        prefix = f"model.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"{prefix}.self_attn.{proj}.weight"] = (hidden, hidden)
        shapes[f"{prefix}.self_attn.rotary_emb.inv_freq"] = (head_dim // 2,)
        shapes[f"{prefix}.mlp.gate_proj.weight"] = (ffn, hidden)
        shapes[f"{prefix}.mlp.up_proj.weight"] = (ffn, hidden)
        shapes[f"{prefix}.mlp.down_proj.weight"] = (hidden, ffn)
        shapes[f"{prefix}.input_layernorm.weight"] = (hidden,)
        shapes[f"{prefix}.post_attention_layernorm.weight"] = (hidden,)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    shapes["model.mm_projector.0.weight"] = (hidden, vision)
    shapes["model.mm_projector.0.bias"] = (hidden,)
    shapes["model.mm_projector.2.weight"] = (hidden, hidden)
    shapes["model.mm_projector.2.bias"] = (hidden,)
    return shapes


def clip_l_vision_weight_map(prefix="model.vision_tower.vision_tower.vision_model."):
    """{key: shape} of CLIP ViT-L/14-336's vision model: width 1024, 24 layers, MLP 4096, 577 positions."""
    width, mlp, patch, positions = 1024, 4096, 14, (336 // 14) ** 2 + 1
    shapes = {
        "embeddings.class_embedding": (width,),
        "embeddings.patch_embedding.weight": (width, 3, patch, patch),
        "embeddings.position_embedding.weight": (positions, width),
        "pre_layrnorm.weight": (width,), "pre_layrnorm.bias": (width,),
        "post_layernorm.weight": (width,), "post_layernorm.bias": (width,),
    }
    for i in range(24):
        layer = f"encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}self_attn.{proj}.weight"] = (width, width)
            shapes[f"{layer}self_attn.{proj}.bias"] = (width,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}{norm}.weight"] = (width,)
            shapes[f"{layer}{norm}.bias"] = (width,)
        shapes[f"{layer}mlp.fc1.weight"] = (mlp, width)
        shapes[f"{layer}mlp.fc1.bias"] = (mlp,)
        shapes[f"{layer}mlp.fc2.weight"] = (width, mlp)
        shapes[f"{layer}mlp.fc2.bias"] = (width,)
    return {prefix + key: shape for key, shape in shapes.items()}
