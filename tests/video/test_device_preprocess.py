"""Preprocessing on a device gives the CPU/PIL path's shapes, grids and layout exactly, and its pixels within the documented bound."""

import numpy as np
import pytest
import torch

from videoprune.video import FAMILIES, clip_from_frames, decode, prepare_inputs, preprocess, preprocess_molmo2
from videoprune.video import device_preprocess as dp
from videoprune.video.decode import SamplingConfig
from videoprune.video.preprocess import IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, _resize_normalize, _resize_pil

pytest.importorskip("PIL")

# The bound docs/video.md states ("Preprocessing on the GPU"): a resized pixel is at most 2 uint8
# steps from PIL's, and on average (over all pixels) under MEAN_STEPS_* of a step.
MAX_STEPS = 2
MEAN_STEPS_REAL = 3e-3  # real footage; measured <= 2.2e-4 on CPU, <= 1.5e-3 on an H200
MEAN_STEPS_NOISE = 1e-2  # uniform noise, the worst case for rounding; measured <= 5.2e-3 (H200, 32x32 frames)
MOLMO2 = "molmo2"
ALL_FAMILIES = [*FAMILIES, MOLMO2]
SMALL_BUDGET = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 16}
HEIGHT, WIDTH = 48, 64


def noise_frames(n=3, height=HEIGHT, width=WIDTH, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def run(family, frames, device=None, fps=2.0):
    """(VideoTensors or Molmo2Video, std per channel) for one path."""
    clip = clip_from_frames(frames, fps=fps)
    if family == MOLMO2:
        return preprocess_molmo2(clip, device=device), IMAGENET_STANDARD_STD
    budget = SMALL_BUDGET if FAMILIES[family].resize == "qwen2" else {}
    return preprocess(clip, family, device=device, **budget), FAMILIES[family].std


def norm_bound(std, steps):
    """``steps`` uint8 steps in normalised units: one step is 1 / (255 * std) there."""
    return steps / (255 * min(std)) + 1e-6


def real_frames(name, n=4):
    from videoprune.video import sample_clip

    try:
        if name == "sample":
            from videoprune.bundle import sample_video

            path = sample_video()
        else:
            path = sample_clip(name)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    pytest.importorskip("av")
    return decode(path, SamplingConfig(num_frames=n)).frames


# --------------------------------------------------------------------------------------------
# exact parts: shapes, grids, layout, timestamps, normalisation
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_frames", [1, 3, 4])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_shapes_grids_and_timestamps_equal_the_cpu_path(family, n_frames):
    """For every family and frame count the device path gives float32 pixels of the CPU path's shape, and equal grids,
    sizes, timestamps and token counts."""
    ref, _ = run(family, noise_frames(n_frames))
    got, _ = run(family, noise_frames(n_frames), device="cpu")
    assert got.pixel_values_videos.shape == ref.pixel_values_videos.shape
    assert got.pixel_values_videos.dtype == torch.float32
    assert got.resized_hw == ref.resized_hw and got.grid_timestamps == ref.grid_timestamps
    for key in ("video_grid_thw", "second_per_grid_ts"):
        a, b = getattr(ref, key), getattr(got, key)
        assert (a is None and b is None) or torch.equal(a, b)
    assert got.num_video_tokens == ref.num_video_tokens


def test_molmo2_shapes_pooling_and_grids_equal_the_cpu_path():
    """For Molmo2 the device path gives the CPU path's patch shape, pooling indices, grids and token count."""
    ref, got = preprocess_molmo2(noise_frames(3)), preprocess_molmo2(noise_frames(3), device="cpu")
    assert got.pixel_values_videos.shape == ref.pixel_values_videos.shape == (3, 27 * 27, 14 * 14 * 3)
    assert torch.equal(got.video_token_pooling, ref.video_token_pooling)
    assert torch.equal(got.video_grids, ref.video_grids) and got.video_grids.tolist() == [[3, 9, 9]]
    assert got.num_video_tokens == ref.num_video_tokens == 3 * 81


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_frames_already_at_the_target_size_give_the_cpu_bits(family):
    """Frames already at the target size need no resize, so the device path's normalise and patchify must give the CPU
    path's bits exactly."""
    # no resize happens, so only normalise + patchify run: they must be bit-exact
    ref, _ = run(family, noise_frames(2))
    h, w = (378, 378) if family == MOLMO2 else ref.resized_hw
    frames = noise_frames(2, h, w, seed=5)
    a, _ = run(family, frames)
    b, _ = run(family, frames, device="cpu")
    assert torch.equal(a.pixel_values_videos, b.pixel_values_videos)


@pytest.mark.parametrize("std_mean", [(FAMILIES["qwen2_vl"].mean, FAMILIES["qwen2_vl"].std),
                                      (IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD)])
def test_normalise_equals_hf_float_arithmetic_for_every_byte_value(std_mean):
    """The device normalise gives, for every byte value 0-255, exactly the float the HF processors compute."""
    mean, std = std_mean
    values = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, None, :, None], (1, 1, 256, 3))
    ref = _resize_normalize(np.ascontiguousarray(values), (1, 256), mean, std)
    got = dp.normalize(torch.arange(256, dtype=torch.float32).expand(1, 3, 1, 256).clone(), mean, std)
    assert torch.equal(got, torch.from_numpy(ref))


