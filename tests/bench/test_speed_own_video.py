"""bench speed asks the family record how to feed a family with its own preprocessing, never guessing Molmo2 from a missing spec."""

from __future__ import annotations

from dataclasses import replace

import pytest

from videoprune.bench import speed
from videoprune.models import FAMILIES_BY_TYPE

#: Molmo2-8B's frame geometry: 378 px frames of 14 px patches.
MOLMO2_SIDE_PATCHES = 378 // 14


def test_molmo2_record_carries_its_own_video_hooks_and_the_others_none():
    """Only the family without a preprocessing spec (Molmo2) has own_video; every spec family has none."""
    for family in FAMILIES_BY_TYPE.values():
        assert (family.own_video is None) == (family.spec is not None), family.name


def test_molmo2_token_count_comes_from_its_record(monkeypatch):
    """The estimate's LLM tokens are frames x the record's per-frame count (+ prompt); vision tokens 27x27 a frame."""
    family = FAMILIES_BY_TYPE["molmo2"]
    config = family.tiny_config(vision=dict(image_size=[378, 378], patch_size=14))
    per_frame = family.own_video.llm_tokens_per_frame(config)
    cfg = speed.SpeedConfig(prompt_tokens=10)
    assert speed._token_counts(config, cfg, 4) == (4 * per_frame + 10, 4 * MOLMO2_SIDE_PATCHES**2,
                                                   MOLMO2_SIDE_PATCHES**2)
    hooks = replace(family.own_video, llm_tokens_per_frame=lambda c: 7)
    monkeypatch.setattr(speed, "family_for", lambda obj: replace(family, own_video=hooks))
    assert speed._token_counts(config, cfg, 4)[0] == 4 * 7 + 10


def test_a_family_with_neither_spec_nor_hooks_is_a_clear_error(monkeypatch):
    """A second spec-less family without own_video is refused in one line, not run as if it were Molmo2."""
    bare = replace(FAMILIES_BY_TYPE["molmo2"], own_video=None)
    monkeypatch.setattr(speed, "family_for", lambda obj: bare)
    config = FAMILIES_BY_TYPE["molmo2"].tiny_config()
    with pytest.raises(ValueError, match="neither a preprocessing spec nor its own video hooks"):
        speed._token_counts(config, speed.SpeedConfig(), 4)


def test_molmo2_and_llava_per_frame_tokens_are_the_ceil_pooled_square():
    """Per-frame LLM tokens are ceil(side / pool)^2 (+ Molmo2's frame marks), never negative (a -(-a // b) ** 2 slip)."""
    molmo = FAMILIES_BY_TYPE["molmo2"]
    config = molmo.tiny_config(vision=dict(image_size=[378, 378], patch_size=14))
    from videoprune.models.molmo2 import FRAME_EXTRA_TOKENS, POOL

    assert molmo.own_video.llm_tokens_per_frame(config) == (-(-MOLMO2_SIDE_PATCHES // POOL)) ** 2 + FRAME_EXTRA_TOKENS
    llava = FAMILIES_BY_TYPE["llava_onevision"].tiny_config(vision=dict(image_size=384, patch_size=14))
    n_llm, n_vis, span = speed._token_counts(llava, speed.SpeedConfig(prompt_tokens=0), 2)
    assert (n_llm, n_vis, span) == (2 * 14**2, 2 * 27**2, 27**2)  # 27 patches a side, 2x2 pooled to 14
