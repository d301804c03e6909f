"""enable_fast_vision_attention: Qwen vision towers attend in one call per block, with the same outputs."""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch
import torch.nn.functional as F

import builders as B
import stts_builders as SB
import videoprune
from builders import patched
from videoprune.models import qwen_vision as QV
from videoprune.models import vision_attention as VA
from videoprune.models.vision_attention import enable_fast_vision_attention, segment_attention

ROW = 3 * 2 * B.QWEN_PATCH * B.QWEN_PATCH
# three videos in one call: slices of 8x8, 6x10 and 4x4 patches -> full-attention segments of
# 64, 60 and 16 rows; Qwen2.5-VL windows (2x2 units) cut at the grid edges -> 16, 8 and 4 rows
GRIDS = [(3, 8, 8), (2, 6, 10), (1, 4, 4)]
# several prompts with videos: the pre-encoder / STTS logits tests
PADDED = [[("text", 3), ("video",), ("text", 4)], [("text", 7), ("video",), ("text", 2)]]
ATOL = 1e-5


@functools.lru_cache(maxsize=None)
def _model(family):
    return B.build_model(family)


def _pixels(grids, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(sum(t * h * w for t, h, w in grids), ROW, generator=g)


def _tower(model, pixels, grids):
    with torch.no_grad():
        return model.model.visual(pixels, grid_thw=torch.tensor(grids, device=pixels.device))


def _segments(lengths, seed=0, heads=2, dim=8):
    g = torch.Generator().manual_seed(seed)
    s = sum(lengths)
    q, k, v = (torch.randn(heads, s, dim, generator=g) for _ in range(3))
    cu = torch.tensor([0] + lengths).cumsum(0).to(torch.int32)
    return q, k, v, cu


def _per_segment_reference(q, k, v, cu, bias=None, scale=None):
    outs = []
    bounds = cu.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        mask = None if bias is None else bias[a:b].view(1, 1, 1, b - a)
        outs.append(F.scaled_dot_product_attention(q[None, :, a:b], k[None, :, a:b], v[None, :, a:b],
                                                   attn_mask=mask, scale=scale)[0])
    return torch.cat(outs, dim=1)


class SdpaCounter:
    """Counts F.scaled_dot_product_attention calls, per vision block when given a tower."""

    def __init__(self, monkeypatch, tower=None):
        self.calls, self.per_block, self._hooks = 0, [], []
        real = F.scaled_dot_product_attention

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)
        for blk in (tower.blocks if tower is not None else []):
            self._hooks.append(blk.register_forward_pre_hook(self._pre, with_kwargs=True))
            self._hooks.append(blk.register_forward_hook(self._post))

    def _pre(self, module, args, kwargs):
        self._start = self.calls
        self.per_block.append({"cu": kwargs["cu_seqlens"]})

    def _post(self, module, args, out):
        self.per_block[-1]["calls"] = self.calls - self._start

    def close(self):
        for h in self._hooks:
            h.remove()


@contextlib.contextmanager
def fast(model):
    h = enable_fast_vision_attention(model)
    try:
        yield h
    finally:
        h.remove()


# ---- the attention function ---------------------------------------------------------------------

def test_batched_fallback_equals_per_segment_sdpa():
    """Unequal segments (an empty one too): one batch per length equals one SDPA call per segment."""
    q, k, v, cu = _segments([5, 3, 5, 0, 7, 3, 5])
    got = segment_attention(q, k, v, cu, scale=0.3)
    torch.testing.assert_close(got, _per_segment_reference(q, k, v, cu, scale=0.3), atol=1e-6, rtol=0)


def test_batched_fallback_with_key_bias_equals_per_segment_sdpa():
    """The key bias is each segment's additive mask, as in the per-segment loop it replaces."""
    q, k, v, cu = _segments([4, 6, 4, 6, 2])
    bias = torch.randn(q.shape[1], generator=torch.Generator().manual_seed(3))
    got = segment_attention(q, k, v, cu, key_bias=bias)
    torch.testing.assert_close(got, _per_segment_reference(q, k, v, cu, bias=bias), atol=1e-6, rtol=0)


def test_interface_function_takes_the_flash_kwargs_layout():
    """(1, H, S, D) in with cu_seq_lens_q / max_length_q, (1, S, H, D) out, as the Qwen flash path expects."""
    q, k, v, cu = _segments([3, 9, 3])
    out, weights = VA.segment_attention_forward(None, q[None], k[None], v[None], None, scaling=0.5,
                                                cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=9,
                                                max_length_k=9, is_causal=False)
    assert weights is None and out.shape == (1, q.shape[1], q.shape[0], q.shape[2])
    torch.testing.assert_close(out[0].transpose(0, 1), _per_segment_reference(q, k, v, cu, scale=0.5),
                               atol=1e-6, rtol=0)


