"""STTS trains on both families: optimizer steps on task + auxiliary loss lower the loss and move the scorer."""

from __future__ import annotations

import pytest
import torch

import builders as B
import stts_builders as SB
import videoprune

STEPS = 8


def _batch(family):
    if family == "molmo2":
        return SB.build_molmo2(seed=1), SB.molmo2_inputs([(3, 4)]), 1
    return SB.build_qwen25(seed=1), B.make_inputs("qwen2_5_vl", [[("text", 3), ("video",), ("text", 4)]]), 1


@pytest.mark.parametrize("family", ["molmo2", "qwen2_5_vl"])
def test_training_steps_lower_task_plus_aux_loss_and_update_the_scorer(family):
    """A few AdamW steps on (task loss + STTS aux loss) at ratio 0.5 lower it; scorer and base both change."""
    torch.manual_seed(0)
    model, inputs, prune_at = _batch(family)
    video_ids = inputs["input_ids"].clone()
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    labels = labels.masked_fill(inputs["mm_token_type_ids"] != 0, -100) if "mm_token_type_ids" in inputs else labels
    handle = videoprune.patch(model, videoprune.STTSConfig(ratio=0.5, prune_at=prune_at, mlp_hidden=16, attn_dim=8))
    try:
        model.train()
        params = list(model.parameters()) + list(handle.scorer.parameters())
        opt = torch.optim.AdamW(params, lr=3e-3)
        scorer_before = [p.detach().clone() for p in handle.scorer.parameters()]
        losses = []
        for _ in range(STEPS):
            out = model(**inputs, labels=labels)
            loss = out.loss + out.stts_aux_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        assert handle.stats.videos[0].tokens_after < handle.stats.videos[0].tokens_before
        assert losses[-1] < 0.85 * losses[0], losses
        assert any(not torch.equal(a, b) for a, b in zip(scorer_before, handle.scorer.parameters()))
        assert torch.equal(inputs["input_ids"], video_ids)
    finally:
        handle.remove()
