"""Synthetic video-QA whose answers need the time axis: a reproducible accuracy testbed.

Each sample is a short clip of a few coloured shapes on a static textured background (so, like
real footage, most patches repeat from frame to frame) and one question:

==================  ==============================================  =====================
type                question                                        answers
==================  ==============================================  =====================
``moved``           which object moved ?                            a colour
``direction``       which direction did the <colour> object move ?  left/right/up/down
``appeared_first``  which object appeared first ?                   a colour
``flash_count``     how many times did the <colour> object flash ?  one/two/three
``colour_change``   which object changed colour ?                   its first colour
==================  ==============================================  =====================

Objects are named by their colour (unique in a scene; for the object that changes colour, the
colour it starts with): identity is easy to read from pixels, so what the questions test is the
time axis. Shapes vary as distractor detail.

Distractors are present in every scene (a second mover in ``direction``, other blinkers in
``flash_count``, late arrivals in ``appeared_first``). One training-only variant,
``direction_single`` (:data:`TRAIN_ONLY_TYPES`), asks the ``direction`` question with the second
object left still: an easier step that teaches a small model to read motion direction before
it must also tell two movers apart. Scenes never draw it by themselves; it exists only when
asked for by name, so the val and test splits hold the five types above.

A scene is fully described by per-frame state (position, colour, visibility of every object),
stored in the JSONL next to the clip; :func:`answer_from_scene` recomputes the answer from that
state alone. Samples are deterministic in (split, seed, index); the split is part of the
random stream, so train and test scenes never share a seed.

Pure numpy; PyAV (``videoprune[video]``) is imported only to write clips.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "QUESTION_TYPES",
    "TRAIN_ONLY_TYPES",
    "SHAPES",
    "COLOURS",
    "SPLITS",
    "ObjectTrack",
    "Scene",
    "make_scene",
    "render_scene",
    "answer_from_scene",
    "write_clip",
    "write_dataset",
    "vocabulary",
]

QUESTION_TYPES = ("moved", "direction", "appeared_first", "flash_count", "colour_change")
# asked for by name only (a training curriculum aid): ``direction`` with the distractor still
TRAIN_ONLY_TYPES = ("direction_single",)
_ALL_TYPES = QUESTION_TYPES + TRAIN_ONLY_TYPES
SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "white": (245, 245, 245),
    "purple": (150, 60, 200),
}
COUNT_WORDS = ("zero", "one", "two", "three", "four")
DIRECTIONS = ("left", "right", "up", "down")
SPLITS = {"train": 0, "val": 1, "test": 2}

OBJECT_SIZE = 24  # pixels; with 14 px patches and 2x2 merge an object covers one or two tokens


@dataclass
class ObjectTrack:
    """One object's state at every frame: top-left ``xy``, ``colour`` name and ``visible`` flag."""

    shape: str
    xy: list[tuple[int, int]]
    colour: list[str]
    visible: list[bool]


@dataclass
class Scene:
    """A clip's complete description; enough to render it and to recompute its answer."""

    qtype: str
    question: str
    answer: str
    width: int
    height: int
    fps: float
    background_seed: int
    objects: list[ObjectTrack] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return len(self.objects[0].xy)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Scene":
        objs = [ObjectTrack(o["shape"], [tuple(p) for p in o["xy"]], list(o["colour"]), list(o["visible"])) for o in d["objects"]]
        return cls(**{**{k: v for k, v in d.items() if k != "objects"}, "objects": objs})


