"""The gate report as Markdown (for people and MLflow) and as a terminal verdict table, with
every rejection explained: which gates failed and how far each was from passing, in the terms a
user acts on (e.g. "training Sharpe 2.40 a year; with N_eff = 37 trials the deflated bar is
2.61")."""

from __future__ import annotations

import math

from core.jsonio import float_of_json
from gates.policy import GATES

_SHORT = {"oos_sharpe": "OOS SR", "dsr": "DSR", "pbo": "PBO", "familywise": "FW p",
          "trades_per_year": "trades/yr", "oos_max_drawdown": "OOS DD",
          "holdout_sharpe": "HO SR", "holdout_drawdown": "HO DD/OOS DD", "lookahead": "look-ahead"}


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1e4 else f"{v:.3g}"
    return str(v)


def _cell(g: dict) -> str:
    mark = "pass" if g["passed"] else "FAIL"
    if g["name"] == "lookahead":
        return mark
    return f"{_fmt(g['value'])} {mark}"


def shortfall(gate: dict, figures: dict, report: dict) -> str:
    """One failed gate, what the candidate showed and what it would have needed."""
    name, v, t = gate["name"], float_of_json(gate["value"]), gate["threshold"]
    n = report["trial_count"]["effective"]
    if name == "dsr":
        return (f"training Sharpe {float_of_json(figures['training_sharpe']):.2f} a year; with N_eff = "
                f"{n} effectively independent trials (of {report['trials']}) the deflated bar "
                f"is {float_of_json(figures['deflated_bar']):.2f} (DSR {v:.3f} < {t:g})")
    if name == "familywise":
        return (f"OOS family-wise p {v:.3f} over the {len(report['candidates'])} front "
                f"candidates, needs <= {t:g} (its own p alone: {float_of_json(figures['own_p']):.3f})")
    if name == "lookahead":
        return ("the look-ahead audit failed: its decisions change when the future is cut off, "
                "or when the tables continue from a snapshot instead of the origin")
    text = {"oos_sharpe": ("OOS Sharpe", "{:.2f}"), "pbo": ("PBO of the run", "{:.2f}"),
            "trades_per_year": ("OOS trades a year", "{:.1f}"),
            "oos_max_drawdown": ("OOS max drawdown", "{:.1%}"),
            "holdout_sharpe": ("hold-out Sharpe", "{:.2f}"),
            "holdout_drawdown": ("hold-out/OOS drawdown ratio", "{:.2f}")}[name]
    label, fmt = text
    return f"{label} {fmt.format(v)}, needs {gate['op']} {fmt.format(t)}"


def distance(gate: dict) -> float:
    """How far a failed gate was from passing, relative to its threshold (0 when it passed)."""
    if gate["passed"]:
        return 0.0
    v, t = float_of_json(gate["value"]), float(gate["threshold"])
    if gate["name"] == "lookahead" or not math.isfinite(v):
        return math.inf
    return abs(v - t) / max(abs(t), 0.05)


def closest(report: dict) -> dict | None:
    """The rejected candidate nearest to eligible: fewest failed gates, then the smallest
    summed relative distance."""
    rejected = [c for c in report["candidates"] if not c["eligible"]]
    if not rejected:
        return None
    return min(rejected, key=lambda c: (sum(not g["passed"] for g in c["gates"]),
                                        sum(distance(g) for g in c["gates"]), c["rank"]))


def why_rejected(c: dict, report: dict) -> list[str]:
    return [shortfall(g, c["figures"], report) for g in c["gates"] if not g["passed"]]


def holdout_warning(report: dict) -> str | None:
    """Why this pass's hold-out figures may no longer be untouched evidence, if they may not:
    an earlier gate pass of this run, or a backtest, read the same hold-out."""
    seen = []
    if report["holdout_reads"] > 1:
        seen.append(f"{report['holdout_reads'] - 1} earlier gate pass(es) of this run")
    backtests = [r for r in report.get("holdout_reads_elsewhere", [])
                 if str(r.get("by", "")).startswith("backtest")]
    if backtests:
        seen.append(f"{len(backtests)} backtest(s) with --include-holdout (last "
                    f"{backtests[-1].get('time', '?')})")
    if not seen:
        return None
    return ("the hold-out had already been read by " + " and ".join(seen) + "; if the policy "
            "or the strategy was changed after seeing it, its figures are no longer untouched "
            "evidence")


def verdict_table(report: dict) -> str:
    """One line per candidate: each gate's value and verdict, then ELIGIBLE or rejected."""
    names = [name for name, *_ in GATES] + ["lookahead"]
    head = ["#", "key", *(_SHORT[n] for n in names), "verdict"]
    rows = [[str(c["rank"]), c["key"][:10], *(_cell(g) for g in c["gates"]),
             "ELIGIBLE" if c["eligible"] else "rejected"] for c in report["candidates"]]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    p = report["periods"]
    lines.append(
        f"{len(report['eligible'])} eligible of {len(report['candidates'])} | trials "
        f"{report['trials']}, N_eff {report['trial_count']['effective']} | PBO "
        f"{_fmt(report['pbo'])} | OOS {p['oos']['first']}..."
        f"{p['oos']['last']} ({p['oos']['bars']} bars) | hold-out {p['holdout']['first']}..."
        f"{p['holdout']['last']} ({p['holdout']['bars']} bars)")
    if not report["lookahead"]["passed"]:
        lines.append(f"LOOK-AHEAD AUDIT FAILED: {report['lookahead']['error']}")
    near = closest(report) if not report["eligible"] else None
    if near is not None:
        lines.append(f"closest: #{near['rank']} {near['key'][:10]} would have needed: "
                     + "; ".join(why_rejected(near, report)))
    return "\n".join(lines)