@pytest.mark.skipif(not VA.varlen_available(), reason="varlen_attn needs CUDA (and torch >= 2.9)")
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_cuda_varlen_path_equals_batched_sdpa(dtype):
    """CUDA fp16/bf16: the single varlen_attn call matches the batched SDPA path."""
    q, k, v, cu = (t.cuda() for t in _segments([64, 60, 64, 16, 60], dim=64))
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    got = segment_attention(q, k, v, cu)
    ref = segment_attention(q, k, v, cu, prefer_varlen=False)
    torch.testing.assert_close(got.float(), ref.float(), atol=2e-2, rtol=0)


@pytest.mark.skipif(not VA.varlen_available(), reason="varlen_attn needs CUDA (and torch >= 2.9)")
def test_cuda_bf16_tower_calls_varlen_once_per_block(monkeypatch):
    """CUDA bf16 Qwen2.5-VL tower: one varlen_attn call per block, features close to its own SDPA run."""
    model = B.build_model("qwen2_5_vl").to("cuda", torch.bfloat16)
    pixels = _pixels(GRIDS).to("cuda", torch.bfloat16)
    ref = _tower(model, pixels, GRIDS).pooler_output
    real, calls = VA._varlen_fn(), []

    @functools.wraps(real)
    def counted(*args, **kwargs):
        calls.append(args[3].numel() - 1)
        return real(*args, **kwargs)

    monkeypatch.setattr(VA, "_varlen_fn", lambda: counted)
    with fast(model):
        got = _tower(model, pixels, GRIDS).pooler_output
    assert len(calls) == len(model.model.visual.blocks)
    torch.testing.assert_close(got.float(), ref.float(), atol=5e-2, rtol=5e-2)


# ---- switching a model ------------------------------------------------------------------------------

@pytest.mark.parametrize("family", B.QWEN_FAMILIES)
def test_tower_output_equals_sdpa_encoder(family):
    """Three videos of different sizes in one call: features (and Qwen3-VL deepstack) match SDPA within 1e-5."""
    model = _model(family)
    pixels = _pixels(GRIDS)
    ref = _tower(model, pixels, GRIDS)
    with fast(model):
        got = _tower(model, pixels, GRIDS)
    torch.testing.assert_close(got.pooler_output, ref.pooler_output, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.last_hidden_state, ref.last_hidden_state, atol=ATOL, rtol=0)
    for a, b in zip(getattr(got, "deepstack_features", None) or [], getattr(ref, "deepstack_features", None) or []):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    if family == "qwen3_vl":
        assert len(got.deepstack_features) == len(model.config.vision_config.deepstack_visual_indexes)


@pytest.mark.parametrize("family", B.QWEN_FAMILIES)
def test_one_attention_call_per_distinct_segment_length(family, monkeypatch):
    """Each block makes one SDPA call per distinct segment length, not one per segment."""
    model = _model(family)
    pixels = _pixels(GRIDS)
    counter = SdpaCounter(monkeypatch, model.model.visual)
    try:
        with fast(model):
            _tower(model, pixels, GRIDS)
    finally:
        counter.close()
    assert len(counter.per_block) == len(model.model.visual.blocks)
    for blk in counter.per_block:
        lengths = (blk["cu"][1:] - blk["cu"][:-1]).tolist()
        assert blk["calls"] == len(set(lengths)) < len(lengths)


def test_language_model_keeps_its_attention():
    """Only the vision config is switched: the text config and the LM's attention are untouched."""
    model = _model("qwen2_5_vl")
    text_before, top_before = model.config.text_config._attn_implementation, model.config._attn_implementation
    with fast(model):
        assert model.model.visual.config._attn_implementation == VA.ATTN_NAME
        assert model.config.text_config._attn_implementation == text_before
        assert model.config._attn_implementation == top_before
        assert all(layer.self_attn.config._attn_implementation == text_before
                   for layer in model.model.language_model.layers)


@pytest.mark.parametrize("family", B.QWEN_FAMILIES)
def test_remove_restores_the_original_implementation(family):
    """remove(): every config's implementation as before and bit-identical tower outputs."""
    model = _model(family)
    pixels = _pixels(GRIDS)
    configs = [model.config, model.config.text_config, model.config.vision_config, model.model.visual.config]
    before = [c._attn_implementation for c in configs]
    out_before = _tower(model, pixels, GRIDS).pooler_output
    h = enable_fast_vision_attention(model)
    h.remove()
    h.remove()  # idempotent
    assert [c._attn_implementation for c in configs] == before
    assert torch.equal(_tower(model, pixels, GRIDS).pooler_output, out_before)


