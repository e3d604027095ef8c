"""The load-test suite's report as markdown: verdicts, ceilings, a summary, every sweep.

Why this module exists: `bench.suite` writes its findings as JSON; this turns
that JSON (from the current run or a saved one) into the tables that go to
stdout, `bench/results/sweep.md` and docs/performance.md, so a saved run can
be re-rendered without re-measuring:

    python -m bench.report bench/results/sweep.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.sweep import Step, Sweep, render_sweep


def render(report: dict[str, Any]) -> str:
    m, load = report["machine"], report["outside_load"]
    label = "quiet machine" if load["quiet"] else "LOADED MACHINE: req/s are not capacity"
    lines = [
        f"Suite run {report['started']} at commit {m['commit']}: {m['cores']} cores "
        f"({m['cpu']}), {m['os']}, Python {m['python']}, grpcio {m['grpcio']}; "
        f"{report['workers']} workers; steps of {report['step']['duration_s']:g} s after "
        f"{report['step']['warmup_s']:g} s warm-up; `{report['command']}`.",
        "",
        f"Outside load (cores used by other processes, per window): median "
        f"{load['median_cores']:.2f}, max {load['max_cores']:.2f} over {load['windows']} "
        f"windows; load average at start {m['loadavg_at_start']} - **{label}**.",
        "",
        "| check | measured | ceiling | ratio | CPU ratio | target | verdict |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for v in report["verdicts"]:
        times = "worker" in v["scenario"]
        ratio = "" if v["ratio"] is None else f"{v['ratio']:.2f}x" if times else f"{v['ratio']:.0%}"
        target = f"{v['target']:.0%}" if v["target"] < 1.5 else f"< {v['target']:g} ms"
        if times:
            target = f"{v['target']:.2f}x"
        value = "-" if v["value"] is None else f"{v['value']:.1f}"
        cpu_ratio = "" if v.get("cpu_ratio") is None else f"{v['cpu_ratio']:.0%}"
        ceiling = "-" if v["ceiling"] is None else f"{v['ceiling']:.1f}"
        lines.append(
            f"| {v['scenario']} | {value} | {ceiling} ({v['ceiling_name']}) | {ratio} "
            f"| {cpu_ratio} | {target} | {v['verdict']} |"
        )
    c = report.get("ceilings")
    pk = c["asyncpg_pk_lookups"] if c else {}
    lines += (
        []
        if not c
        else [
            "",
            f"Ceilings: argon2id m={c['argon2']['memory_kib']} KiB t={c['argon2']['time_cost']} "
            f"p={c['argon2']['parallelism']}, {c['argon2']['processes']} processes x "
            f"{c['argon2']['threads']} threads: {c['argon2']['rps']:.1f}/s (one verify "
            f"{c['argon2']['single_ms']:.1f} ms); echo peak {c['echo_peak_rps'] or 0:.0f}/s; "
            f"asyncpg pk lookups ({pk['connections']} connections, "
            f"{pk['processes']} processes) {pk['rps']:.0f}/s;"
            f" PyJWT {c['pyjwt']['alg']} per process: verify {c['pyjwt']['verify_per_s']:.0f}/s, "
            f"sign {c['pyjwt']['sign_per_s']:.0f}/s; relying app (PyJWKClient, "
            f"{c['relying_app']['jwks_http_fetches']} JWKS fetch): "
            f"{c['relying_app']['pyjwkclient_per_s']:.0f}/s vs raw decode "
            f"{c['relying_app']['raw_decode_per_s']:.0f}/s "
            f"(get_signing_key_from_jwt on every call: "
            f"{c['relying_app'].get('pyjwkclient_uncached_per_s', 0):.0f}/s).",
        ]
    )
    if "scaling" in report:
        s = report["scaling"]
        lines += [
            "",
            f"Scaling (ValidateToken peak): {s['peak_rps']['n_workers'] or 0:.0f}/s with "
            f"{s['workers']} workers, {s['peak_rps']['one_worker'] or 0:.0f}/s with 1; server CPU "
            f"per call {_num(s['server_cpu_ms_per_call']['n_workers'])} / "
            f"{_num(s['server_cpu_ms_per_call']['one_worker'])} ms; ghz used "
            f"{s['generator_cores_at_peak']['n_workers']} / "
            f"{s['generator_cores_at_peak']['one_worker']} cores at the peaks (same "
            f"{m['cores']} cores).",
        ]
    lines += ["", *summary(report["sweeps"])]
    for sw in report["sweeps"]:
        lines += ["", *render_sweep(_sweep_from(sw))]
    lines += ["", f"Total {report['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def summary(sweeps: list[dict[str, Any]]) -> list[str]:
    """One line per scenario: its saturation point, its peak, the load beside it."""
    lines = [
        "| scenario | generator | saturation (in flight) | req/s there | p50 / p95 / p99 ms "
        "there | peak req/s (in flight) | worst error rate | server CPU ms/call at peak "
        "| others, median cores |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for data in sweeps:
        sw = _sweep_from(data)
        at, peak = sw.at_saturation, sw.peak
        if peak is None:
            continue
        shown = at or peak
        others = [s.other_cores for s in sw.steps if s.other_cores is not None]
        lat = " / ".join(_num(v, 1) for v in (shown.p50_ms, shown.p95_ms, shown.p99_ms))
        lines.append(
            f"| {sw.scenario} | {sw.generator} | {sw.saturation or 'none'} "
            f"| {shown.rps:.1f} | {lat} | {peak.rps:.1f} ({peak.concurrency}) "
            f"| {max(s.error_rate for s in sw.steps):.1%} "
            f"| {_num(peak.server_cpu_ms_per_call)} "
            f"| {statistics.median(others) if others else 0:.2f} |"
        )
    return lines


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _sweep_from(data: dict[str, Any]) -> Sweep:
    sweep = Sweep(data["scenario"], data["generator"], data["latency_budget_ms"])
    sweep.steps = [Step(**s) for s in data["steps"]]
    sweep.saturation, sweep.saturation_reason = data["saturation"], data["saturation_reason"]
    return sweep


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/sweep.json")
    print(render(json.loads(source.read_text())), end="")