def markdown(report: dict) -> str:
    p, pol, tc = report["periods"], report["policy"], report["trial_count"]
    out = [f"# Gate report: run {report['run_id']}", "",
           f"{report['symbol']} {report['timeframe']}, generation {report['generation']} of "
           f"{report['generations']}. **{len(report['eligible'])} eligible of "
           f"{len(report['candidates'])} front candidates.**", "",
           "| period | first | last | bars | used for |", "|---|---|---|---|---|",
           f"| training | {p['training']['first']} | {p['training']['last']} | "
           f"{p['training']['bars']} | evolution's fitness (training folds); DSR |",
           f"| purge | | | {p['purge']['bars']} | dropped between training and OOS |",
           f"| OOS | {p['oos']['first']} | {p['oos']['last']} | {p['oos']['bars']} | last "
           f"walk-forward test window, never seen by evolution: OOS gates, PBO, family-wise test |",
           f"| hold-out | {p['holdout']['first']} | {p['holdout']['last']} | "
           f"{p['holdout']['bars']} | read only here, once per candidate |", "",
           f"The hold-out was read once per candidate by this gate pass. Gate passes that have "
           f"read this run's hold-out so far: **{report['holdout_reads']}**."]
    warning = holdout_warning(report)
    if warning:
        out.append(f"**Warning:** {warning}.")
    others = len(report.get("holdout_reads_elsewhere", []))
    if others:
        out.append(f"Reads of this history's hold-out by other commands so far (gate passes of "
                   f"other runs, backtests; `$EMP_HOME/holdout_reads.json`): {others}.")
    la = report["lookahead"]
    audit = (f"passed ({len(la['cuts'])} random cut points, {la['bars_compared']} bar "
             f"comparisons; continued from {len(la.get('snapshots', []))} snapshots, "
             f"{la.get('continued_compared', 0)} bar comparisons)" if la["passed"]
             else f"**FAILED**: {la['error']}")
    audit += ("; it replays the whole history but only compares decisions, and no figure "
              "above is taken from it")
    out += ["", "## Run-level statistics", "",
            f"- Trials: {report['trials']} distinct genomes evaluated ({tc['flat']} never "
            f"traded). ONC finds {tc['clusters']} cluster(s) of their training-return sketches "
            f"(quality {_fmt(tc['quality'])}); inside them, groups of near-copies (average "
            f"correlation >= 0.71) make **N_eff = {tc['effective']}** effectively independent "
            f"trials. The best of N_eff trials with a true Sharpe of 0 would show "
            f"{tc['expected_max_sharpe_annual']:.2f} a year on the training bars: the DSR's "
            f"benchmark SR0. (Variance of all trials' per-bar Sharpe ratios, for comparison: "
            f"{report['trial_sharpe_variance']:.3e}.)",
            f"- PBO (CSCV, S = {pol['pbo_blocks']}) over the final population's "
            f"{report['population']} distinct genomes on the OOS window: {_fmt(report['pbo'])}",
            f"- Family-wise OOS test: Romano-Wolf step-down p-values over the "
            f"{len(report['candidates'])} front candidates' excess returns against "
            f"{pol['benchmark']}, stationary bootstrap (block {pol['bootstrap']['block_size']}, "
            f"{pol['bootstrap']['reps']} reps, seed {pol['bootstrap']['seed']}); gated at "
            f"{pol['familywise_alpha']}, so the chance that any noise candidate passes it is "
            f"at most {pol['familywise_alpha']}. Each candidate's own p-value is shown too.",
            f"- Look-ahead audit: {audit}", "", "## Verdicts", ""]
    names = [name for name, *_ in GATES] + ["lookahead"]
    out.append("| # | key | " + " | ".join(_SHORT[n] for n in names) + " | verdict |")
    out.append("|---" * (len(names) + 3) + "|")
    for c in report["candidates"]:
        out.append(f"| {c['rank']} | `{c['key']}` | " + " | ".join(_cell(g) for g in c["gates"])
                   + f" | {'**ELIGIBLE**' if c['eligible'] else 'rejected'} |")
    out += ["", "Thresholds: " + ", ".join(
        f"{_SHORT[g['name']]} {g['op']} {_fmt(g['threshold'])}"
        for g in report["candidates"][0]["gates"]), "", "## Candidates", ""]
    near = closest(report) if not report["eligible"] else None
    if near is not None:
        out += [f"**Nothing is eligible.** The closest candidate is #{near['rank']} "
                f"(`{near['key']}`); it would have needed: "
                + "; ".join(why_rejected(near, report)) + ".", ""]
    for c in report["candidates"]:
        f = c["figures"]
        fails = why_rejected(c, report)
        out += [f"### {c['rank']}. `{c['key']}` ({'eligible' if c['eligible'] else 'rejected'})",
                "", f"Training Sharpe {_fmt(f['training_sharpe'])} (deflated bar "
                f"{_fmt(f['deflated_bar'])}), OOS annual return "
                f"{_fmt(f['oos_annual_return'])}, family-wise p {_fmt(f['familywise_p'])} (own "
                f"p {_fmt(f['own_p'])}), hold-out annual return "
                f"{_fmt(f['holdout_annual_return'])}, hold-out max drawdown "
                f"{_fmt(f['holdout_max_drawdown'])}.", ""]
        if fails:
            out += ["Fails: " + "; ".join(fails) + ".", ""]
        out += ["```", c["rules"], "```", ""]
    return "\n".join(out)