# --------------------------------------------------------------------------------------------
# the tolerance on pixel values
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("in_hw", "out_hw"), [
    ((48, 64), (112, 140)),  # both sides grow
    ((144, 176), (72, 88)),  # both shrink
    ((144, 176), (128, 192)),  # height shrinks, width grows: Pillow 13 goes vertical first
    ((60, 200), (100, 90)),  # height grows, width shrinks
    ((150, 60), (30, 50)),  # height shrinks by more than twice the width: vertical first
    ((48, 64), (48, 90)),  # one pass only
])
def test_resized_uint8_pixels_stay_within_max_steps_of_pil(in_hw, out_hw):
    """The torch resize stays within MAX_STEPS uint8 steps of Pillow's (and within the mean bound) for growing,
    shrinking and mixed resizes, and returns whole values in [0, 255]."""
    frames = noise_frames(2, *in_hw, seed=7)
    pil = torch.from_numpy(_resize_pil(frames, out_hw)).permute(0, 3, 1, 2).float()
    got = dp.resize_like_pil(dp.frames_to_device(frames, torch.device("cpu")), out_hw)
    diff = (got - pil).abs()
    assert diff.max() <= MAX_STEPS and diff.mean() <= MEAN_STEPS_NOISE
    assert got.min() >= 0 and got.max() <= 255 and torch.equal(got, got.round())


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_normalised_values_on_noise_stay_within_the_bound(family):
    """On noise, the worst case for rounding, the device path's normalised pixels stay within MAX_STEPS steps of the CPU
    path's, and within the mean bound."""
    (ref, std), (got, _) = run(family, noise_frames(4)), run(family, noise_frames(4), device="cpu")
    diff = (got.pixel_values_videos - ref.pixel_values_videos).abs()
    assert diff.max() <= norm_bound(std, MAX_STEPS)
    assert diff.mean() <= norm_bound(std, MEAN_STEPS_NOISE)


@pytest.mark.parametrize("clip_name", ["bikes.mp4", "sample"])
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_normalised_values_on_real_footage_stay_within_the_bound(family, clip_name):
    """On real footage the device path's normalised pixels stay within MAX_STEPS steps of the CPU path's, and within the
    tighter mean bound for real clips."""
    frames = real_frames(clip_name)
    clip = clip_from_frames(frames, fps=2.0)
    if family == MOLMO2:
        ref, got, std = preprocess_molmo2(clip), preprocess_molmo2(clip, device="cpu"), IMAGENET_STANDARD_STD
    else:  # the families' own budgets: bikes.mp4 goes to 280x644 on Qwen2/2.5-VL
        ref, got, std = preprocess(clip, family), preprocess(clip, family, device="cpu"), FAMILIES[family].std
    diff = (got.pixel_values_videos - ref.pixel_values_videos).abs()
    assert diff.max() <= norm_bound(std, MAX_STEPS)
    assert diff.mean() <= norm_bound(std, MEAN_STEPS_REAL)


