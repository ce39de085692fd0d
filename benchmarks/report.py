"""Turn the latest benchmark results into a Markdown page and charts: ``make bench-report``.

Reads ``benchmarks/results/bench_*.json`` (what ``make bench`` wrote) and writes
``docs/benchmarks.md`` (one table per benchmark: ours, the peer, the "as good" factor and its
target) and ``docs/images/benchmarks/<benchmark>.png`` (the factors as bars, the targets as marks).
The headline is the ratio, never the absolute time: absolute figures depend on the machine, the
ratio of two configurations measured in alternating rounds of one run much less.

``--baseline DIR`` adds the factors of an earlier run (another checkout's ``benchmarks/results``)
as a "before" column, matched by each comparison's key.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "benchmarks.md"
IMAGES = ROOT / "docs" / "images" / "benchmarks"


class ReportError(Exception):
    """The results cannot be reported (none yet, or a file that is not a results file)."""


def load(folder: Path) -> list[dict[str, Any]]:
    """Every results file of ``folder``, in name order; smoke runs are never reported."""
    documents = []
    for path in sorted(folder.glob("bench_*.json")):
        try:
            document = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path.name} is not JSON: {exc}") from exc
        if not isinstance(document, dict) or "results" not in document:
            raise ReportError(f"{path.name} is not a benchmark results file (no 'results')")
        if document.get("smoke"):
            continue
        documents.append(document)
    return documents


def comparisons(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [result for result in document["results"] if result.get("kind") == "comparison"]


def baseline_factors(folder: Path | None) -> dict[str, float]:
    if folder is None:
        return {}
    return {
        f"{document['benchmark']}:{result['key']}": result["as_good"]
        for document in load(folder)
        for result in comparisons(document)
    }


def number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def verdict(result: dict[str, Any]) -> str:
    target = result.get("target")
    if target is None:
        return ""
    text = f"{target:.2f}x {'met' if result['as_good'] >= target else '**missed**'}"
    low, high = result.get("as_good_interval") or (math.nan, math.nan)
    if low <= target <= high:
        text += " (within the run's noise)"
    return text


def factor_text(result: dict[str, Any]) -> str:
    """The "as good" factor and, when the results have it, the round-by-round interval."""
    low, high = result.get("as_good_interval") or (math.nan, math.nan)
    if math.isfinite(low) and math.isfinite(high) and low != high:
        return f"{result['as_good']:.2f}x ({low:.2f}-{high:.2f})"
    return f"{result['as_good']:.2f}x"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def colour(result: dict[str, Any]) -> str:
    """Green: target met; red: missed; grey: a comparison with no target (context, a ceiling)."""
    if result.get("target") is None:
        return "#78909c"
    return "#2e7d32" if result["as_good"] >= result["target"] else "#c62828"


def chart(document: dict[str, Any], path: Path) -> bool:
    """A horizontal bar per comparison: the "as good" factor, 1.0 (the peer) and the target marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = comparisons(document)
    if not results:
        return False
    labels = [f"{r['ours_name']} vs {r['peer_name']}" for r in results]
    factors = [r["as_good"] if math.isfinite(r["as_good"]) else 0.0 for r in results]
    height = 0.9 + 0.42 * len(results)
    figure, axes = plt.subplots(figsize=(8.5, height), dpi=110)
    rows = range(len(results))
    colours = [colour(result) for result in results]
    axes.barh(list(rows), factors, color=colours, height=0.6)
    for row, result in zip(rows, results, strict=True):
        if result.get("target") is not None:
            axes.plot([result["target"]] * 2, [row - 0.38, row + 0.38], color="black", linewidth=2)
        axes.text(factors[row], row, f" {factors[row]:.2f}x", va="center", fontsize=8)
    axes.axvline(1.0, color="#555555", linestyle="--", linewidth=1)
    axes.set_yticks(list(rows), [label[:70] for label in labels], fontsize=8)
    axes.invert_yaxis()
    axes.set_xscale("log")
    axes.set_xlabel("how many times as good as the peer (log scale; dashed: the peer, black: the target)", fontsize=8)
    axes.set_title(document["benchmark"], fontsize=10)
    axes.set_xlim(
        min(0.5, min(f for f in factors if f > 0) * 0.8 if any(factors) else 0.5), max(2.0, max(factors) * 1.6)
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # No timestamp in the file: a re-run with the same figures writes the same bytes.
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
    return True


def markdown(
    documents: list[dict[str, Any]], before: dict[str, float], images: dict[str, str], before_label: str = ""
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench-report` from the JSON that `make bench` writes to `benchmarks/results/`;",
        "do not edit by hand. Each row is ours against the peer a user would otherwise pick, measured in",
        "alternating rounds of one run; **as good** is how many times as good as the peer ours is (above 1:",
        "better), whichever way the unit points; in brackets, a 90% bootstrap interval of the median of the",
        "rounds' own factors (each round's ours against the same round's peer): where a target lies inside",
        'it, this run cannot tell met from missed. Rows that say "each side in turn" take the two',
        "configurations' requests one at a time in turn within each round, so the machine's drift moves",
        "both alike. Absolute figures depend on the machine; the factor much less. See [the benchmarks'",
        "own docstrings](../benchmarks/) for what each one measures.",
        "",
    ]
    if before and before_label:
        lines += [f"**before**: {before_label}", ""]
    if "headline" in images:
        lines += [f"![every comparison with a target]({images['headline']})", ""]
    for document in documents:
        facts = document.get("machine", {})
        machine = ", ".join(
            f"{name} {facts[name]}" for name in ("python", "django", "postgresql", "redis") if facts.get(name)
        )
        lines += [
            f"## {document['benchmark']}",
            "",
            f"{facts.get('cores', '?')} cores; {machine}; finished {document.get('finished', '?')}.",
            "",
        ]
        if document["benchmark"] in images:
            lines += [f"![{document['benchmark']}]({images[document['benchmark']]})", ""]
        header = "| comparison | ours | peer | unit | as good | target |"
        rule = "|---|---:|---:|---|---:|---|"
        if before:
            header = "| comparison | ours | peer | unit | before | as good | target |"
            rule = "|---|---:|---:|---|---:|---:|---|"
        rows = []
        for result in comparisons(document):
            ours = f"{number(result['ours']['median'])} ({cell(result['ours_name'])})"
            peer = f"{number(result['peer']['median'])} ({cell(result['peer_name'])})"
            factor = factor_text(result)
            columns = [cell(result["title"]), ours, peer, result["unit"]]
            if before:
                earlier = before.get(f"{document['benchmark']}:{result['key']}")
                columns.append("" if earlier is None else f"{earlier:.2f}x")
            columns += [factor, verdict(result)]
            rows.append("| " + " | ".join(columns) + " |")
        figures = [r for r in document["results"] if r.get("kind") == "figure"]
        if rows:
            lines += [header, rule, *rows, ""]
        if figures:
            lines += ["| figure | value | unit | target |", "|---|---:|---|---|"]
            for figure in figures:
                target = figure.get("target")
                mark = ""
                if target is not None:
                    good = (
                        figure["value"] >= target if figure.get("higher_is_better", True) else figure["value"] <= target
                    )
                    mark = f"{number(target)} {'met' if good else '**missed**'}"
                lines.append(f"| {cell(figure['title'])} | {number(figure['value'])} | {figure['unit']} | {mark} |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results folder (default: %(default)s)")
    parser.add_argument("--baseline", type=Path, help="an earlier run's results folder, shown as 'before'")
    parser.add_argument("--baseline-label", default="", help="what the 'before' run was, said above the tables")
    parser.add_argument("--output", type=Path, default=PAGE, help="the Markdown page to write")
    parser.add_argument("--images", type=Path, default=IMAGES, help="the folder for the charts")
    args = parser.parse_args(argv)
    try:
        documents = load(args.results)
        before = baseline_factors(args.baseline)
    except ReportError as exc:
        print(f"bench-report: {exc}", file=sys.stderr)
        return 2
    if not documents:
        print(f"bench-report: no results in {args.results}: run `make bench` first", file=sys.stderr)
        return 2
    images = {}
    headline = {
        "benchmark": "headline: every comparison with a target",
        "results": [
            {**result, "ours_name": f"{document['benchmark'][6:]}: {result['ours_name']}"}
            for document in documents
            for result in comparisons(document)
            if result.get("target") is not None
        ],
    }
    if chart(headline, args.images / "headline.png"):
        images["headline"] = Path("images") / "benchmarks" / "headline.png"
    for document in documents:
        path = args.images / f"{document['benchmark']}.png"
        if chart(document, path):
            images[document["benchmark"]] = Path("images") / "benchmarks" / path.name
    page = markdown(documents, before, {k: str(v) for k, v in images.items()}, args.baseline_label)
    args.output.write_text(page + "\n")
    print(f"bench-report: {len(documents)} benchmarks -> {args.output} and {len(images)} charts in {args.images}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
