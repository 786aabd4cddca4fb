"""The gate report as Markdown (for people and MLflow) and as a terminal verdict table."""

from __future__ import annotations

from gates.policy import GATES

_SHORT = {"oos_sharpe": "OOS SR", "dsr": "DSR", "pbo": "PBO", "spa": "SPA p",
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
        f"{report['trials']} | PBO {_fmt(report['pbo'])} | OOS {p['oos']['first']}..."
        f"{p['oos']['last']} ({p['oos']['bars']} bars) | hold-out {p['holdout']['first']}..."
        f"{p['holdout']['last']} ({p['holdout']['bars']} bars)")
    if not report["lookahead"]["passed"]:
        lines.append(f"LOOK-AHEAD AUDIT FAILED: {report['lookahead']['error']}")
    return "\n".join(lines)


def markdown(report: dict) -> str:
    p, pol = report["periods"], report["policy"]
    out = [f"# Gate report: run {report['run_id']}", "",
           f"{report['symbol']} {report['timeframe']}, generation {report['generation']} of "
           f"{report['generations']}. **{len(report['eligible'])} eligible of "
           f"{len(report['candidates'])} front candidates.**", "",
           "| period | first | last | bars | used for |", "|---|---|---|---|---|",
           f"| training | {p['training']['first']} | {p['training']['last']} | "
           f"{p['training']['bars']} | evolution's fitness (training folds); DSR |",
           f"| purge | | | {p['purge']['bars']} | dropped between training and OOS |",
           f"| OOS | {p['oos']['first']} | {p['oos']['last']} | {p['oos']['bars']} | last "
           f"walk-forward test window, never seen by evolution: OOS gates, PBO, SPA |",
           f"| hold-out | {p['holdout']['first']} | {p['holdout']['last']} | "
           f"{p['holdout']['bars']} | read only here, once per candidate |", "",
           f"The hold-out was read once per candidate by this gate pass. Gate passes that have "
           f"read this run's hold-out so far: **{report['holdout_reads']}**."]
    if report["holdout_reads"] > 1:
        out.append("**Warning:** the hold-out had already been read by an earlier gate pass; "
                   "if the policy was changed after seeing it, its figures are no longer "
                   "untouched evidence.")
    la = report["lookahead"]
    audit = (f"passed ({len(la['cuts'])} random cut points, {la['bars_compared']} bar "
             f"comparisons)" if la["passed"] else f"**FAILED**: {la['error']}")
    audit += ("; it replays the whole history but only compares decisions, and no figure "
              "above is taken from it")
    out += ["", "## Run-level statistics", "",
            f"- Trials (distinct genomes evaluated, flat ones included): {report['trials']}; "
            f"variance of their per-bar Sharpe ratios (mean over training folds): "
            f"{report['trial_sharpe_variance']:.3e}",
            f"- PBO (CSCV, S = {pol['pbo_blocks']}) over the final population's "
            f"{report['population']} distinct genomes on the OOS window: {_fmt(report['pbo'])}",
            f"- SPA: stationary bootstrap, block {pol['bootstrap']['block_size']}, "
            f"{pol['bootstrap']['reps']} reps, seed {pol['bootstrap']['seed']}, benchmark "
            f"{pol['benchmark']}; each candidate's own p-value is gated. StepM (Romano-Wolf, "
            f"FWER {pol['spa_p_max']}) over the whole front finds "
            f"{sum(c['figures']['stepm_superior'] == 1.0 for c in report['candidates'])} "
            f"candidate(s) superior to the benchmark (reported, not gated)",
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
    for c in report["candidates"]:
        f = c["figures"]
        out += [f"### {c['rank']}. `{c['key']}` ({'eligible' if c['eligible'] else 'rejected'})",
                "", f"Training Sharpe {_fmt(f['training_sharpe'])}, "
                f"{'in' if f['stepm_superior'] == 1.0 else 'not in'} the StepM superior set, "
                f"OOS annual return "
                f"{_fmt(f['oos_annual_return'])}, hold-out annual return "
                f"{_fmt(f['holdout_annual_return'])}, hold-out max drawdown "
                f"{_fmt(f['holdout_max_drawdown'])}.", "", "```", c["rules"], "```", ""]
    return "\n".join(out)