def test_molmo2_layout_equals_hf_patches_and_pooling():
    """preprocess_molmo2's patches and pooling indices equal those of the transformers Molmo2 video processor."""
    hf = pytest.importorskip("transformers.models.molmo2.video_processing_molmo2")
    frames = noise_frames(2)
    out = preprocess_molmo2(frames)
    x = torch.from_numpy(_resize_normalize(frames, (378, 378), IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD))
    assert torch.equal(out.pixel_values_videos, hf.batch_pixels_to_patches(x.permute(0, 2, 3, 1), 14))
    pooling, rows, cols = hf.arange_for_pooling(torch.arange(27 * 27).view(27, 27), 3, 3)
    assert (rows, cols) == (9, 9)
    assert torch.equal(out.video_token_pooling, torch.cat([pooling.long() + f * 27 * 27 for f in range(2)]))


# --------------------------------------------------------------------------------------------
# devices
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "meta"])
def test_a_bad_device_is_a_one_line_value_error(bad):
    """An unknown or unusable device is a one-line ValueError naming the device in preprocess, preprocess_molmo2 and
    prepare_inputs."""
    for call in (lambda: preprocess(clip_from_frames(noise_frames(1)), "qwen2_vl", device=bad),
                 lambda: preprocess_molmo2(noise_frames(1), device=bad),
                 lambda: prepare_inputs(noise_frames(1), "what", None, device=bad)):
        with pytest.raises(ValueError, match="device") as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")
def test_cuda_without_cuda_is_a_value_error():
    """Asking for cuda on a machine without CUDA is a ValueError, not a torch crash."""
    with pytest.raises(ValueError, match="cuda"):
        preprocess(clip_from_frames(noise_frames(1)), "qwen2_vl", device="cuda")


def test_prepare_inputs_on_a_device_equals_the_cpu_path_but_for_pixels():
    """prepare_inputs on a device gives the CPU path's tensors exactly, except pixels, which stay within MAX_STEPS
    steps."""
    from test_prompt import BUDGET, tiny_tokenizer  # noqa: PLC0415

    tok = tiny_tokenizer()
    ref = prepare_inputs(noise_frames(4), "what happens ?", tok, family="qwen2_5_vl", **BUDGET)
    got = prepare_inputs(noise_frames(4), "what happens ?", tok, family="qwen2_5_vl", device="cpu", **BUDGET)
    assert ref.keys() == got.keys()
    for key in ref:
        if key == "pixel_values_videos":
            assert got[key].shape == ref[key].shape
            assert (got[key] - ref[key]).abs().max() <= norm_bound(FAMILIES["qwen2_5_vl"].std, MAX_STEPS)
        else:
            assert torch.equal(got[key], ref[key]), key


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_on_cuda_every_tensor_lands_there_within_the_bound(family):
    """On CUDA every model input is on the GPU and the pixels stay within the CPU path's bounds."""
    (ref, std), (got, _) = run(family, noise_frames(4)), run(family, noise_frames(4), device="cuda")
    tensors = got.model_inputs()
    assert all(t.device.type == "cuda" for t in tensors.values())
    diff = (tensors["pixel_values_videos"].cpu() - ref.pixel_values_videos).abs()
    assert diff.max() <= norm_bound(std, MAX_STEPS) and diff.mean() <= norm_bound(std, MEAN_STEPS_NOISE)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_normalise_equals_hf_float_arithmetic_for_every_byte_value():
    """On CUDA the normalise gives, for every byte value, exactly the float the HF processors compute."""
    mean, std = FAMILIES["qwen2_vl"].mean, FAMILIES["qwen2_vl"].std
    values = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, None, :, None], (1, 1, 256, 3))
    ref = _resize_normalize(np.ascontiguousarray(values), (1, 256), mean, std)
    got = dp.normalize(torch.arange(256, dtype=torch.float32, device="cuda").expand(1, 3, 1, 256).clone(), mean, std)
    assert torch.equal(got.cpu(), torch.from_numpy(ref))
