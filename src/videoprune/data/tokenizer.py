"""A closed word-level tokenizer for the synthetic video-QA, built offline (no hub download).

It knows every word of :func:`videoprune.data.synthetic.vocabulary`, the chat words of the
prompt, and a family's special tokens, each as exactly one token; it saves and loads with
``save_pretrained`` / ``AutoTokenizer.from_pretrained`` like any HF tokenizer.
"""

from __future__ import annotations

__all__ = ["QWEN_SPECIALS", "build_word_tokenizer"]

QWEN_SPECIALS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>")
CHAT_WORDS = ("system", "user", "assistant")
PAD = "[PAD]"


def build_word_tokenizer(words=None, specials=QWEN_SPECIALS):
    """A ``PreTrainedTokenizerFast``: id 0 is ``[PAD]`` (also unknown), then specials, then words.

    Args:
        words: the vocabulary (default: the synthetic QA vocabulary plus chat words).
        specials: tokens that must never be split (the family's vision/chat markers).
    """
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    from .synthetic import vocabulary

    words = list(dict.fromkeys([*CHAT_WORDS, *(vocabulary() if words is None else words)]))
    vocab = {w: i for i, w in enumerate([PAD, *specials, *words])}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token=PAD))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    core.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token=PAD, pad_token=PAD, padding_side="left")
    tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok
