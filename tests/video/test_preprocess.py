"""Preprocessing equals transformers' PIL image processors wherever their rules coincide."""

import numpy as np
import pytest
import torch

from videoprune.video import FAMILIES, clip_from_frames, preprocess

pil_qwen = pytest.importorskip("transformers.models.qwen2_vl.image_processing_pil_qwen2_vl")
pil_llava = pytest.importorskip("transformers.models.llava_onevision.image_processing_pil_llava_onevision")

HEIGHT, WIDTH = 48, 64
SMALL_BUDGET = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 16}  # keeps grids tiny


def noise_frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, HEIGHT, WIDTH, 3), dtype=np.uint8)


def qwen2_image_processor(**budget):
    spec = FAMILIES["qwen2_vl"]
    return pil_qwen.Qwen2VLImageProcessorPil(
        min_pixels=budget.get("min_pixels", spec.min_pixels), max_pixels=budget.get("max_pixels", spec.max_pixels)
    )


@pytest.mark.parametrize("budget", [{}, SMALL_BUDGET])
def test_one_frame_video_equals_the_qwen2_image_path(budget):
    """A one-frame video preprocesses to exactly the pixels and grid of the Qwen2 image processor, with the default and
    a small pixel budget."""
    frames = noise_frames(1)
    ref = qwen2_image_processor(**budget)(list(frames), return_tensors="pt")
    out = preprocess(clip_from_frames(frames), "qwen2_vl", **budget)
    assert torch.equal(out.pixel_values_videos, ref["pixel_values"])
    assert torch.equal(out.video_grid_thw, ref["image_grid_thw"])


def test_two_identical_frames_equal_the_qwen2_image_path():
    """Two identical frames give exactly the Qwen2 image processor's pixels for one of them."""
    frames = np.repeat(noise_frames(1), 2, axis=0)
    ref = qwen2_image_processor(**SMALL_BUDGET)(list(frames[:1]), return_tensors="pt")
    out = preprocess(clip_from_frames(frames), "qwen2_vl", **SMALL_BUDGET)
    assert torch.equal(out.pixel_values_videos, ref["pixel_values"])


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_each_frame_of_a_video_lands_in_its_temporal_half_of_the_patch_rows(family):
    """In a video's patch rows frame 2t fills the first temporal half and frame 2t+1 the second, each equal to that
    frame's image patches."""
    # Image rows hold one frame twice (C, tp, p, p); video rows hold frames 2t and 2t+1.
    frames = noise_frames(4, seed=1)
    ref = qwen2_image_processor(**SMALL_BUDGET)(list(frames), return_tensors="pt")["pixel_values"]
    out = preprocess(clip_from_frames(frames), family, **SMALL_BUDGET)
    per_image = ref.shape[0] // 4
    video = out.pixel_values_videos.reshape(2, per_image, 3, 2, 14, 14)
    images = ref.reshape(4, per_image, 3, 2, 14, 14)[:, :, :, 0]
    for f in range(4):
        assert torch.equal(video[f // 2, :, :, f % 2], images[f])


def test_odd_frame_count_is_padded_by_repeating_the_last_frame():
    """An odd frame count is padded by repeating the last frame, as the HF processors do."""
    frames = noise_frames(3, seed=2)
    padded = np.concatenate([frames, frames[-1:]])
    a = preprocess(clip_from_frames(frames), "qwen2_vl", **SMALL_BUDGET)
    b = preprocess(clip_from_frames(padded), "qwen2_vl", **SMALL_BUDGET)
    assert torch.equal(a.pixel_values_videos, b.pixel_values_videos) and a.video_grid_thw[0, 0] == 2


def test_qwen3_two_frame_video_equals_the_image_path_with_half_the_budget_and_its_own_norm():
    """A Qwen3-VL two-frame video equals the image path at half the pixel budget with Qwen3's mean and std, since its
    video budget covers all frames."""
    # Qwen3-VL's video budget covers all frames; with 2 frames it is the image rule at budget / 2.
    frames = np.repeat(noise_frames(1, seed=3), 2, axis=0)
    spec = FAMILIES["qwen3_vl"]
    ref = pil_qwen.Qwen2VLImageProcessorPil(
        patch_size=16, image_mean=list(spec.mean), image_std=list(spec.std),
        min_pixels=spec.min_pixels // 2, max_pixels=spec.max_pixels // 2,
    )(list(frames[:1]), return_tensors="pt")
    out = preprocess(clip_from_frames(frames), "qwen3_vl")
    assert torch.equal(out.pixel_values_videos, ref["pixel_values"])
    assert torch.equal(out.video_grid_thw, ref["image_grid_thw"])


def test_llava_onevision_frames_equal_the_base_image_of_its_pil_processor():
    """Each LLaVA-OneVision frame equals the base (whole-image) patch of its PIL image processor, at 384 x 384."""
    frames = noise_frames(3, seed=4)
    proc = pil_llava.LlavaOnevisionImageProcessorPil()
    out = preprocess(clip_from_frames(frames), "llava_onevision")
    assert out.pixel_values_videos.shape == (1, 3, 3, 384, 384)
    for i in range(3):
        ref = proc([frames[i]], return_tensors="pt")["pixel_values"][0, 0]  # patch 0 = whole image resized
        assert torch.equal(out.pixel_values_videos[0, i], ref)


def test_qwen2_5_second_per_grid_ts_is_temporal_patch_over_sampled_fps():
    """Qwen2.5-VL's second_per_grid_ts is the temporal patch size divided by the sampled fps."""
    clip = clip_from_frames(noise_frames(4), fps=8.0)  # every frame kept: sampled fps 8
    out = preprocess(clip, "qwen2_5_vl", **SMALL_BUDGET)
    assert out.second_per_grid_ts.tolist() == [pytest.approx(2 / 8.0)]


def test_qwen2_has_no_second_per_grid_ts():
    """Qwen2-VL inputs carry no second_per_grid_ts, which that model does not take."""
    assert preprocess(clip_from_frames(noise_frames(2)), "qwen2_vl", **SMALL_BUDGET).second_per_grid_ts is None


def test_grid_timestamps_average_the_first_and_last_frame_of_each_slice():
    """Each temporal slice's timestamp is the mean of its first and last frame's times, padding included."""
    clip = clip_from_frames(noise_frames(3), fps=2.0)  # times 0, 0.5, 1.0 (+1.0 padding)
    assert preprocess(clip, "qwen3_vl").grid_timestamps == [0.25, 1.0]


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_resized_sides_are_multiples_of_patch_times_merge(family):
    """Resized frame sides are multiples of patch size x merge size, so patches merge without remainder."""
    out = preprocess(clip_from_frames(noise_frames(2)), family)
    factor = FAMILIES[family].patch_size * 2
    assert out.resized_hw[0] % factor == 0 and out.resized_hw[1] % factor == 0
