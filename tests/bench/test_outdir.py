"""Default benchmark outputs go to a folder no earlier run used."""

from __future__ import annotations

from videoprune.bench.outdir import fresh_dir

NOON = 1_800_000_000.0  # a fixed clock: every call below falls in the same second


def test_fresh_dir_is_named_after_the_bench_and_the_time(tmp_path):
    """fresh_dir creates ROOT/<bench>-YYYYmmdd-HHMMSS, stamped with the local time, directly under the given root."""
    import time

    path = fresh_dir("speed", tmp_path, now=NOON)
    assert path.is_dir() and path.parent == tmp_path
    assert path.name == "speed-" + time.strftime("%Y%m%d-%H%M%S", time.localtime(NOON))


def test_fresh_dir_never_returns_an_existing_folder(tmp_path):
    """Runs within one second get -2, -3, ...; a folder left there is never reused."""
    paths = [fresh_dir("accuracy", tmp_path, now=NOON) for _ in range(3)]
    assert len(set(paths)) == 3
    assert [p.name.rsplit("-", 1)[-1] for p in paths[1:]] == ["2", "3"]
    (paths[0] / "accuracy.json").write_text("{}")
    assert fresh_dir("accuracy", tmp_path, now=NOON) not in paths
