"""patch() with labels: the loss is the model's causal-LM loss on the pruned layout, labels gathered by the same plan."""

from __future__ import annotations

import pytest
import torch
from transformers.loss.loss_utils import ForCausalLMLoss

import builders as B
import reference as R
import videoprune
from builders import patched

RATE = 0.75
ATOL = 1e-5
FAMILY = pytest.mark.parametrize("family", B.FAMILIES)
# every row ends with more than ANSWER_TOKENS text tokens (answers follow the prompt's text)
PADDED = [[("text", 3), ("video",), ("text", 4)], [("text", 7), ("video",), ("text", 5)],
          [("text", 1), ("video",), ("text", 9), ("video",), ("text", 6)]]
ANSWER_TOKENS = 3  # the last tokens of each row carry labels; everything else is -100


def answer_labels(inputs: dict) -> torch.Tensor:
    """(B, L) labels: the row's own ids on its last ANSWER_TOKENS text tokens, -100 elsewhere."""
    ids = inputs["input_ids"]
    labels = torch.full_like(ids, -100)
    labels[:, -ANSWER_TOKENS:] = ids[:, -ANSWER_TOKENS:]
    assert not (labels[:, -ANSWER_TOKENS:] >= B.IMAGE_TOKEN).any()  # no placeholder/vision tokens
    return labels


def reference_loss(family, model, inputs, labels, rate):
    """Gather kept embeddings + original positions + labels by hand; the model's lm_head; HF's causal-LM loss."""
    e, p, m, extra, rows = R.reference_prefill(family, model, inputs, rate)
    gathered = torch.full(m.shape, -100, dtype=torch.long)
    for i, r in enumerate(rows):
        gathered[i, m.shape[1] - len(r):] = labels[i, r]
    with torch.no_grad():
        out = model.model.language_model(inputs_embeds=e, position_ids=p, attention_mask=m, **extra)
        logits = model.lm_head(out.last_hidden_state)
    return ForCausalLMLoss(logits, gathered, vocab_size=model.config.get_text_config().vocab_size)


@FAMILY
def test_patched_loss_equals_the_gathered_reference_loss(tiny, family):
    """With labels, the patched model's loss over a shortened sequence equals the loss of the explicit gather reference.
    """
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED, model=model)
    labels = answer_labels(inputs)
    expected = reference_loss(family, model, inputs, labels, RATE)
    with patched(model, videoprune.EVSConfig(rate=RATE)) as handle, torch.no_grad():
        out = model(**inputs, labels=labels)
    assert handle.stats.sequence_length_after < handle.stats.sequence_length_before
    assert out.logits.shape[1] == handle.stats.sequence_length_after
    torch.testing.assert_close(out.loss, expected, atol=ATOL, rtol=0)


@FAMILY
def test_rate_zero_loss_is_identical_to_the_unpatched_loss(tiny, family):
    """At rate 0 the patched loss is bit-identical to the unpatched loss."""
    model = tiny(family)
    inputs = B.make_inputs(family, PADDED, model=model)
    labels = answer_labels(inputs)
    with torch.no_grad():
        before = model(**inputs, labels=labels).loss
    with patched(model, videoprune.EVSConfig(rate=0.0)), torch.no_grad():
        after = model(**inputs, labels=labels).loss
    assert torch.equal(before, after)


def test_loss_gradient_reaches_the_vision_encoder_through_kept_tokens(tiny):
    """Training needs it: the pruned loss back-propagates into the encoder's weights."""
    model = tiny("qwen2_5_vl")
    inputs = B.make_inputs("qwen2_5_vl", PADDED[:1], model=model)
    model.zero_grad()
    with patched(model, videoprune.EVSConfig(rate=RATE)):
        model(**inputs, labels=answer_labels(inputs)).loss.backward()
    grads = [p.grad for p in model.model.visual.parameters() if p.grad is not None]
    model.zero_grad()
    assert grads and any(bool(g.abs().sum() > 0) for g in grads)


def test_labels_on_pruned_video_tokens_are_an_error(tiny):
    """Labels on video tokens that pruning drops raise an error instead of being silently lost from the loss."""
    model = tiny("qwen2_vl")
    inputs = B.make_inputs("qwen2_vl", PADDED[:1], model=model)
    labels = inputs["input_ids"].clone()  # a naive "labels = input_ids" puts labels on video tokens
    with patched(model, videoprune.EVSConfig(rate=RATE)), torch.no_grad():
        with pytest.raises(ValueError, match="labels are set on tokens the pruned batch drops"):
            model(**inputs, labels=labels)


def test_remove_restores_the_outer_forward(tiny):
    """handle.remove() restores the model's outer forward exactly as it was before patching."""
    model = tiny("qwen2_vl")
    before = model.__dict__.get("forward")
    handle = videoprune.patch(model, videoprune.EVSConfig(rate=RATE))
    assert model.__dict__.get("forward") is not None
    handle.remove()
    assert model.__dict__.get("forward") is before