def test_tower_alone_can_be_switched():
    """The vision tower itself (model.model.visual) is accepted, as the timing script uses it."""
    visual = _model("qwen2_vl").model.visual
    with fast(visual) as h:
        assert h.applied and visual.config._attn_implementation == VA.ATTN_NAME
    assert visual.config._attn_implementation != VA.ATTN_NAME


def test_molmo2_is_accepted_and_left_unchanged():
    """Molmo2 attends in one call per layer already: the handle says nothing was applied."""
    model = SB.build_molmo2()
    before = model.config.vision_config._attn_implementation
    h = enable_fast_vision_attention(model)
    assert not h.applied and h.family == "molmo2"
    assert model.config.vision_config._attn_implementation == before


def test_unsupported_family_raises():
    """LLaVA-OneVision (and anything else not listed) is a ValueError, not a silent no-op."""
    with pytest.raises(ValueError, match="supports Qwen2-VL"):
        enable_fast_vision_attention(_model("llava_onevision"))


# ---- videoprune's own encoder drivers ---------------------------------------------------------------

@pytest.mark.parametrize("family", ("qwen2_vl", "qwen2_5_vl"))
def test_pre_encoder_driver_makes_one_call_per_block(family, monkeypatch):
    """encode_kept_units drives the blocks with its own cu_seqlens: one attention call per block."""
    model = _model(family)
    visual = model.model.visual
    keep = torch.rand(sum(t * h * w for t, h, w in GRIDS) // 4, generator=torch.Generator().manual_seed(1)) < 0.5
    counter = SdpaCounter(monkeypatch, visual)
    try:
        with fast(model), torch.no_grad():
            QV.encode_kept_units(visual, _pixels(GRIDS), GRIDS, keep)
    finally:
        counter.close()
    for blk in counter.per_block:  # kept counts differ per slice: several lengths, still one call each
        lengths = (blk["cu"][1:] - blk["cu"][:-1]).tolist()
        assert blk["calls"] == len(set(lengths))
    assert sum(b["calls"] for b in counter.per_block) < sum(len(b["cu"]) - 1 for b in counter.per_block)


def test_key_bias_block_makes_one_call_per_distinct_length(monkeypatch):
    """STTS's key-bias block batches segments of equal length (one SDPA call per length)."""
    visual = _model("qwen2_5_vl").model.visual
    layout = QV.unit_layout(visual, GRIDS)
    hidden = QV.embed_patches(visual, _pixels(GRIDS), layout)
    bias = torch.randn(layout.num_patches, generator=torch.Generator().manual_seed(2))
    counter = SdpaCounter(monkeypatch)
    with torch.no_grad():
        QV.run_blocks(visual, hidden, layout, blocks=[0], key_bias=bias)  # block 0 is windowed
    lengths = (layout.cu_window_seqlens[1:] - layout.cu_window_seqlens[:-1]).tolist()
    assert counter.calls == len(set(lengths)) < len(lengths)


@pytest.mark.parametrize("family", ("qwen2_vl", "qwen2_5_vl"))
def test_pre_encoder_evs_logits_unchanged_by_fast_attention(family):
    """Pre-encoder EVS (pixel criterion): the same logits with fast attention on as off."""
    model = _model(family)
    inputs = B.make_inputs(family, PADDED, model=model)
    cfg = videoprune.EVSConfig(rate=0.5, criterion="pixel", stage="pre_encoder")
    with patched(model, cfg), torch.no_grad():
        off = model(**inputs).logits
        with fast(model):
            on = model(**inputs).logits
    torch.testing.assert_close(on, off, atol=ATOL, rtol=0)


def test_stts_qwen25_logits_unchanged_by_fast_attention():
    """STTS on Qwen2.5-VL (ratio 0.5, key bias): the same logits with fast attention on as off."""
    model = SB.build_qwen25()
    inputs = B.make_inputs("qwen2_5_vl", PADDED)
    with SB.patcher(model) as make:
        make()
        off = SB.logits(model, inputs)
        with fast(model):
            on = SB.logits(model, inputs)
    torch.testing.assert_close(on, off, atol=ATOL, rtol=0)


def test_docs_example_runs():
    """The offline example under "Vision attention in one call per block" in docs/speed.md runs as written."""
    import pathlib
    import re

    doc = pathlib.Path(__file__).resolve().parents[2] / "docs" / "speed.md"
    section = doc.read_text().split("## Vision attention in one call per block", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(block, str(doc), "exec"), {})
