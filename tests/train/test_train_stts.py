"""``method='stts'`` on the tiny Qwen2.5-VL: the scorer trains (base frozen), loss = task + aux, resume is exact,
the exported scorer reloads through ``STTSConfig(scorer_path=...)``."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from trainkit import run_interrupted_and_resumed, tiny_config, toy_batch
from videoprune.train import train

STTS = dict(method="stts", stts_prune_at=1, stts_ratio=0.5, stts_aux_weight=0.5)


def fresh_base():
    from videoprune.train.tiny import tiny_model
    from videoprune.train.tokenizer import build_word_tokenizer

    return tiny_model("tiny:qwen2_5_vl", build_word_tokenizer(), seed=0)


def split(module: torch.nn.Module, prefix: str) -> dict:
    return {k[len(prefix):]: v.detach().clone() for k, v in module.state_dict().items() if k.startswith(prefix)}


def test_scorer_params_change_while_the_frozen_base_does_not(toy_jsonl, tmp_path):
    """Default stts: only ``scorer.*`` requires grad; it moves every step; the base stays bit-identical to its init."""
    seen = []

    def on_step(info):
        assert {n.split(".")[0] for n, p in info.model.named_parameters() if p.requires_grad} == {"scorer"}
        assert all(p.grad is None for n, p in info.model.named_parameters() if n.startswith("model."))
        seen.append((split(info.model, "scorer."), split(info.model, "model.")))

    train(tiny_config(toy_jsonl, tmp_path, max_steps=2, no_export=True, **STTS), on_step=on_step)
    (s1, _), (s2, base2) = seen
    assert any(not torch.equal(s1[k], s2[k]) for k in s1)
    init = fresh_base().state_dict()
    assert set(base2) == set(init) and all(torch.equal(base2[k], init[k]) for k in init)
    with open(tmp_path / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert all(float(r["aux_loss"]) > 0 and 0 < float(r["kept_fraction"]) < 1 for r in rows)


def test_gradient_is_that_of_task_plus_aux_loss(toy_jsonl, tmp_path):
    """lr 0, no clipping: the trainer's scorer gradient equals d(task + aux)/d(scorer) on the same micro-batch,
    and differs from d(task)/d(scorer) (so the aux term is really in the objective)."""
    checked = {}

    def on_step(info):
        model = info.model
        got = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        batch = toy_batch(toy_jsonl, info.indices)

        def grads(with_aux: bool) -> dict:
            model.zero_grad(set_to_none=True)
            out = model(**batch)
            assert float(out.stts_aux_loss.detach()) == pytest.approx(info.aux_loss)
            (out.loss + out.stts_aux_loss if with_aux else out.loss).backward()
            return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

        ref, task_only = grads(True), grads(False)
        checked["total"] = all(torch.allclose(got[n], ref[n], rtol=1e-5, atol=1e-8) for n in got)
        checked["task_only"] = all(torch.allclose(got[n], task_only[n], rtol=1e-3, atol=1e-6) for n in got)

    train(tiny_config(toy_jsonl, tmp_path, max_steps=1, lr=0.0, max_grad_norm=0.0, no_export=True, **STTS),
          on_step=on_step)
    assert checked == {"total": True, "task_only": False}


@pytest.mark.parametrize("extra", [
    pytest.param({}, id="scorer-only"),
    pytest.param({"train_base": True, "lora": True, "lora_r": 4, "lora_dropout": 0.2}, id="scorer+lora",
                 marks=pytest.mark.slow),
])
def test_resume_after_step_k_gives_the_uninterrupted_losses_exactly(toy_jsonl, tmp_path, extra):
    """Scorer (and LoRA) weights, optimizer, scheduler, RNG and data position come back: steps 3-4 bit-identical."""
    kw = dict(max_steps=4, grad_accum=2, warmup_steps=1, schedule="cosine", save_every=2, no_export=True,
              **STTS, **extra)
    full, resumed = run_interrupted_and_resumed(toy_jsonl, tmp_path, 3, **kw)
    assert resumed.losses == full.losses[2:] and resumed.aux_losses == full.aux_losses[2:]
    assert len(full.aux_losses) == 4


def test_export_writes_the_scorer_and_scorer_path_reloads_it(toy_jsonl, tmp_path):
    """Frozen base: the export holds the scorer + its STTSConfig only; patching the base with
    ``STTSConfig(**stts_config, scorer_path=...)`` gives the trained scorer's outputs exactly (an untrained one differs)."""
    import videoprune
    from videoprune.stts import STTSConfig
    from videoprune.train.trainer import stts_config

    last = {}
    cfg = tiny_config(toy_jsonl, tmp_path, max_steps=2, **STTS)
    result = train(cfg, on_step=lambda info: last.update(split(info.model, "scorer.")))
    export = tmp_path / "export"
    assert sorted(p.name for p in export.iterdir()) == ["stts_config.json", "stts_scorer.safetensors"]
    saved = json.loads((export / "stts_config.json").read_text())
    assert saved["base_model"] == "tiny:qwen2_5_vl" and saved["base_model_exported"] is False
    batch = toy_batch(toy_jsonl, [0, 1])

    def logits(scfg, state=None):
        model = fresh_base().eval()
        handle = videoprune.patch(model, scfg)
        if state is not None:
            handle.scorer.load_state_dict(state)
        with torch.no_grad():
            return model(**{k: v for k, v in batch.items() if k != "labels"}).logits, handle.scorer.state_dict()

    reloaded, state = logits(STTSConfig(**saved["stts"], scorer_path=str(export / "stts_scorer.safetensors")))
    assert all(torch.equal(state[k], last[k]) for k in last)
    reference, _ = logits(stts_config(cfg), state=last)
    untrained, _ = logits(stts_config(cfg))
    assert torch.equal(reloaded, reference)
    assert not torch.allclose(untrained, reference)
    assert result.export_dir == str(export)


