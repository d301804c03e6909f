"""A closed word-level tokenizer with a family's chat/vision special tokens (offline, no hub downloads).

Used for tiny test models and the embedded default model: it knows every word of the synthetic
video-QA suite (:func:`videoprune.data.synthetic.vocabulary`), the words of the chat templates
:mod:`videoprune.video.prompt` writes, digits (Qwen3-VL's ``<1.5 seconds>``), and each family's
special tokens as single tokens. Round-trips with ``save_pretrained`` / ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

__all__ = ["SPECIAL_TOKENS", "CHAT_WORDS", "build_word_tokenizer"]

UNK = "[UNK]"
PAD = "<|endoftext|>"
END_OF_TURN = "<|im_end|>"
#: special tokens of every supported family (Qwen chat/vision tokens, LLaVA-OneVision placeholders)
SPECIAL_TOKENS = ("<|im_start|>", END_OF_TURN, "<|vision_start|>", "<|vision_end|>", "<|video_pad|>",
                  "<|image_pad|>", "<video>", "<image>")
#: words the chat templates in videoprune.video.prompt put around the video and question
CHAT_WORDS = ("system", "user", "assistant", "You", "are", "a", "helpful", ".", "seconds", "<", ">", "?", ",",
              *"0123456789")


def build_word_tokenizer(words=None):
    """A ``transformers.PreTrainedTokenizerFast``: whitespace/punctuation split, one id per known word.

    Args:
        words: iterable of extra words; default the synthetic suite's :func:`vocabulary`.

    Ids: 0 ``[UNK]``, 1 ``<|endoftext|>`` (pad), then the special tokens, then the words (sorted,
    deduplicated). ``eos_token`` is ``<|im_end|>`` (what ends an assistant answer).
    """
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    if words is None:
        from ..data.synthetic import vocabulary

        words = vocabulary()
    extra = sorted(set(CHAT_WORDS) | set(words))
    bad = [w for w in extra if not isinstance(w, str) or not w or any(c.isspace() for c in w)]
    if bad:
        raise ValueError(f"words must be non-empty strings without whitespace, got {bad[:5]}")
    vocab = {}
    for tok in (UNK, PAD, *SPECIAL_TOKENS, *extra):
        vocab.setdefault(tok, len(vocab))
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    core.decoder = tokenizers.decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token=UNK, pad_token=PAD, eos_token=END_OF_TURN)
    tok.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tok