# --------------------------------------------------------------------------------------------
# scene sampling
# --------------------------------------------------------------------------------------------
def _rng(split: str, seed: int, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    return np.random.default_rng(np.random.SeedSequence([SPLITS[split], int(seed), int(index)]))


def _free_positions(rng, n, width, height, margin):
    """n top-left corners on a coarse grid, far enough apart that objects never overlap."""
    step = OBJECT_SIZE + 12
    cells = [(x, y) for y in range(margin, height - OBJECT_SIZE - margin + 1, step) for x in range(margin, width - OBJECT_SIZE - margin + 1, step)]
    pick = rng.choice(len(cells), size=n, replace=False)
    return [cells[i] for i in pick]


#: pixels kept clear between an object and the frame's edge
MARGIN = 4
#: the shortest move, in pixels: a mover never travels less (a direction needs this much room)
MIN_MOVE = 24
_STEPS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclass
class _Stage:
    """A scene being sampled: its random stream, size, frame count, object tracks and the unused colour.

    Every random draw goes through ``rng``, in a fixed order (the question type, shapes, colours,
    positions, the question's own draws, the drawing order, the background), so a scene is a
    function of (split, seed, index) alone.
    """

    rng: np.random.Generator
    frames: int
    width: int
    height: int
    tracks: list[ObjectTrack]
    spare_colour: str

    def room(self, track: ObjectTrack) -> dict[str, int]:
        """Pixels ``track`` can travel from its first position in each direction, margins kept."""
        x0, y0 = track.xy[0]
        return {"left": x0 - MARGIN, "right": self.width - OBJECT_SIZE - MARGIN - x0,
                "up": y0 - MARGIN, "down": self.height - OBJECT_SIZE - MARGIN - y0}

    def feasible_directions(self, track: ObjectTrack) -> list[str]:
        """The directions in which ``track`` has room for a move of at least :data:`MIN_MOVE` pixels."""
        room = self.room(track)
        return [d for d in DIRECTIONS if room[d] >= MIN_MOVE]

    def pick(self, options: list):
        """One of ``options``, uniformly, from the scene's stream."""
        return options[int(self.rng.integers(len(options)))]

    def move(self, track: ObjectTrack, direction: str) -> None:
        """Glide ``track`` in ``direction`` as far as the frame allows (24-48 px), starting in the first quarter.

        It moves a few pixels every frame, not every pair: real motion also happens inside a
        temporal patch, where the encoder can see it.
        """
        f = self.frames
        x0, y0 = track.xy[0]
        dx, dy = _STEPS[direction]
        dist = max(MIN_MOVE, min(self.room(track)[direction], 48))
        start = 2 * int(self.rng.integers(0, f // 8 + 1))
        span = max(1, (f - start) * 3 // 4)
        track.xy = [(int(round(x0 + dx * dist * p)), int(round(y0 + dy * dist * p)))
                    for p in (min(max(i - start, 0) / span, 1.0) for i in range(f))]

    def blink(self, track: ObjectTrack, times: int, start: int) -> None:
        """``times`` flashes from frame pair ``start``: each off for one pair, then on for >= one pair."""
        vis = [True] * self.frames
        for k in range(times):
            pair = start + 2 * k
            vis[2 * pair] = vis[2 * pair + 1] = False
        track.visible = vis


def _stage(rng: np.random.Generator, frames: int, width: int, height: int, n_obj: int = 3) -> _Stage:
    """``n_obj`` still, always-visible objects of distinct shapes and colours at non-overlapping places."""
    shapes = [SHAPES[i] for i in rng.choice(len(SHAPES), n_obj, replace=False)]
    colours = [list(COLOURS)[i] for i in rng.choice(len(COLOURS), n_obj + 1, replace=False)]
    spare_colour = colours.pop()
    starts = _free_positions(rng, n_obj, width, height, MARGIN)
    tracks = [ObjectTrack(s, [xy] * frames, [c] * frames, [True] * frames) for s, xy, c in zip(shapes, starts, colours)]
    return _Stage(rng, frames, width, height, tracks, spare_colour)


def _ask_motion(st: _Stage, qtype: str) -> tuple[str, str]:
    """``moved`` / ``direction`` / ``direction_single``: the target glides; ``direction`` moves a distractor too."""
    target = st.tracks[0]
    direction = st.pick(st.feasible_directions(target))
    st.move(target, direction)
    if qtype == "moved":
        return "which object moved ?", target.colour[0]
    if qtype == "direction":  # (direction_single leaves the distractors still)
        # a distractor moves too, in another direction, so the named object must be tracked
        other = st.tracks[1]
        alt = [d for d in st.feasible_directions(other) if d != direction]
        if alt:
            st.move(other, st.pick(alt))
    return f"which direction did the {target.colour[0]} object move ?", direction


def _ask_appeared_first(st: _Stage, qtype: str) -> tuple[str, str]:
    """Each object appears at its own frame pair after the first; the target earliest."""
    f = st.frames
    pairs = sorted(st.rng.choice(np.arange(1, f // 2 - 1), size=len(st.tracks), replace=False).tolist())
    for track, p in zip(st.tracks, pairs):
        track.visible = [i >= 2 * p for i in range(f)]
    return "which object appeared first ?", st.tracks[0].colour[0]


def _ask_flash_count(st: _Stage, qtype: str) -> tuple[str, str]:
    """The target flashes 1..4 times; a distractor flashes a different number of times (possibly 0)."""
    target = st.tracks[0]
    max_flashes = min(4, (st.frames // 2 - 2) // 2)
    times = int(st.rng.integers(1, max_flashes + 1))
    st.blink(target, times, start=1)
    distractor_times = int(st.pick([t for t in range(0, max_flashes + 1) if t != times]))
    if distractor_times:
        st.blink(st.tracks[1], distractor_times, start=1)
    return f"how many times did the {target.colour[0]} object flash ?", COUNT_WORDS[times]


def _ask_colour_change(st: _Stage, qtype: str) -> tuple[str, str]:
    """The target takes the spare colour from a frame pair after the first; it is named by its first colour."""
    target = st.tracks[0]
    change = 2 * int(st.rng.integers(1, st.frames // 2 - 1))
    target.colour = [target.colour[0]] * change + [st.spare_colour] * (st.frames - change)
    return "which object changed colour ?", target.colour[0]


#: question type -> how its scene is animated and asked about; each returns ``(question, answer)``
_QUESTIONS = {"moved": _ask_motion, "direction": _ask_motion, "direction_single": _ask_motion,
              "appeared_first": _ask_appeared_first, "flash_count": _ask_flash_count,
              "colour_change": _ask_colour_change}


def make_scene(
    split: str = "train",
    seed: int = 0,
    index: int = 0,
    *,
    num_frames: int = 16,
    width: int = 112,
    height: int = 112,
    fps: float = 8.0,
    qtype: str | None = None,
) -> Scene:
    """Sample one scene deterministically from (split, seed, index).

    Appearances, flashes and colour changes are aligned to pairs of frames, so they survive a
    temporal patch of 2; moves glide a few pixels every frame. ``num_frames`` must be even and
    at least 12 (three objects must appear at distinct frame pairs after the first).
    """
    if num_frames < 12 or num_frames % 2:
        raise ValueError(f"num_frames must be an even number >= 12, got {num_frames}")
    if width < 3 * OBJECT_SIZE + 24 or height < 3 * OBJECT_SIZE + 24:
        raise ValueError(f"width and height must be at least {3 * OBJECT_SIZE + 24} pixels")
    rng = _rng(split, seed, index)
    qtype = qtype or QUESTION_TYPES[int(rng.integers(len(QUESTION_TYPES)))]
    if qtype not in _ALL_TYPES:
        raise ValueError(f"qtype must be one of {_ALL_TYPES}, got {qtype!r}")
    st = _stage(rng, num_frames, width, height)
    question, answer = _QUESTIONS[qtype](st, qtype)
    order = rng.permutation(len(st.tracks))  # the target is not always drawn first
    scene = Scene(qtype=qtype, question=question, answer=answer, width=width, height=height, fps=float(fps),
                  background_seed=int(rng.integers(2**31)), objects=[st.tracks[i] for i in order])
    recomputed = answer_from_scene(scene)
    if recomputed != answer:  # the sampler and the oracle disagree: a bug, never silently ship it
        raise AssertionError(f"scene answer {answer!r} != recomputed {recomputed!r} for {scene.question}")
    return scene


# --------------------------------------------------------------------------------------------
# answers from state alone
# --------------------------------------------------------------------------------------------
def _named(scene: Scene, question: str) -> ObjectTrack:
    for obj in scene.objects:
        if f" {obj.colour[0]} object " in f" {question} ":
            return obj
    raise ValueError(f"no object of the scene is named in {question!r}")


def _flashes(visible: list[bool]) -> int:
    """Number of invisible runs that start after the object was visible and end with it visible again."""
    count, seen, off = 0, False, False
    for v in visible:
        if v and off and seen:
            count += 1
        if v:
            seen, off = True, False
        elif seen:
            off = True
    return count


def answer_from_scene(scene: Scene) -> str:
    """Recompute the answer from per-frame object state (not from how the scene was sampled)."""
    q = scene.question
    if q.startswith("which object moved"):
        movers = [o for o in scene.objects if len(set(o.xy)) > 1]
        return movers[0].colour[0] if len(movers) == 1 else "ambiguous"
    if q.startswith("which direction"):
        obj = _named(scene, q)
        (x0, y0), (x1, y1) = obj.xy[0], obj.xy[-1]
        dx, dy = x1 - x0, y1 - y0
        if abs(dx) >= abs(dy):
            return "right" if dx > 0 else "left"
        return "down" if dy > 0 else "up"
    if q.startswith("which object appeared first"):
        firsts = [(o.visible.index(True) if any(o.visible) else len(o.visible), o.colour[0]) for o in scene.objects]
        firsts.sort()
        return firsts[0][1] if firsts[0][0] < firsts[1][0] else "ambiguous"
    if q.startswith("how many times"):
        return COUNT_WORDS[_flashes(_named(scene, q).visible)]
    if q.startswith("which object changed colour"):
        changed = [o for o in scene.objects if len(set(o.colour)) > 1]
        return changed[0].colour[0] if len(changed) == 1 else "ambiguous"
    raise ValueError(f"unknown question {q!r}")


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
def _background(seed: int, width: int, height: int) -> np.ndarray:
    """A static texture: smooth colour blobs plus fine grain, identical in every frame."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 140, size=(height // 16 + 2, width // 16 + 2, 3))
    ys = np.linspace(0, coarse.shape[0] - 1.001, height)
    xs = np.linspace(0, coarse.shape[1] - 1.001, width)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    smooth = top * (1 - fy) + bottom * fy
    grain = rng.normal(0, 6, size=(height, width, 1))
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def _shape_mask(shape: str) -> np.ndarray:
    s = OBJECT_SIZE
    yy, xx = np.mgrid[0:s, 0:s] + 0.5
    c = s / 2
    if shape == "circle":
        return (yy - c) ** 2 + (xx - c) ** 2 <= (s / 2) ** 2
    if shape == "square":
        return np.ones((s, s), dtype=bool)
    if shape == "triangle":
        return (yy >= s * 0.1) & (np.abs(xx - c) <= (yy - s * 0.1) * 0.6)
    if shape == "diamond":
        return np.abs(yy - c) + np.abs(xx - c) <= s / 2
    if shape == "cross":
        bar = s / 6
        return (np.abs(yy - c) <= bar) | (np.abs(xx - c) <= bar)
    raise ValueError(f"unknown shape {shape!r}")


def render_scene(scene: Scene) -> np.ndarray:
    """Frames as ``(T, H, W, 3)`` uint8 RGB."""
    bg = _background(scene.background_seed, scene.width, scene.height)
    frames = np.repeat(bg[None], scene.num_frames, axis=0)
    masks = {o.shape: _shape_mask(o.shape) for o in scene.objects}
    for t in range(scene.num_frames):
        for obj in scene.objects:
            if not obj.visible[t]:
                continue
            x, y = obj.xy[t]
            region = frames[t, y : y + OBJECT_SIZE, x : x + OBJECT_SIZE]
            region[masks[obj.shape]] = COLOURS[obj.colour[t]]
    return frames


# --------------------------------------------------------------------------------------------
# dataset files
# --------------------------------------------------------------------------------------------
def write_clip(frames: np.ndarray, path: str | Path, fps: float) -> None:
    """Encode ``(T, H, W, 3)`` uint8 frames as an H.264 mp4 at ``fps`` (near-lossless, crf 12)."""
    import av  # lazy: the [video] extra

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(round(fps)))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_dataset(
    out_dir: str | Path,
    split: str = "train",
    num: int = 100,
    seed: int = 0,
    *,
    num_frames: int = 16,
    size: int = 112,
    fps: float = 8.0,
    qtypes: list[str] | tuple[str, ...] | None = None,
    progress: bool = True,
) -> Path:
    """Write ``num`` clips to ``out_dir/videos/`` and their questions to ``out_dir/<split>.jsonl``.

    ``qtypes`` restricts the question types (clip ``i`` gets ``qtypes[i % len(qtypes)]``; the
    training-only ``direction_single`` may be named here); by default each scene draws one of
    :data:`QUESTION_TYPES` uniformly.

    Each JSONL line has ``video`` (path relative to the JSONL file), ``question``, ``answer``,
    ``type``, ``timestamps`` (seconds of each frame) and ``scene`` (the full description).
    Returns the JSONL path.
    """
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    if qtypes is not None:
        qtypes = list(qtypes)
        bad = [q for q in qtypes if q not in _ALL_TYPES]
        if not qtypes or bad:
            raise ValueError(f"qtypes must be a non-empty subset of {_ALL_TYPES}, got {qtypes!r}")
        if split != "train" and any(q in TRAIN_ONLY_TYPES for q in qtypes):
            raise ValueError(f"{TRAIN_ONLY_TYPES} are for training only; split {split!r} asked for them")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    jsonl = out / f"{split}.jsonl"
    indices = range(num)
    if progress:
        from tqdm.auto import tqdm

        indices = tqdm(indices, desc=f"writing {split} clips", unit="clip")
    with jsonl.open("w") as fh:
        for i in indices:
            qtype = qtypes[i % len(qtypes)] if qtypes else None
            scene = make_scene(split, seed, i, num_frames=num_frames, width=size, height=size, fps=fps, qtype=qtype)
            rel = Path("videos") / f"{split}_s{seed}_{i:05d}.mp4"
            write_clip(render_scene(scene), out / rel, fps)
            record = {
                "video": str(rel),
                "question": scene.question,
                "answer": scene.answer,
                "type": scene.qtype,
                "timestamps": [round(t / fps, 6) for t in range(num_frames)],
                "scene": scene.to_json(),
            }
            fh.write(json.dumps(record) + "\n")
    return jsonl


def vocabulary() -> list[str]:
    """Every word a question or answer can contain (for a closed word-level tokenizer)."""
    words = set(COUNT_WORDS) | set(DIRECTIONS) | set(SHAPES) | set(COLOURS)
    for q in ("which object moved ?", "which direction did the object move ?", "which object appeared first ?",
              "how many times did the object flash ?", "which object changed colour ?"):
        words |= set(q.split())
    return sorted(words)
