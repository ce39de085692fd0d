"""The benchmark results files and ``make bench-report``: what the harness writes is what the report reads."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.units

# The installed-wheel run copies tests/ alone, without the benchmarks (they are not in the wheel).
harness = pytest.importorskip("benchmarks.harness", reason="the benchmarks are not beside these tests")
report = pytest.importorskip("benchmarks.report", reason="the benchmarks are not beside these tests")


def results_file(folder: Path, name: str, *, smoke: bool = False) -> Path:
    """Run two comparisons and a figure through the harness and write its file as a script would."""
    harness._results.clear()
    rounds = iter([10.0, 20.0, 30.0, 40.0])
    harness.compare(
        "faster than the peer", lambda: 200.0, lambda: 100.0, rounds=3, key="fast", target=1.5, ours_name="us"
    )
    harness.compare(
        "slower than the peer (lower is better)",
        lambda: next(rounds, 50.0),
        lambda: 5.0,
        rounds=3,
        unit="µs",
        higher_is_better=False,
        key="slow",
        target=1.0,
        peer_name="them | pipes",
    )
    harness.record("decision", 1.2, "µs", higher_is_better=False, target=1.5)
    document = {"benchmark": name, "smoke": smoke, "machine": {"cores": 2}, "results": list(harness._results)}
    harness._results.clear()
    path = folder / f"{name}.json"
    path.write_text(json.dumps(document))
    return path


def test_report_tables_targets_and_charts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results, images, page = tmp_path / "results", tmp_path / "images", tmp_path / "benchmarks.md"
    results.mkdir()
    results_file(results, "bench_alpha")
    results_file(results, "bench_smoke_only", smoke=True)
    assert report.main(["--results", str(results), "--output", str(page), "--images", str(images)]) == 0
    text = page.read_text()
    assert "## bench_alpha" in text and "bench_smoke_only" not in text
    rows = [line for line in text.splitlines() if line.startswith("| faster") or line.startswith("| slower")]
    assert len(rows) == 2
    assert "2.00x" in rows[0] and "1.50x met" in rows[0]
    # Ours took 20 µs (median of 10, 20, 30) against 5: a quarter as good, the target missed.
    assert "0.25x" in rows[1] and "**missed**" in rows[1]
    assert "them \\| pipes" in rows[1], "a pipe in a name must not break the table"
    assert "| decision | 1.20 | µs | 1.50 met |" in text
    charts = sorted(path.name for path in images.iterdir())
    assert charts == ["bench_alpha.png", "headline.png"]
    assert all((images / name).read_bytes().startswith(b"\x89PNG") for name in charts)


def test_report_before_column_matches_by_key(tmp_path: Path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    after.mkdir()
    earlier = results_file(before, "bench_alpha")
    document = json.loads(earlier.read_text())
    document["results"][0]["as_good"] = 1.25
    earlier.write_text(json.dumps(document))
    results_file(after, "bench_alpha")
    page = tmp_path / "page.md"
    arguments = ["--results", str(after), "--baseline", str(before), "--output", str(page)]
    label = ["--baseline-label", "the code of last week, same machine"]
    assert report.main([*arguments, *label, "--images", str(tmp_path / "images")]) == 0
    row = next(line for line in page.read_text().splitlines() if line.startswith("| faster"))
    assert "| 1.25x | 2.00x |" in row
    assert "**before**: the code of last week, same machine" in page.read_text()


def test_report_refuses_what_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert report.main(["--results", str(empty), "--output", str(tmp_path / "x.md")]) == 2
    assert "run `make bench` first" in capsys.readouterr().err
    (empty / "bench_broken.json").write_text("{not json")
    assert report.main(["--results", str(empty), "--output", str(tmp_path / "x.md")]) == 2
    assert "bench_broken.json is not JSON" in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


def test_smoke_mode_runs_one_round_and_writes_aside(tmp_path: Path) -> None:
    script = (
        "import sys; sys.argv[0] = 'bench_tiny.py'\n"
        "from benchmarks import harness\n"
        "harness.RESULTS_DIR = __import__('pathlib').Path(sys.argv[1])\n"
        "calls = []\n"
        "harness.compare('t', lambda: calls.append(1) or 2.0, lambda: 1.0, rounds=9, key='t', target=5.0)\n"
        "assert len(calls) == 1, calls\n"
        "assert harness.sized(1000, 3) == 3\n"
    )
    env = {"SCALEOPS_BENCH_SMOKE": "1", "PATH": "/usr/bin:/bin"}
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=root, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "target" not in done.stdout.split("ratio", 1)[1], "smoke mode judges no figure"
    written = json.loads((tmp_path / "smoke" / "bench_tiny.json").read_text())
    assert written["smoke"] is True and written["results"][0]["rounds"] == 1


def test_paired_interval_follows_the_rounds_and_marks_a_target_inside_it(tmp_path: Path) -> None:
    # Each round's factor is ours / the same round's peer: a peer that slows down with ours (the
    # machine's load) leaves the factor alone, while unpaired medians would not.
    ours, peer = [10.0, 30.0, 20.0, 40.0, 50.0], [10.0, 10.0, 10.0, 10.0, 10.0]
    low, high = harness.paired_interval(ours, peer)
    assert 1.0 <= low < 3.0 < high <= 5.0
    assert harness.paired_interval([20.0, 40.0, 80.0], [10.0, 20.0, 40.0]) == (2.0, 2.0)
    assert harness.paired_interval([5.0, 5.0], [10.0, 10.0], higher_is_better=False) == (2.0, 2.0)
    assert harness.paired_interval(ours, peer) == (low, high), "the resampling is seeded"
    # A round with nothing on one side has no factor: no interval rather than one of the others.
    assert all(map(math.isnan, harness.paired_interval([30.0, 40.0], [0.0, 10.0])))

    harness._results.clear()
    figures = iter(ours)
    harness.compare("noisy", lambda: next(figures), lambda: 10.0, rounds=5, key="noisy", target=3.5)
    (result,) = harness._results
    harness._results.clear()
    assert result["as_good"] == 3.0 and result["as_good_interval"] == [low, high]
    document = {"benchmark": "bench_noisy", "smoke": False, "machine": {"cores": 2}, "results": [result]}
    results = tmp_path / "results"
    results.mkdir()
    (results / "bench_noisy.json").write_text(json.dumps(document))
    page = tmp_path / "page.md"
    assert report.main(["--results", str(results), "--output", str(page), "--images", str(tmp_path / "i")]) == 0
    row = next(line for line in page.read_text().splitlines() if line.startswith("| noisy"))
    assert f"3.00x ({low:.2f}-{high:.2f})" in row
    assert "**missed** (within the run's noise)" in row


def test_interleaved_rounds_take_turns_request_by_request() -> None:
    """Each side answers the median of its own requests, sent in turn (A B, B A, ...), and the
    round runs once whichever side compare() asks first."""
    calls: list[str] = []

    class Side:
        def __init__(self, name: str, figures: list[float]) -> None:
            self.name, self.figures = name, iter(figures)

        def round(self, count: int) -> float:
            assert count == 1
            calls.append(self.name)
            return next(self.figures)

    first = Side("a", [1.0, 9.0, 3.0, 2.0, 5.0, 7.0, 4.0, 8.0])
    second = Side("b", [10.0, 30.0, 20.0, 90.0, 40.0, 60.0, 50.0, 70.0])
    run_first, run_second = harness.interleaved(lambda: first.round(1), lambda: second.round(1), 4)
    assert run_second() == 25.0  # median of 10, 30, 20, 90
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert run_first() == 2.5  # median of 1, 9, 3, 2: no further request
    assert len(calls) == 8
    assert run_first() == 6.0  # the next round: 5, 7, 4, 8
    assert len(calls) == 16 and run_second() == 55.0
    # In compare(), the factor is taken from the interleaved halves, round by round.
    harness._results.clear()
    first = Side("a", [2.0] * 8)
    second = Side("b", [4.0] * 8)
    ours, peer = harness.interleaved(lambda: first.round(1), lambda: second.round(1), 2)
    assert harness.compare("turns", ours, peer, rounds=2, higher_is_better=False) == 0.5
    # A rate's summary: the harmonic mean of per-request rates is the round's throughput.
    rates = iter([1.0, 4.0, 1.0, 4.0])
    ours, peer = harness.interleaved(lambda: next(rates), lambda: next(rates), 2, statistics.harmonic_mean)
    assert ours() == pytest.approx(1.6) and peer() == pytest.approx(1.6)  # 2 requests in 1 + 0.25 s
    harness._results.clear()