def test_train_base_with_lora_exports_the_merged_model_beside_the_scorer(toy_jsonl, tmp_path):
    """STTS training with train_base and LoRA exports the merged, changed model beside the scorer and its settings,
    marked as STTS and without an EVS serving rate."""
    from transformers import AutoModelForImageTextToText

    train(tiny_config(toy_jsonl, tmp_path, max_steps=1, train_base=True, lora=True, lora_r=4, lr=5e-2, **STTS))
    export = tmp_path / "export"
    assert {"config.json", "model.safetensors", "stts_scorer.safetensors", "stts_config.json"} <= {
        p.name for p in export.iterdir()}
    model = AutoModelForImageTextToText.from_pretrained(export)
    assert model.config.videoprune_training["method"] == "stts"
    assert not hasattr(model.config, "video_pruning_rate")  # an EVS serving rate means nothing for STTS
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(model.state_dict()[q], fresh_base().state_dict()[q])


@pytest.mark.parametrize("kw, match", [
    (dict(method="stts", lora=True), "add train_base"),
    (dict(method="evs", train_base=True), "train_base is a method='stts' setting"),
    (dict(method="stts", strategy="fsdp"), "strategy='fsdp' with method='stts'"),
    (dict(method="stts", stts_prune_at=-1), "stts_prune_at must be an int >= 0"),
])
def test_bad_stts_settings_are_refused_naming_them(toy_jsonl, tmp_path, kw, match):
    """Contradictory STTS training settings (LoRA without train_base, train_base for EVS, FSDP with STTS, a negative
    prune_at) are refused naming the setting."""
    with pytest.raises(ValueError, match=match):
        tiny_config(toy_jsonl, tmp_path, **kw)


def test_prune_at_too_deep_for_the_encoder_is_a_clear_error(toy_jsonl, tmp_path):
    """The default prune_at=3 leaves the tiny encoder no block to prune, and that is a clear error instead of a run that
    prunes nothing."""
    with pytest.raises(ValueError, match="prune_at=3 leaves no block"):
        train(tiny_config(toy_jsonl, tmp_path, max_steps=1, no_export=True, method="stts"))
