"""Every bad input fails with a VideoError whose one-line message says what is wrong."""

import pytest
from clips import av, write_clip

from videoprune.video import SamplingConfig, VideoError, VideoLimits, decode, probe


def test_missing_file_is_reported(tmp_path):
    """A missing file is a VideoError saying the video file was not found."""
    with pytest.raises(VideoError, match="video file not found"):
        decode(tmp_path / "nope.mp4")


def test_text_file_is_not_a_video(tmp_path):
    """A text file with a video extension is a VideoError saying it is not a video."""
    path = tmp_path / "notes.mp4"
    path.write_text("hello, this is not a video\n" * 20)
    with pytest.raises(VideoError, match="not a video"):
        decode(path)


def test_empty_file_is_not_a_video(tmp_path):
    """An empty file is a VideoError saying it is empty."""
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        decode(path)


def test_audio_only_file_has_no_video_stream(tmp_path):
    """An audio-only file is a VideoError saying it has no video stream."""
    path = tmp_path / "tone.wav"
    container = av.open(str(path), "w")
    stream = container.add_stream("pcm_s16le", rate=8000)
    frame = av.AudioFrame(format="s16", layout="mono", samples=800)
    frame.sample_rate = 8000
    for buf in frame.planes:
        buf.update(bytes(buf.buffer_size))
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    with pytest.raises(VideoError, match="no video stream"):
        decode(path)


def test_truncated_mp4_is_reported_as_truncated(tmp_path, mp4_clip):
    """An mp4 cut in half (its index lost) is reported as truncated or corrupt."""
    data = open(mp4_clip, "rb").read()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end
    with pytest.raises(VideoError, match="truncated or corrupt"):
        decode(path)


def test_corrupt_avi_payload_is_reported_as_truncated_or_corrupt(tmp_path):
    """An avi whose frame data is cut off is reported as truncated or corrupt."""
    full = write_clip(tmp_path / "full.avi", codec="mjpeg", pix_fmt="yuvj420p")
    data = open(full, "rb").read()
    path = tmp_path / "cut.avi"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="truncated or corrupt"):
        decode(path)


def test_video_stream_without_frames_has_zero_frames(tmp_path):
    """A video stream with no frames is a VideoError saying it has zero frames."""
    path = tmp_path / "zero.avi"
    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=10)
    stream.width, stream.height = 64, 48
    container.start_encoding()
    container.close()
    with pytest.raises(VideoError, match="zero"):
        decode(path)


def test_resolution_beyond_the_limit_is_rejected(mp4_clip):
    """probe refuses a video wider than VideoLimits.max_width, naming its resolution."""
    with pytest.raises(VideoError, match="resolution 64x48 exceeds"):
        probe(mp4_clip, VideoLimits(max_width=32))


def test_duration_beyond_the_limit_is_rejected(mp4_clip):
    """probe refuses a video longer than VideoLimits.max_duration_s."""
    with pytest.raises(VideoError, match="longer than the limit"):
        probe(mp4_clip, VideoLimits(max_duration_s=0.5))  # the clip is 1.2 s


@pytest.mark.parametrize("fps", [0, -1.0, float("nan"), float("inf"), 1000.0])
def test_fps_out_of_range_is_rejected(fps):
    """A sampling fps that is zero, negative, NaN, infinite or absurdly high is refused."""
    with pytest.raises(VideoError, match="fps must be in"):
        SamplingConfig(fps=fps)


@pytest.mark.parametrize("count", [0, -3, 10**6])
def test_frame_count_out_of_range_is_rejected(count):
    """A frame count below 1 or absurdly high is refused."""
    with pytest.raises(VideoError, match="num_frames must be"):
        SamplingConfig(num_frames=count)


def test_fps_and_count_together_are_rejected():
    """fps and num_frames are two ways to sample, so giving both is refused."""
    with pytest.raises(VideoError, match="not both"):
        SamplingConfig(fps=2.0, num_frames=4)


def test_video_error_is_a_value_error():
    """VideoError subclasses ValueError, so callers catching ValueError catch bad videos too."""
    assert issubclass(VideoError, ValueError)
