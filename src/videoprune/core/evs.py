"""EVS token selection: temporal dissimilarity and the keep/drop decision, as pure tensor functions.

Everything here works on one flat token sequence per call, in the raster order the HF video
models produce: for each video, tokens are ordered (t, h, w) over the *merged* grid
T' x H' x W' (H' = H / merge, W' = W / merge), and several videos are concatenated.
No model code is imported; the functions return masks, never pruned model state.

Selection rule (rate mode, methods.md §1.1, identical to vLLM / SGLang):
  d[t, h, w] = 1 - cos(E[t, h, w], E[t-1, h, w]) for t >= 1, +inf for frame 0;
  keep the K = max(H'W', int(T'H'W' * (1 - rate))) tokens of largest d, chosen globally over
  the video, ties broken by raster index (lower index wins).

Autograd: selection is not differentiable (a hard top-k on a score), so every function here
works on detached inputs and returns tensors without a gradient history: inputs that require
grad (features mid-training) are accepted, nothing is back-propagated through them.
Parameters are checked by the shared validators of :mod:`videoprune.validate` (``rate`` in
[0, 1), ``threshold`` >= 0, fractions in [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..validate import check_fraction, check_rate, check_threshold

__all__ = [
    "COSINE_EPS",
    "normalize_grids",
    "retained_count",
    "embedding_dissimilarity",
    "pixel_dissimilarity",
    "random_dissimilarity",
    "select_by_rate",
    "top_k_mask",
    "select_by_threshold",
    "retention_mask",
    "threshold_mask",
    "pixel_retention_mask",
]

# Norms are clamped to this before dividing, exactly as torch.nn.functional.cosine_similarity
# does: a zero vector has cosine 0 with anything, so its dissimilarity is 1 (never NaN).
COSINE_EPS = 1e-8

GridLike = torch.Tensor | Sequence[int] | Sequence[Sequence[int]]


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------
def _check_rate(rate: float, name: str = "rate") -> float:
    return check_rate(rate, name)


def _check_fraction(value: float, name: str) -> float:
    return check_fraction(value, name)


def _check_merge(spatial_merge_size: int) -> int:
    if isinstance(spatial_merge_size, bool) or not isinstance(spatial_merge_size, int) or spatial_merge_size < 1:
        raise ValueError(f"spatial_merge_size must be a positive int, got {spatial_merge_size!r}")
    return spatial_merge_size


def normalize_grids(grid_thw: GridLike, spatial_merge_size: int) -> list[tuple[int, int, int]]:
    """Turn ``grid_thw`` into a list of merged grids ``(T', H', W')``, one per video.

    ``grid_thw`` is the encoder grid *before* spatial merging, as in HF's ``video_grid_thw``:
    a tuple ``(T, H, W)``, a list of such tuples, or an int tensor of shape ``(3,)`` or
    ``(V, 3)``. ``H`` and ``W`` must be multiples of ``spatial_merge_size``.
    """
    merge = _check_merge(spatial_merge_size)
    if isinstance(grid_thw, torch.Tensor):
        if grid_thw.is_floating_point() or grid_thw.is_complex() or grid_thw.dtype == torch.bool:
            raise ValueError(f"grid_thw must hold integers, got dtype {grid_thw.dtype}")
        if grid_thw.dim() == 1:
            grid_thw = grid_thw.unsqueeze(0)
        if grid_thw.dim() != 2 or grid_thw.shape[1] != 3:
            raise ValueError(f"grid_thw must have shape (3,) or (V, 3), got {tuple(grid_thw.shape)}")
        rows = [tuple(int(v) for v in row) for row in grid_thw.tolist()]
    else:
        seq = list(grid_thw)
        if len(seq) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in seq):
            seq = [seq]
        rows = []
        for row in seq:
            row = tuple(row) if not isinstance(row, int) else (row,)
            if len(row) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in row):
                raise ValueError(f"grid_thw rows must be three ints (T, H, W), got {row!r}")
            rows.append(row)
    if not rows:
        raise ValueError("grid_thw must describe at least one video, got an empty grid")
    merged = []
    for t, h, w in rows:
        if t < 1 or h < 1 or w < 1:
            raise ValueError(f"grid_thw entries must be positive, got (T, H, W) = {(t, h, w)}")
        if h % merge or w % merge:
            raise ValueError(
                f"grid_thw (T, H, W) = {(t, h, w)}: H and W must be multiples of "
                f"spatial_merge_size={merge}"
            )
        merged.append((t, h // merge, w // merge))
    return merged


def _check_tokens(x: torch.Tensor, name: str, grids: list[tuple[int, int, int]], row_width: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have rank 2 (tokens, dim), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    expected = sum(t * h * w for t, h, w in grids) * (row_width or 1)
    if x.shape[0] != expected:
        what = "tokens" if row_width is None else "patch rows"
        raise ValueError(
            f"{name} has {x.shape[0]} rows but grid_thw {grids} (merged) implies {expected} {what}"
        )


# --------------------------------------------------------------------------------------------
# counts
# --------------------------------------------------------------------------------------------
def retained_count(tokens_per_frame: int, num_frames: int, rate: float) -> int:
    """Number of tokens EVS keeps in one video: ``max(tokens_per_frame, int(total * (1 - rate)))``.

    Depends only on shapes and ``rate`` (in [0, 1)), so a prompt can be sized before features
    exist. Frame 0 always fits: the result is never below ``tokens_per_frame``.
    """
    rate = _check_rate(rate)
    for name, v in (("tokens_per_frame", tokens_per_frame), ("num_frames", num_frames)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    total = tokens_per_frame * num_frames
    return max(tokens_per_frame, int(total * (1 - rate)))


# --------------------------------------------------------------------------------------------
# dissimilarities: (N,) per token, +inf on frame 0
# --------------------------------------------------------------------------------------------
def _frame0_inf(d_rest: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    head = torch.full((tokens_per_frame,), float("inf"), dtype=d_rest.dtype, device=d_rest.device)
    return torch.cat([head, d_rest.reshape(-1)])


def _video_slices(grids: list[tuple[int, int, int]], row_width: int = 1):
    start = 0
    for t, h, w in grids:
        n = t * h * w * row_width
        yield (t, h, w), slice(start, start + n)
        start += n


# Extra memory per block of the cosine pass. Blocks keep temporaries in cache on CPU; on an
# accelerator the whole video is one block.
_BLOCK_BYTES_CPU = 4 << 20


def _block_rows(x: torch.Tensor) -> int:
    """Tokens per block for a pass over ``x`` (tokens, dim): about _BLOCK_BYTES_CPU on CPU, all elsewhere."""
    if x.device.type != "cpu":
        return x.shape[0]
    return max(1, _BLOCK_BYTES_CPU // max(1, x.shape[1] * x.element_size()))


def _mean_abs_diff_to_previous_frame(x: torch.Tensor, hw: int) -> torch.Tensor:
    """``mean |x[i] - x[i - hw]|`` for tokens of frames 1.. as ``((t-1)*hw,)``, in cache-sized blocks."""
    n_tok = x.shape[0]
    out = torch.empty(n_tok - hw, dtype=x.dtype, device=x.device)
    rows = _block_rows(x)
    for a in range(hw, n_tok, rows):
        b = min(a + rows, n_tok)
        torch.mean((x[a:b] - x[a - hw : b - hw]).abs_(), dim=-1, out=out[a - hw : b - hw])
    return out


def _cosine_to_previous_frame(x: torch.Tensor, t: int, hw: int) -> torch.Tensor:
    """``cos(x[i], x[i - hw])`` for every token of frames 1..t-1, as a flat ``((t-1)*hw,)`` tensor.

    Same arithmetic as ``F.cosine_similarity`` (divide each vector by its clamped norm, multiply,
    sum over the last dim), so results are bit-identical to it; each token is normalised once.
    Work proceeds in blocks of whole frames sized by bytes (several small frames per block, one
    large frame per block), normalised into two reused buffers: the previous block's last frame
    is the predecessor of the next block's first. Products are summed in cache-sized sub-blocks
    through one reused temporary, so no full-size temporary is ever allocated.
    """
    n_tok, dim = x.shape
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    if not bool(torch.isfinite(norms).all()):
        raise ValueError("features contain NaN or infinite values (or values whose norm overflows)")
    norms.clamp_min_(COSINE_EPS)
    rows = _block_rows(x)  # tokens per sub-block
    block = max(1, rows // hw) * hw if x.device.type == "cpu" else n_tok - hw
    out = torch.empty(n_tok - hw, dtype=x.dtype, device=x.device)
    bufs: list[torch.Tensor | None] = [None, None]  # allocated on first use (one block on accelerators)
    tmp = torch.empty(min(rows, block), dim, dtype=x.dtype, device=x.device)
    prev = torch.empty(hw, dim, dtype=x.dtype, device=x.device)  # normalised tokens [a - hw, a)
    torch.div(x[:hw], norms[:hw], out=prev)
    for i, a in enumerate(range(hw, n_tok, block)):
        b = min(a + block, n_tok)  # b - a is a whole number of frames
        if bufs[i % 2] is None:
            bufs[i % 2] = torch.empty(block, dim, dtype=x.dtype, device=x.device)
        cur = bufs[i % 2][: b - a]
        torch.div(x[a:b], norms[a:b], out=cur)
        for j in range(0, b - a, rows):
            k = min(j + rows, b - a)
            # predecessors of tokens a+j..a+k: in `prev` below hw, else hw back in `cur`
            for lo, hi in ((j, min(k, hw)), (max(j, hw), k)):
                if lo >= hi:
                    continue
                src = prev[lo:hi] if hi <= hw else cur[lo - hw : hi - hw]
                prod = tmp[: hi - lo]
                torch.mul(cur[lo:hi], src, out=prod)
                torch.sum(prod, dim=-1, out=out[a - hw + lo : a - hw + hi])
        prev = cur[-hw:]
    return out


def embedding_dissimilarity(features: torch.Tensor, grid_thw: GridLike, spatial_merge_size: int) -> torch.Tensor:
    """Per-token ``1 - cos(E[t], E[t-1])`` at the same spatial location; ``+inf`` for frame 0.

    Args:
        features: ``(N, D)`` floating tensor, the LLM-side video features of one or more videos
            concatenated in raster order (what ``get_video_features`` returns).
        grid_thw: pre-merge grid(s), see :func:`normalize_grids`.
        spatial_merge_size: the encoder's spatial merge (2 for the Qwen family).

    Returns:
        ``(N,)`` tensor in the features' dtype and device. Computed in the features' own dtype
        with the arithmetic of ``torch.nn.functional.cosine_similarity`` (each vector divided by
        its norm clamped to :data:`COSINE_EPS`), so values equal the serving engines' bit for
        bit on the same device; each token is normalised once. A zero vector has cosine 0 with
        anything, so its dissimilarity (and its successor's) is exactly 1, never NaN.

    Raises:
        ValueError: wrong rank/dtype, a row count that does not match the grid, NaN/inf values.
    """
    grids = normalize_grids(grid_thw, spatial_merge_size)
    _check_tokens(features, "features", grids)
    features = features.detach()  # a score for a hard selection: no gradient (module docstring)
    out = []
    for (t, h, w), sl in _video_slices(grids):
        x = features[sl]
        if t == 1:
            if not bool(torch.isfinite(x).all()):
                raise ValueError("features contain NaN or infinite values")
            out.append(torch.full((h * w,), float("inf"), dtype=x.dtype, device=x.device))
            continue
        out.append(_frame0_inf(1 - _cosine_to_previous_frame(x, t, h * w), h * w))
    return torch.cat(out)


def pixel_dissimilarity(
    pixel_values: torch.Tensor, grid_thw: GridLike, spatial_merge_size: int
) -> torch.Tensor:
    """Per-LLM-token mean absolute pixel difference against the previous temporal slice.

    The pixel-space EVS criterion (methods.md §1.2). It needs no features, so it can run before
    the vision encoder.

    Args:
        pixel_values: ``(N_patches, C * temporal_patch * patch * patch)``, the patchified video
            that Qwen-style encoders take (``pixel_values_videos``): for each video, rows in
            order (t, h / merge, w / merge, merge, merge), so each run of ``merge**2``
            consecutive rows is one LLM token.
        grid_thw, spatial_merge_size: as for :func:`embedding_dissimilarity`.

    Returns:
        ``(N_tokens,)`` float32 tensor, ``+inf`` on frame 0, on the pixels' device.
    """
    grids = normalize_grids(grid_thw, spatial_merge_size)
    unit = spatial_merge_size**2
    _check_tokens(pixel_values, "pixel_values", grids, row_width=unit)
    pixel_values = pixel_values.detach()
    out = []
    for (t, h, w), sl in _video_slices(grids, row_width=unit):
        x = pixel_values[sl].float().reshape(t * h * w, -1)  # one row per LLM token
        if t == 1:
            if not bool(torch.isfinite(x).all()):
                raise ValueError("pixel_values contain NaN or infinite values")
            out.append(torch.full((h * w,), float("inf"), device=x.device))
            continue
        diff = _mean_abs_diff_to_previous_frame(x, h * w)
        # every pixel of the video enters some difference, so this catches any NaN/inf input
        if not bool(torch.isfinite(diff).all()):
            raise ValueError("pixel_values contain NaN or infinite values")
        out.append(_frame0_inf(diff, h * w))
    return torch.cat(out)


def random_dissimilarity(
    grid_thw: GridLike, spatial_merge_size: int, seed: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """Seeded uniform random scores per token (``+inf`` on frame 0): the random-pruning baseline.

    Fed to :func:`select_by_rate` it keeps exactly as many tokens as EVS would, frame 0 whole,
    the rest uniformly at random. The same (grids, seed) always gives the same scores, on any
    device (drawn on the CPU, then moved).
    """
    grids = normalize_grids(grid_thw, spatial_merge_size)
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for t, h, w in grids:
        out.append(_frame0_inf(torch.rand((t - 1) * h * w, generator=g), h * w))
    return torch.cat(out).to(device) if device is not None else torch.cat(out)


# --------------------------------------------------------------------------------------------
# selection from a dissimilarity vector
# --------------------------------------------------------------------------------------------
def top_k_mask(d: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean ``(N,)`` mask of the ``k`` largest entries of 1-D ``d``; ties go to the lower index.

    The one ranking rule shared by EVS and the STTS selection (a stable descending sort).
    """
    mask = torch.zeros(d.shape[0], dtype=torch.bool, device=d.device)
    if k >= d.shape[0]:
        mask[:] = True
        return mask
    order = torch.argsort(d, descending=True, stable=True)
    mask[order[:k]] = True
    return mask


def select_by_rate(dissimilarity: torch.Tensor, grid_thw: GridLike, spatial_merge_size: int, rate: float) -> torch.Tensor:
    """Rate-mode selection from per-token dissimilarities (``+inf`` or any value on frame 0).

    Each video keeps :func:`retained_count` tokens, the largest d, globally over the video;
    frame 0 is always kept whole (it is forced, whatever the values given for it).
    Returns a bool mask of shape ``(N,)``.
    """
    rate = _check_rate(rate)
    return _select_per_video(dissimilarity, grid_thw, spatial_merge_size,
                             lambda dv, t, h, w: retained_count(h * w, t, rate))


def select_by_threshold(
    dissimilarity: torch.Tensor,
    grid_thw: GridLike,
    spatial_merge_size: int,
    threshold: float,
    min_keep_fraction: float = 0.0,
    max_keep_fraction: float = 1.0,
) -> torch.Tensor:
    """Content-adaptive selection: keep tokens with ``d > threshold``, plus frame 0 whole.

    The kept count per video is then clamped to
    ``[ceil(min_keep_fraction * N_v), floor(max_keep_fraction * N_v)]`` (and never below one
    frame) by taking the largest d, ties to the lower index, so a static clip keeps fewer
    tokens than a busy one but never fewer than the floor. Returns a bool mask ``(N,)``.
    """
    threshold = check_threshold(threshold)
    lo = _check_fraction(min_keep_fraction, "min_keep_fraction")
    hi = _check_fraction(max_keep_fraction, "max_keep_fraction")
    if lo > hi:
        raise ValueError(f"min_keep_fraction ({lo}) must not exceed max_keep_fraction ({hi})")

    def count(dv: torch.Tensor, t: int, h: int, w: int) -> int:
        n, k = dv.shape[0], int((dv > threshold).sum())
        return min(max(k, max(h * w, math.ceil(lo * n))), max(h * w, math.floor(hi * n)))

    return _select_per_video(dissimilarity, grid_thw, spatial_merge_size, count)


def _select_per_video(dissimilarity: torch.Tensor, grid_thw: GridLike, spatial_merge_size: int, count) -> torch.Tensor:
    """Per video, the ``count(d_video, t, h, w)`` tokens of largest d, frame 0 forced in (d = inf)."""
    grids = normalize_grids(grid_thw, spatial_merge_size)
    d = _check_dissimilarity(dissimilarity, grids)
    masks = []
    for (t, h, w), sl in _video_slices(grids):
        dv = d[sl].clone()
        dv[: h * w] = float("inf")
        masks.append(top_k_mask(dv, count(dv, t, h, w)))
    return torch.cat(masks)


def _check_dissimilarity(d: torch.Tensor, grids: list[tuple[int, int, int]]) -> torch.Tensor:
    if not isinstance(d, torch.Tensor) or d.dim() != 1 or not d.is_floating_point():
        raise ValueError("dissimilarity must be a 1-D floating tensor")
    d = d.detach()
    n = sum(t * h * w for t, h, w in grids)
    if d.shape[0] != n:
        raise ValueError(f"dissimilarity has {d.shape[0]} entries but grid_thw implies {n} tokens")
    if bool(torch.isnan(d).any()):
        raise ValueError("dissimilarity contains NaN")
    return d


# --------------------------------------------------------------------------------------------
# one-call entry points
# --------------------------------------------------------------------------------------------
def retention_mask(features: torch.Tensor, grid_thw: GridLike, spatial_merge_size: int, rate: float) -> torch.Tensor:
    """EVS rate mode on embeddings: bool mask ``(N,)`` of the tokens to keep.

    Token for token the selection of methods.md §1.1 (vLLM ``--video-pruning-rate``): per video,
    ``max(H'W', int(T'H'W' (1 - rate)))`` tokens of largest ``1 - cos`` to the previous
    temporal slice, chosen globally, frame 0 whole, ties to the lower raster index. Several
    videos may be concatenated in ``features`` with ``grid_thw`` of shape ``(V, 3)``; each is
    selected independently. ``rate`` must be in [0, 1).
    """
    _check_rate(rate)
    d = embedding_dissimilarity(features, grid_thw, spatial_merge_size)
    return select_by_rate(d, grid_thw, spatial_merge_size, rate)


def threshold_mask(features: torch.Tensor, grid_thw: GridLike, spatial_merge_size: int, threshold: float,
                   min_keep_fraction: float = 0.0, max_keep_fraction: float = 1.0) -> torch.Tensor:
    """EVS threshold mode on embeddings; see :func:`select_by_threshold`. ``threshold`` >= 0."""
    check_threshold(threshold)
    d = embedding_dissimilarity(features, grid_thw, spatial_merge_size)
    return select_by_threshold(d, grid_thw, spatial_merge_size, threshold, min_keep_fraction, max_keep_fraction)


def pixel_retention_mask(
    pixel_values: torch.Tensor,
    grid_thw: GridLike,
    spatial_merge_size: int,
    rate: float | None = None,
    threshold: float | None = None,
    min_keep_fraction: float = 0.0,
    max_keep_fraction: float = 1.0,
) -> torch.Tensor:
    """EVS on raw patchified pixels, one decision per LLM token; give exactly one of rate/threshold."""
    if (rate is None) == (threshold is None):
        raise ValueError("give exactly one of rate or threshold")
    if rate is not None:
        _check_rate(rate)
    else:
        check_threshold(threshold)
    d = pixel_dissimilarity(pixel_values, grid_thw, spatial_merge_size)
    if rate is not None:
        return select_by_rate(d, grid_thw, spatial_merge_size, rate)
    return select_by_threshold(d, grid_thw, spatial_merge_size, threshold, min_keep_fraction, max_keep_fraction)
