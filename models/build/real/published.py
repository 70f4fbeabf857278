"""Published model configurations that models/build/real/ rebuilds with random weights.

The values are copied from each model's `config.json` and `generation_config.json` on the
Hugging Face Hub (the files named in `SOURCES`); nothing else of the models is used. Random weights
say nothing about answers and everything about graph layout, loading, memory and speed.
"""

SOURCES = {
    "qwen2.5-0.5b-instruct": "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/blob/main/config.json",
    "deepseek-r1-distill-qwen-1.5b": "https://huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B/blob/main/config.json",
}

# Qwen/Qwen2.5-0.5B-Instruct, config.json (transformers_version 4.43.1 in the file).
QWEN25_05B_INSTRUCT = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "hidden_act": "silu",
    "hidden_size": 896,
    "initializer_range": 0.02,
    "intermediate_size": 4864,
    "max_position_embeddings": 32768,
    "max_window_layers": 21,
    "num_attention_heads": 14,
    "num_hidden_layers": 24,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": True,
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}
# Its generation_config.json.
QWEN25_05B_INSTRUCT_GENERATION = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.1,
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
}

# deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B, config.json (transformers_version 4.44.0 in the file).
DEEPSEEK_R1_DISTILL_QWEN_15B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 1536,
    "initializer_range": 0.02,
    "intermediate_size": 8960,
    "max_position_embeddings": 131072,
    "max_window_layers": 21,
    "num_attention_heads": 12,
    "num_hidden_layers": 28,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "use_cache": True,
    "use_mrope": False,
    "use_sliding_window": False,
    "vocab_size": 151936,
}
# Its generation_config.json.
DEEPSEEK_R1_DISTILL_QWEN_15B_GENERATION = {
    "bos_token_id": 151646,
    "eos_token_id": 151643,
    "do_sample": True,
    "temperature": 0.6,
    "top_p": 0.95,
}

PUBLISHED = {
    "qwen2.5-0.5b-instruct": (QWEN25_05B_INSTRUCT, QWEN25_05B_INSTRUCT_GENERATION),
    "deepseek-r1-distill-qwen-1.5b": (DEEPSEEK_R1_DISTILL_QWEN_15B, DEEPSEEK_R1_DISTILL_QWEN_15B_GENERATION),
}

# The committed test variant: Qwen2.5-0.5B-Instruct's architecture (GQA with 2 KV heads, QKV bias,
# tied embeddings, SwiGLU, RMSNorm eps and RoPE theta as published) at reduced depth and width.
TINY_NAME = "qwen2-tiny"
TINY_OVERRIDES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "max_window_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "sliding_window": 4096,
}
