"""Markdown for a benchmark run: machine, throughput, latency, memory, micro-benchmarks, targets.

The output is meant to be pasted into bench/RESULTS.md as it is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.runner import Results

# The targets on a 2-core machine.
RATIO_1_ORDER = 0.70
RATIO_10_ORDERS = 0.50
P99_10_ORDERS_MS = 20.0
P99_100_ORDERS_MS = 60.0
RSS_LIMIT_MB = 120.0
# "Flat": a worker grows by less than this between warm-up and the end of the soak.
RSS_GROWTH_LIMIT = 0.03
# Matching: the marginal cost per coding at 1000 codings within this factor of that at 100;
# the cost with 100x the policy codes within this factor of the cost with the real policy.
LINEARITY_TOLERANCE = 1.5
CODE_COUNT_TOLERANCE = 1.25


def summarise_micro(path: Path) -> dict[str, dict[str, float]]:
    """``{group: {benchmark name: median seconds}}`` from a ``--benchmark-json`` file."""
    report = json.loads(path.read_text(encoding="utf-8"))
    groups: dict[str, dict[str, float]] = {}
    for bench in report["benchmarks"]:
        groups.setdefault(bench["group"] or "", {})[bench["name"]] = bench["stats"]["median"]
    return groups


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _latency(result: dict[str, object]) -> str:
    text = f"{result['p50_ms']:.1f} / {result['p95_ms']:.1f} / {result['p99_ms']:.1f}"
    errors = result.get("errors") or {}
    if errors:
        text += " (" + ", ".join(f"{count} {kind}" for kind, count in dict(errors).items()) + ")"  # type: ignore[call-overload]
    return text


def _param(name: str) -> int:
    match = re.search(r"\[(\d+)\]$", name)
    return int(match.group(1)) if match else 0


def _scaling(micro: dict[str, dict[str, float]]) -> tuple[list[str], dict[str, tuple[str, bool]]]:
    lines: list[str] = []
    checks: dict[str, tuple[str, bool]] = {}
    codings = sorted((_param(name), median) for name, median in micro.get("codings", {}).items())
    if len(codings) >= 3:
        base_n, base_t = codings[0]
        rows = []
        marginal: dict[int, float] = {}
        for n, t in codings:
            if n > base_n:
                marginal[n] = (t - base_t) / (n - base_n)
            rows.append(
                (n, f"{t * 1e6:.1f}", f"{t / n * 1e6:.2f}", f"{marginal[n] * 1e6:.2f}" if n in marginal else "-")
            )
        lines += ["", "Matching one order with N codings (linear: the marginal cost per coding stays put):", ""]
        lines += _table(["Codings", "Median µs", "µs per coding", f"Marginal µs per coding above {base_n}"], rows)
        top, mid = codings[-1][0], codings[-2][0]
        ratio = marginal[top] / marginal[mid]
        checks["Matching cost linear in codings"] = (
            f"marginal cost per coding at {top} / at {mid}: {ratio:.2f}",
            1 / LINEARITY_TOLERANCE <= ratio <= LINEARITY_TOLERANCE,
        )
    codes = sorted((_param(name), median) for name, median in micro.get("policy-codes", {}).items())
    if len(codes) >= 2:
        base = codes[0][1]
        lines += ["", "Matching a 10-coding order against policies listing more codes (independent of the count):", ""]
        lines += _table(
            ["Policy codes", "Median µs", "vs real policy"],
            [(f"{m}x", f"{t * 1e6:.1f}", f"{t / base:.2f}") for m, t in codes],
        )
        worst = max(t for _, t in codes) / base
        checks["Matching cost independent of policy codes"] = (
            f"{codes[-1][0]}x codes / 1x: {codes[-1][1] / base:.2f} (worst {worst:.2f})",
            worst <= CODE_COUNT_TOLERANCE,
        )
    return lines, checks


def render(results: Results) -> str:
    plan = results.plan
    lines = ["### Machine", ""]
    lines += _table(["", ""], results.machine.items())

    lines += [
        "",
        f"### Throughput at saturation (wrk, 1 thread, 8 connections; {plan.slices} slices of {plan.slice_s} s each)",
        "",
        "*repeat*: the same request again and again, as an EHR re-sends unchanged draft orders; "
        "*fresh*: every order in every request new to the service. req/s: median of the slices; "
        "ratio: median of the slice-by-slice ratios to the baseline (lowest-highest).",
        "",
    ]
    rows = []
    for name, run in results.payloads.items():
        repeat, fresh = run.ratio("service"), run.ratio("service-fresh")
        rows.append(
            (
                name,
                f"{run.rps('baseline'):,.0f}",
                f"{run.rps('service'):,.0f}",
                f"**{repeat[0]:.0%}** ({repeat[1]:.0%}-{repeat[2]:.0%})",
                f"{run.rps('service-fresh'):,.0f}",
                f"{fresh[0]:.0%} ({fresh[1]:.0%}-{fresh[2]:.0%})",
                run.failures(),
            )
        )
    lines += _table(
        [
            "Payload",
            "Baseline req/s",
            "Service req/s",
            "Service / baseline",
            "Fresh req/s",
            "Fresh / baseline",
            "Errors",
        ],
        rows,
    )

    lines += [
        "",
        "### CPU time per request at saturation (median of the slices)",
        "",
        "User + system time of the two workers, then of workers and wrk together, in µs per request. "
        "Other processes on a shared machine move req/s a lot and CPU per request little, so "
        "*CPU ratio* (baseline total / service total) estimates the throughput ratio a quiet "
        "machine would give.",
        "",
    ]
    cpu_rows = []
    for name, run in results.payloads.items():
        base, service, fresh = run.cpu_us("baseline"), run.cpu_us("service"), run.cpu_us("service-fresh")
        cpu_rows.append(
            (
                name,
                f"{base[0]:,.0f} / {base[1]:,.0f}",
                f"{service[0]:,.0f} / {service[1]:,.0f}",
                f"**{base[1] / service[1]:.0%}**",
                f"{fresh[0]:,.0f} / {fresh[1]:,.0f}",
                f"{base[1] / fresh[1]:.0%}",
            )
        )
    lines += _table(["Payload", "Baseline", "Service", "CPU ratio", "Fresh", "Fresh CPU ratio"], cpu_rows)

    lines += [
        "",
        f"### Latency at {plan.rate:g} req/s offered (open loop, {plan.latency_s:g} s, from the scheduled send time)",
        "",
        "p50 / p95 / p99 in ms.",
        "",
    ]
    lines += _table(
        ["Payload", "Baseline", "Service", "Service, fresh orders"],
        [
            (
                name,
                _latency(run.latency["baseline"]),
                _latency(run.latency["service"]),
                _latency(run.latency["service-fresh"]),
            )
            for name, run in results.payloads.items()
        ],
    )

    lines += ["", "### Service worker memory (2 gunicorn sync workers)", ""]
    lines += _table(
        ["When", "Requests served", "RSS MB (per worker)", "USS MB (per worker)"],
        [
            (
                when,
                f"{served:,}",
                " / ".join(f"{rss:.1f}" for rss, _ in workers),
                " / ".join(f"{uss:.1f}" for _, uss in workers),
            )
            for when, served, workers in results.memory
        ],
    )

    checks: dict[str, tuple[str, bool]] = {}
    if results.micro:
        lines += ["", "### Micro-benchmarks (pytest-benchmark, median)", ""]
        lines += _table(
            ["Group", "Benchmark", "Median µs"],
            [
                (group, name.removeprefix("test_"), f"{median * 1e6:,.1f}")
                for group, by in results.micro.items()
                if group not in {"codings", "policy-codes"}
                for name, median in by.items()
            ],
        )
        scaling, checks = _scaling(results.micro)
        lines += scaling

    lines += ["", "### Targets", ""]
    lines += _table(["Target", "Measured", "Met"], _targets(results, checks))
    return "\n".join(lines) + "\n"


def _targets(results: Results, checks: dict[str, tuple[str, bool]]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, bool]] = []
    for names, limit in ((("sign-1", "sign-1-ire"), RATIO_1_ORDER), (("sign-10", "sign-10-ire"), RATIO_10_ORDERS)):
        for name in names:
            if name in results.payloads:
                run = results.payloads[name]
                ratio = run.ratio("service")[0]
                cpu_ratio = run.cpu_us("baseline")[1] / run.cpu_us("service")[1]
                measured = f"{ratio:.0%} (CPU ratio {cpu_ratio:.0%})"
                rows.append((f"{name}: service >= {limit:.0%} of baseline", measured, ratio >= limit))
    for names, limit in (
        (("sign-10", "sign-10-ire"), P99_10_ORDERS_MS),
        (("sign-100", "sign-100-ire"), P99_100_ORDERS_MS),
    ):
        for name in names:
            if name in results.payloads:
                result = results.payloads[name].latency["service"]
                p99 = float(result["p99_ms"])  # type: ignore[arg-type]
                clean = not result.get("errors") and not math.isnan(p99)
                rows.append(
                    (
                        f"{name}: p99 at {results.plan.rate:g} req/s < {limit:g} ms",
                        f"{p99:.1f} ms",
                        clean and p99 < limit,
                    )
                )
    if results.memory:
        peak = max(rss for _, _, workers in results.memory for rss, _ in workers)
        rows.append((f"Worker RSS < {RSS_LIMIT_MB:g} MB", f"peak {peak:.1f} MB", peak < RSS_LIMIT_MB))
        warm = next((w for when, _, w in results.memory if when == "after warm-up"), results.memory[0][2])
        soaked = next((w for when, _, w in results.memory if when.startswith("after ") and "requests" in when), None)
        if soaked:
            growth = max(end[0] / start[0] - 1 for start, end in zip(warm, soaked, strict=False))
            rows.append(
                (
                    f"Worker RSS flat (< {RSS_GROWTH_LIMIT:.0%} growth after warm-up)",
                    f"{growth:+.1%}",
                    growth < RSS_GROWTH_LIMIT,
                )
            )
    rows += [(name, measured, ok) for name, (measured, ok) in checks.items()]
    return [(name, measured, "yes" if ok else "**no**") for name, measured, ok in rows]
