"""Byte-level BPE tokenizer (Qwen2-style tokenizer.json) and chat template."""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import BpeTrainer

from corpus import DEFAULT_SYSTEM

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]  # ids 0, 1, 2

# Qwen2's split pattern (single digits, letter runs, ...) with one change: every
# Han character is its own pre-token.  With Qwen's original pattern a whole
# Chinese clause ("法国的首都是巴黎") is one "word", and a 2k-vocab BPE trained on a
# small corpus spends its merges on memorised clauses; per-character pre-tokens
# give one token per frequent Chinese character instead.  The pattern uses
# Oniguruma class intersection, as supported by `tokenizers` (Python and Rust).
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|\p{Han}|[^\r\n\p{L}\p{N}]?[\p{L}&&[^\p{Han}]]+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ChatML, as Qwen2.5 uses it (minus tool calling), renderable by both Python
# jinja2 and the Rust minijinja engine.  Note the `\n` are Jinja string escapes.
CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def render_chat(messages: list[dict], add_generation_prompt: bool) -> str:
    """Pure-Python equivalent of CHAT_TEMPLATE (checked against minijinja + jinja2)."""
    out = []
    if not messages or messages[0]["role"] != "system":
        out.append(f"{IM_START}system\n{DEFAULT_SYSTEM}{IM_END}\n")
    for m in messages:
        out.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    if add_generation_prompt:
        out.append(f"{IM_START}assistant\n")
    return "".join(out)


def check_template_engines(samples: list[list[dict]]) -> None:
    import jinja2
    import minijinja

    env = minijinja.Environment(templates={"chat": CHAT_TEMPLATE})
    jt = jinja2.Environment().from_string(CHAT_TEMPLATE)
    for msgs in samples + [[]]:
        for gen in (False, True):
            want = render_chat(msgs, gen)
            a = env.render_template("chat", messages=msgs, add_generation_prompt=gen)
            b = jt.render(messages=msgs, add_generation_prompt=gen)
            if a != want or b != want:
                raise SystemExit(f"chat template mismatch:\n{want!r}\n{a!r}\n{b!r}")


def new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False, fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False,
                                              use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return tok


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    tok = new_tokenizer()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    # Re-register the specials as added tokens with Qwen's flags.
    from tokenizers import AddedToken

    tok.add_special_tokens([
        AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False,
                   special=True)
        for t in SPECIAL_TOKENS
    ])
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    return tok


def tokenizer_config(model_max_length: int) -> dict:
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, t in enumerate(SPECIAL_TOKENS)
        },
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
