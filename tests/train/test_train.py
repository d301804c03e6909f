"""The training loop on the tiny model: loss falls, resume is exact, the export reloads with its rate, the CLI runs."""

from __future__ import annotations

import csv

import pytest
import torch

from trainkit import run_interrupted_and_resumed, tiny_config
from videoprune.train import train


def test_loss_decreases_on_the_toy(toy_jsonl, tmp_path):
    """12 steps at lr 1e-2 on 4 clips: the mean of the last 3 losses is well below the first."""
    result = train(tiny_config(toy_jsonl, tmp_path, max_steps=12, rate_dist="uniform:0.2,0.8", export_rate=0.5,
                               no_export=True))
    assert len(result.losses) == 12
    assert sum(result.losses[-3:]) / 3 < 0.6 * result.losses[0]


def test_resume_after_step_k_gives_the_uninterrupted_losses_exactly(toy_jsonl, tmp_path):
    """LoRA with dropout (RNG matters), grad accumulation (data position), warm-up + cosine (scheduler), random rates."""
    kw = dict(max_steps=4, grad_accum=2, lora=True, lora_r=4, lora_dropout=0.2, warmup_steps=1, schedule="cosine",
              rate_dist="beta:2,2,0.9", export_rate=0.5, save_every=2, no_export=True)
    full, resumed = run_interrupted_and_resumed(toy_jsonl, tmp_path, 3, **kw)
    assert resumed.losses == full.losses[2:]  # bit-exact in float32 on CPU
    with open(tmp_path / "b" / "metrics.csv") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4]


def test_resume_refuses_a_changed_setting(toy_jsonl, tmp_path):
    """Resuming with a different batch_size is refused, naming the setting."""
    train(tiny_config(toy_jsonl, tmp_path, max_steps=2, no_export=True))
    with pytest.raises(ValueError, match="settings differ.*batch_size"):
        train(tiny_config(toy_jsonl, tmp_path, max_steps=3, batch_size=2, resume="auto", no_export=True))


def test_exported_checkpoint_reloads_with_from_pretrained_and_carries_the_rate(toy_jsonl, tmp_path):
    """The export reloads with from_pretrained holding exactly the trained weights, the export_rate as
    video_pruning_rate, the rate_dist it was trained with, and a tokenizer that knows the video token."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    trained = {}
    result = train(tiny_config(toy_jsonl, tmp_path, max_steps=2, rate_dist="uniform:0.3,0.9", export_rate=0.6),
                   on_step=lambda s: trained.update({k: v.detach().clone() for k, v in s.model.state_dict().items()}))
    model = AutoModelForImageTextToText.from_pretrained(result.export_dir)
    assert model.config.video_pruning_rate == 0.6
    assert model.config.videoprune_training["rate_dist"] == "uniform:0.3,0.9"
    reloaded = model.state_dict()
    assert set(reloaded) == set(trained)
    assert all(torch.equal(reloaded[k], trained[k]) for k in trained)
    assert AutoTokenizer.from_pretrained(result.export_dir).convert_tokens_to_ids("<|video_pad|>") is not None


def test_lora_export_is_merged_into_plain_weights(toy_jsonl, tmp_path):
    """A LoRA run exports plain weights with the adapter merged into the language model, leaving the vision tower as it
    was, plus the serving rate."""
    from transformers import AutoModelForImageTextToText

    from videoprune.train.tiny import tiny_model
    from videoprune.train.tokenizer import build_word_tokenizer

    result = train(tiny_config(toy_jsonl, tmp_path, max_steps=2, lora=True, lora_r=4, lr=5e-2, rate_dist="fixed:0.7"))
    model = AutoModelForImageTextToText.from_pretrained(result.export_dir)
    assert model.config.video_pruning_rate == 0.7
    sd = model.state_dict()
    assert not any("lora" in k for k in sd)
    base = tiny_model("tiny:qwen2_5_vl", build_word_tokenizer(), seed=0).state_dict()
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(sd[q], base[q])  # the adapter was merged
    vision = "model.visual.blocks.0.attn.qkv.weight"
    assert torch.equal(sd[vision], base[vision])  # LoRA touched only the language model


def test_stochastic_rates_need_an_export_rate(toy_jsonl, tmp_path):
    """A random rate_dist needs an export_rate, since the export must record one serving rate."""
    with pytest.raises(ValueError, match="export_rate is required"):
        tiny_config(toy_jsonl, tmp_path, rate_dist="uniform:0.2,0.8")


def test_cli_trains_logs_and_exports(toy_jsonl, tmp_path):
    """`videoprune train` runs the steps, logs each step's rate to metrics.csv and TensorBoard, and writes the export
    with its serving rate."""
    from videoprune.cli import main

    out = tmp_path / "cli"
    rc = main(["train", "--data", str(toy_jsonl), "--model", "tiny:qwen2_vl", "--output-dir", str(out),
               "--max-steps", "2", "--num-frames", "8", "--min-pixels", "12544", "--max-pixels", "12544",
               "--rate-dist", "beta:2,5,0.9", "--export-rate", "0.75", "--lr", "0.001"])
    assert rc == 0
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == ["1", "2"] and all(0 <= float(r["rate"]) <= 0.9 for r in rows)
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    assert '"video_pruning_rate": 0.75' in (out / "export" / "config.json").read_text()


def test_cli_reports_bad_flags_in_one_line(capsys):
    """`videoprune train` with a bad --rate-dist exits 1 and states the rule it broke."""
    from videoprune.cli import main

    assert main(["train", "--data", "x.jsonl", "--model", "tiny:qwen2_vl", "--output-dir", "o",
                 "--rate-dist", "uniform:0.9,0.1"]) == 1
    assert "rate_dist 'uniform:a,b' needs 0 <= a <= b < 1" in capsys.readouterr().err


def test_fsdp_on_cpu_is_refused_up_front(toy_jsonl, tmp_path):
    """FSDP needs an accelerator: refused before any data or model is loaded, also in a single process."""
    with pytest.raises(ValueError, match="strategy='fsdp' needs CUDA devices.*use strategy='ddp' on CPU"):
        train(tiny_config(toy_jsonl, tmp_path, strategy="fsdp", device="cpu", no_export=True))
    assert not (tmp_path / "metrics.csv").exists()


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_attn_implementation_reaches_the_model_and_keeps_the_losses(toy_jsonl, tmp_path, kernel):
    """Both load paths (built-in tiny, from_pretrained) run with the asked kernel; the first loss (same weights,
    before any update) matches the other kernel's (later ones drift apart through Adam at lr 1e-2)."""
    seen, losses = [], {}
    record = lambda s: seen.append(s.model.config._attn_implementation)  # noqa: E731
    first = train(tiny_config(toy_jsonl, tmp_path / "tiny", max_steps=3, attn_implementation=kernel), on_step=record)
    other = "sdpa" if kernel == "eager" else "eager"
    losses[other] = train(tiny_config(toy_jsonl, tmp_path / "other", max_steps=3, attn_implementation=other,
                                      no_export=True)).losses
    again = train(tiny_config(toy_jsonl, tmp_path / "hf", model=first.export_dir, max_steps=1, no_export=True,
                              attn_implementation=kernel), on_step=record)
    assert seen == [kernel] * 4
    assert first.losses[0] == pytest.approx(losses[other][0], rel=1e-5)
    assert again.steps == 1


def test_unknown_attn_implementation_is_refused(toy_jsonl, tmp_path):
    """An unknown attn_implementation is refused when the config is built."""
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        tiny_config(toy_jsonl, tmp_path, attn_implementation="flash")
