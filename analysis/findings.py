"""The report's opening: per setting what it held and cost, then one sentence per claim of the source
articles that this run can check, every number taken from the run (a claim it cannot check is left out).

The articles (../shared/seeds): Django opens a connection per request by default (CONN_MAX_AGE=0); opening
connections is expensive and persistent connections avoid it; without app threads each worker process holds
one connection; PgBouncer shares a few server connections among many app connections.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from connbench import results as R
from connbench.analysis.settings import HIGHER_IS_BETTER, MEDIANS, SPANS, Settings, applies
from connbench.analysis.values import cma_label, missing

FIGURE_NAMES = {"rps": "req/s", "lat_p50": "p50", "lat_p95": "p95"}


def num(v: Any) -> str:
    if missing(v):
        return "–"
    v = float(v)
    return f"{v:.0f}" if abs(v) >= 100 or v.is_integer() else f"{v:.3g}"


def with_interval(row: dict[str, Any], fig: str) -> str:
    lo, hi = row.get(f"{fig}_lo"), row.get(f"{fig}_hi")
    if missing(lo) or missing(hi):
        return num(row.get(fig))
    return f"{num(row.get(fig))} [{num(lo)}–{num(hi)}]"


def labels(groups: pd.DataFrame, axes: list[str] | None = None) -> dict[str, str]:
    """group -> the matrix axes (else knobs) that differ between settings, e.g. "pooling=direct, CONN_MAX_AGE=0"."""
    knobs = [c for c in groups.columns if c not in _GROUP_COLUMNS and not c.startswith("err_")]
    varying = [c for c in (axes or knobs) if c in knobs and groups[c].map(str).nunique() > 1]
    def part(c: str, v: Any) -> str:
        return f"CONN_MAX_AGE={cma_label(v)}" if c == "conn_max_age" else f"{c}={num(v) if isinstance(v, float) else v}"

    full, short = {}, {}
    for row in groups.to_dict("records"):
        g = str(row["group"])
        full[g] = ", ".join(part(c, row[c]) for c in varying) or g
        short[g] = ", ".join(part(c, row[c]) for c in varying if applies(c, row)) or g  # no "arrival_rate=nan"
    return short if len(set(short.values())) == len(short) else full


def table(groups: pd.DataFrame, names: dict[str, str]) -> dict[str, Any]:
    """Per setting, best rank first: connections held, churn, latency, throughput, each with its interval."""
    headers = ["rank", "setting", "server connections (plateau)", "peak", "new connections/s", "p50 ms", "p95 ms",
               "req/s", "machine saturated"]
    leak = "conn_bounded" in groups and (groups["conn_bounded"] == False).any()  # noqa: E712 - pandas NA
    if leak:  # only when some setting left connections behind: else every row would just say "yes"
        headers.insert(4, "bounded")
    # through PgBouncer the server's churn is PgBouncer's; the app's own (app -> PgBouncer) stands beside it
    bouncer = "pooling" in groups and groups["pooling"].astype(str).str.startswith("pgbouncer").any()
    at = headers.index("new connections/s")
    if bouncer:
        headers[at] = "new server connections/s"
        headers.insert(at + 1, "app → PgBouncer new connections/s")
    rows = []
    ordered = groups.sort_values(["rank", "group"], na_position="last") if "rank" in groups else groups
    alone = _alone(ordered)
    for row in ordered.to_dict("records"):
        if not row.get("completed"):
            continue
        rank = None if row.get("rank_within") in alone else row.get("rank")
        cells = [num(rank), names[str(row["group"])], num(row.get("conn_plateau")),
                 with_interval(row, "conn_peak"), with_interval(row, "churn_per_s"),
                 with_interval(row, "lat_p50"), with_interval(row, "lat_p95"), with_interval(row, "rps"),
                 "yes" if row.get("machine_saturated") else "no"]
        if bouncer:
            through = str(row.get("pooling", "")).startswith("pgbouncer")
            cells.insert(at + 1 - leak, num(row.get("new_conn_per_s")) if through else "–")
        if leak:
            cells.insert(4, "NO: left behind" if row.get("conn_bounded") is False else "yes")
        rows.append(cells)
    methods = sorted({m for v in groups.get("interval_method", pd.Series(dtype=str)).dropna()
                      for m in str(v).split("; ") if m})
    return {"headers": headers, "rows": rows, "methods": methods}


def _pick(groups: pd.DataFrame, **where: Any) -> list[dict[str, Any]]:
    rows = []
    for row in groups.to_dict("records"):
        if not row.get("completed"):
            continue
        if all(k in row and (cma_label(row[k]) == v if k == "conn_max_age" else str(row[k]) == v)
               for k, v in where.items()):
            rows.append(row)
    return rows


def _knobs(groups: pd.DataFrame) -> list[str]:
    return [c for c in groups.columns if c not in _GROUP_COLUMNS and not c.startswith("err_")]


def _peer(groups: pd.DataFrame, row: dict[str, Any], **change: Any) -> list[dict[str, Any]]:
    """Settings equal to `row` on every knob but those in `change`, where they match `change`'s test."""
    keep = [k for k in _knobs(groups) if k not in change]
    out = []
    for other in groups.to_dict("records"):
        if other.get("completed") and all(str(other.get(k)) == str(row.get(k)) for k in keep) and \
                all(test(other.get(k)) for k, test in change.items()):
            out.append(other)
    return out


def _longest(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Of persistent settings: CONN_MAX_AGE none if there, else the longest."""
    if not rows:
        return None
    return max(rows, key=lambda r: math.inf if cma_label(r["conn_max_age"]) == "none" else float(r["conn_max_age"]))


REUSED_SHARE = 0.5  # a "persistent" setting whose requests opened a connection this often did not persist


def opened_share(row: dict[str, Any]) -> float | None:
    """The share of requests that opened a connection: Server-Timing's, else the server's sessions per request."""
    share: Any = row.get("new_conn_share")
    if missing(share) and not missing(row.get("churn_per_s")) and not missing(row.get("rps")) and row["rps"] > 0:
        share = row["churn_per_s"] / row["rps"]
    return None if missing(share) else float(share)


def reused(row: dict[str, Any]) -> bool:
    """Did the data show this setting's connections being reused? Unknown counts as not shown."""
    share = opened_share(row)
    return share is not None and share < REUSED_SHARE


def _verdict(settings: Settings, a: str, b: str, fig: str) -> str:
    t = settings.test(a, b, fig)
    if not t.basis:
        return "too few samples to test the difference"
    word = "a significant difference" if t.significant else "not distinguishable from noise"
    return f"{word} (Mann-Whitney p = {t.p:.2g} on {t.basis})"


DISAGREE = 0.25  # two figures of one connection's cost further apart than this (of the smaller) are said to be


def connect_cost_sentence(z: dict[str, Any]) -> str:
    """What a new connection cost: the requests' own median (Server-Timing), else the calibration's, labelled;
    beside it the calibration and PostgreSQL's own log when they exist, and a warning naming all of them when
    two disagree by more than DISAGREE."""
    paid, cal, server = z.get("connect_new_p50"), z.get("connect_cost_ms"), z.get("server_setup_p50")
    per_s = z.get("connect_s_per_s")
    spent = f": {num(per_s)} s spent connecting each second" if not missing(per_s) else ""
    if missing(paid):
        return f" Each cost {num(cal)} ms to open (calibrated){spent}." if not missing(cal) else ""
    n = z.get("connect_new_n")
    ci = "" if missing(z.get("connect_new_lo")) else f", 95 % CI {num(z['connect_new_lo'])}–{num(z['connect_new_hi'])}"
    out = (f" Each cost {num(paid)} ms to open (median{' of ' + num(n) if not missing(n) else ''} requests that "
           f"opened one, by the app's Server-Timing{ci}){spent}.")
    figures: dict[str, Any] = {"the requests": paid}
    why = ["the requests' figure is what this load paid, connects waiting for the CPU that the app, the generator "
           "and the server share"]
    if not missing(cal):
        out += f" Calibrated apart from the load: {num(cal)} ms."
        figures["the calibration"] = cal
        why.append("the calibration times one connection at a time, before the load")
    if not missing(server):
        out += f" PostgreSQL's own log (setup total): {num(server)} ms."
        figures["PostgreSQL"] = server
        why.append("PostgreSQL counts only its own side (fork and authentication), not the client's")
    lo, hi = min(figures.values()), max(figures.values())
    if len(figures) > 1 and hi - lo > DISAGREE * lo:
        named = ", ".join(f"{k} {num(v)} ms" for k, v in figures.items())
        out += f" They disagree by more than {DISAGREE:.0%} ({named}): {'; '.join(why)}."
    return out


def claims(groups: pd.DataFrame, settings: Settings, names: dict[str, str],
           versions: dict[str, str | None] | None = None) -> list[str]:
    """One sentence per article claim the run can check, each naming the setting(s) it rests on."""
    out: list[str] = []
    many = len(_pick(groups, pooling="direct", conn_max_age="0")) > 1  # then every sentence names its setting
    for z in _pick(groups, pooling="direct", conn_max_age="0"):
        where = f" ({names[str(z['group'])]})" if many else ""
        share = opened_share(z)
        if share is not None:
            cost = connect_cost_sentence(z)
            out.append(f"CONN_MAX_AGE=0{where} opened a new connection for {share:.0%} of requests: "
                       f"{with_interval(z, 'churn_per_s')} new server connections/s at {with_interval(z, 'rps')} "
                       f"req/s (the articles: Django opens one per request by default).{cost}")
        peers = _peer(groups, z, conn_max_age=lambda v: cma_label(v) != "0")
        # "persistent" only where the data shows reuse: under ASGI CONN_MAX_AGE=none opens one per request too
        for other in [p for p in peers if not reused(p) and p.get("conn_bounded") is not False]:  # leaks: below
            out.append(not_persistent(other, names))
        k = _longest([p for p in peers if reused(p)])
        if k is not None and not missing(z.get("lat_p50")) and not missing(k.get("lat_p50")):
            d50 = z["lat_p50"] - k["lat_p50"]
            out.append(f"Opening a connection per request{where} cost {'+' if d50 >= 0 else '−'}{num(abs(d50))} ms "
                       f"at p50 against persistent connections (CONN_MAX_AGE={cma_label(k['conn_max_age'])}): "
                       f"{with_interval(z, 'lat_p50')} vs {with_interval(k, 'lat_p50')} ms, "
                       f"{_verdict(settings, z['group'], k['group'], 'lat_p50')}; throughput "
                       f"{with_interval(z, 'rps')} vs {with_interval(k, 'rps')} req/s, "
                       f"{_verdict(settings, z['group'], k['group'], 'rps')}.")
    held_by: dict[tuple[Any, Any], list[str]] = {}  # settings that held the same: one sentence, not one each
    for k in [r for r in _pick(groups, pooling="direct") if cma_label(r.get("conn_max_age")) != "0" and reused(r)]:
        pred, held = k.get("predicted_connections"), k.get("conn_plateau")
        if not missing(pred) and not missing(held):
            held_by.setdefault((held, pred), []).append(names[str(k["group"])])
    for (held, pred), who in held_by.items():
        match = "one per worker thread, as the articles predict" if held == pred else \
            f"not the {num(pred)} the articles' one-per-worker-thread rule predicts"
        out.append(f"With persistent connections ({'; '.join(who)}) the app held "
                   f"{num(held)} server connections for {num(pred)} worker threads: {match}.")
    out.extend(leaks(groups, settings, names))
    for p in _pick(groups, pooling="pgbouncer-transaction"):
        cl, sv = p.get("pgb_clients_peak"), p.get("pgb_servers_peak")
        if missing(cl) or missing(sv):
            continue
        out.append(f"Through PgBouncer in transaction mode ({names[str(p['group'])]}), up to "
                   f"{num(cl)} app connections shared at most {num(sv)} server connections "
                   f"(pool size {num(p.get('pgbouncer_pool_size'))}).")
    out += asgi_threads(groups, settings, names, versions) + gthread_threads(groups, settings, names)
    return out + [m] if (m := memory(groups, settings, names)) else out


def _life(settings: Settings, row: dict[str, Any], col: str) -> float | None:
    """A life column (analysis/lifecycle.py) of a setting: the median over its completed repeats; None if blank."""
    v = settings.values(str(row["group"]), col)
    return float(np.median(v[~np.isnan(v)])) if (~np.isnan(v)).any() else None


def asgi_threads(groups: pd.DataFrame, settings: Settings, names: dict[str, str],
                 versions: dict[str, str | None] | None = None) -> list[str]:
    """Under ASGI with CONN_MAX_AGE != 0: which account the data support, a fresh thread and connection per
    request, or a few threads reused with their connections left open."""
    out, v = [], versions or {}
    built = f"Django {v.get('django') or 'version not recorded'}, asgiref {v.get('asgiref') or 'not recorded'}"
    for r in _pick(groups, worker_class="asgi"):
        n, threads, per = (_life(settings, r, c) for c in ("requests", "threads_seen", "requests_per_connection_p50"))
        if cma_label(r.get("conn_max_age")) == "0" or n is None or threads is None or per is None:
            continue
        left = f", {num(r['conn_held'])} still open after the load stopped" if not missing(r.get("conn_held")) else ""
        if per <= 1.5 and threads >= n / 2:
            why = (f"{num(n)} requests ran on {num(threads)} distinct threads, each connection used by ~1 request "
                   f"(requests per connection p50 {num(per)}{left}): Django's per-request thread-sensitive executor "
                   "opens a connection per request and nothing closes it")
        elif threads <= max(2.0, n / 10):
            why = (f"few threads ({num(threads)}) reused, connections left open: {num(n)} requests, requests per "
                   f"connection p50 {num(per)}{left}")
        else:
            why = (f"{num(n)} requests ran on {num(threads)} distinct threads, requests per connection p50 "
                   f"{num(per)}{left}: neither a connection per request nor a few reused threads")
        out.append(f"{names[str(r['group'])]}: {why} ({built}).")
    return out


def gthread_threads(groups: pd.DataFrame, settings: Settings, names: dict[str, str]) -> list[str]:
    """Under gthread: the threads per worker that ran queries against `threads`, beside what the app held."""
    out = []
    for r in _pick(groups, worker_class="gthread"):
        most, seen, cpt = (_life(settings, r, c) for c in ("threads_per_worker_max", "threads_seen",
                                                             "connections_per_thread"))
        if most is None or missing(r.get("threads")):
            continue
        held, pred, t = r.get("conn_plateau"), r.get("predicted_connections"), float(r["threads"])
        head = f"{names[str(r['group'])]} held {num(held)}" + (
            f", not {num(pred)}" if not missing(held) and not missing(pred) and held != pred else "")
        facts = f"({num(seen)} threads seen, {num(cpt)} connections per thread)"
        out.append(f"{head}: only {num(most)} of {num(t)} threads per worker ever ran a query {facts}." if most < t
                   else f"{head}: all {num(t)} threads of the busiest worker ran queries {facts}.")
    return out


def memory(groups: pd.DataFrame, settings: Settings, names: dict[str, str]) -> str | None:
    """PSS beside RSS per app backend where the sampler read them, and why the two differ."""
    parts = []
    for r in [r for r in groups.to_dict("records") if r.get("completed")]:
        pss, p95, rss, total = (_life(settings, r, c) for c in ("pss_backend_mib_p50", "pss_backend_mib_p95",
                                                                 "rss_backend_mib_p50", "pss_total_mib"))
        if pss is not None or rss is not None:
            parts.append(f"{names[str(r['group'])]}: " + (f"RSS {num(rss)} MiB (PSS not read)" if pss is None else
                         f"PSS {num(pss)} MiB (p95 {num(p95)}) vs RSS {num(rss)} MiB, {num(total)} MiB PSS for "
                         "all its connections together"))
    return ("Server memory per app connection (median per backend): " + "; ".join(parts) + ". RSS counts shared "
            "pages (shared_buffers, the postgres binary) in full in every backend; PSS divides them among the "
            "processes sharing them, so PSS adds up across backends and RSS does not.") if parts else None


def not_persistent(k: dict[str, Any], names: dict[str, str]) -> str:
    """A CONN_MAX_AGE != 0 setting whose connections the data shows were not reused: what was measured instead."""
    share, held = opened_share(k), k.get("conn_held")
    under = " under ASGI" if str(k.get("worker_class")) == "asgi" else ""
    left = f"; {num(held)} were still open after the load stopped" if not missing(held) else ""
    opened = f"{share:.0%} of its requests opened a connection" if share is not None else "reuse was not measured"
    return (f"CONN_MAX_AGE={cma_label(k.get('conn_max_age'))}{under} ({names[str(k['group'])]}) did not keep "
            "connections "
            f"for reuse: {opened}{left}. It is not compared as persistent.")


def leaks(groups: pd.DataFrame, settings: Settings, names: dict[str, str]) -> list[str]:
    """Settings that left connections behind (conn_bounded false), each against its peer on Django's pool."""
    out = []
    for r in groups.to_dict("records"):
        if r.get("completed") and r.get("conn_bounded") is True and r.get("predicted_bounded") is False:
            out.append(f"{names[str(r['group'])]} was predicted to leave connections behind but held at most "
                       f"{with_interval(r, 'conn_peak')}: the load may have been too light or short to show it.")
        if not r.get("completed") or r.get("conn_bounded") is not False:
            continue
        asgi = str(r.get("worker_class")) == "asgi"
        share = r.get("new_conn_share")
        opened = f", a new one opened for {share:.0%} of requests" if not missing(share) else ""
        text = (f"{names[str(r['group'])]} left connections behind: up to {with_interval(r, 'conn_peak')} server "
                f"connections with at most {num(r.get('inflight_max'))} requests in flight{opened}, and "
                f"{num(r.get('conn_held'))} still open after the load stopped"
                + (" (as predicted: no bound)" if r.get("predicted_bounded") is False else
                   f" (NOT predicted: the parameters explain at most {num(r.get('predicted_connections_max'))})"
                   if r.get("predicted_bounded") is True else ""))
        text += (" — under ASGI each request's sync code runs in a fresh thread and Django's connections are "
                 "per thread, so with CONN_MAX_AGE ≠ 0 every request abandons one (Django ticket #33497)"
                 if asgi else "")
        pool = _peer(groups, r, pooling=lambda v: v == "django-pool", conn_max_age=lambda v: cma_label(v) == "0")
        if pool:
            p = pool[0]
            text += (f". Django's pool ({names[str(p['group'])]}) held at most {with_interval(p, 'conn_peak')} at "
                     f"{with_interval(p, 'rps')} vs {with_interval(r, 'rps')} req/s, "
                     f"{_verdict(settings, p['group'], r['group'], 'rps')}")
        out.append(text + ".")
    return out


def _alone(groups: pd.DataFrame) -> set[str]:
    """Load levels only one ranked setting ran under: ranked against nothing, so neither the ranking sentence
    nor the table gives them a rank."""
    if "rank" not in groups or "rank_within" not in groups:
        return set()
    sizes = groups.dropna(subset=["rank"])["rank_within"].value_counts()
    return set(sizes[sizes < 2].index)


def ranking(groups: pd.DataFrame, names: dict[str, str]) -> str | None:
    """One sentence: the rank groups, best first; members of a group are listed alphabetically, unordered."""
    if "rank" not in groups or groups["rank"].isna().all():
        return None
    fig = str(groups["rank_by"].dropna().iloc[0])
    levels = []
    ranked = groups.dropna(subset=["rank"])
    within = ranked["rank_within"] if "rank_within" in ranked else pd.Series("", index=ranked.index)
    alone = _alone(groups)
    for level, part in ranked.groupby(within, sort=False):
        if level in alone:
            continue
        parts = []
        for rank, g in part.groupby("rank"):
            members = sorted(names[str(x)] for x in g["group"])
            tie = " (indistinguishable)" if len(members) > 1 else ""
            parts.append(f"{int(rank)}: " + "; ".join(members) + tie)
        levels.append((f"at {level}: " if level else "") + " · ".join(parts))
    if not levels:
        return None
    basis = sorted({b for v in groups.get("rank_test", pd.Series(dtype=str)).dropna() for b in str(v).split(" and ")
                    if b})
    better = "higher" if HIGHER_IS_BETTER[fig] else "lower"
    return (f"Ranked by {FIGURE_NAMES.get(fig, fig)} ({better} is better) among settings under the same load; "
            f"settings the test cannot tell apart share a rank (Mann-Whitney U, p < 0.05, on "
            f"{' and '.join(basis) or 'no test: too few samples'}): " + "; ".join(levels) + ".")


def saturation(groups: pd.DataFrame, names: dict[str, str]) -> str | None:
    sat = groups[groups.get("machine_saturated", pd.Series(False, index=groups.index)).fillna(False).astype(bool)]
    if not len(sat):
        return None
    return (f"{len(sat)} of {int((groups['completed'] > 0).sum())} settings ran with the machine saturated "
            f"(the harness's components together used ≥ 90 % of the machine's usable cores): their throughput and "
            "latency describe this machine, not the setting — " + "; ".join(sorted(names[str(g)] for g in sat["group"]))
            + ".")


def findings(groups: pd.DataFrame, settings: Settings,
             versions: dict[str, str | None] | None = None) -> dict[str, Any] | None:
    if not len(groups) or not (groups["completed"] > 0).any():
        return None
    names = labels(groups, settings.axes)
    return {"table": table(groups, names), "ranking": ranking(groups, names),
            "claims": claims(groups, settings, names, versions),
            "saturation": saturation(groups, names)}


_GROUP_COLUMNS = {"group", "cells", "completed", "interval_method", "rank", "rank_by", "rank_test", "rank_within",
                  "machine_saturated", "generator_saturated", "conn_bounded", "predicted_bounded",
                  *R.INTERVAL_FIGURES,
                  *(f"{f}_{s}" for f in R.INTERVAL_FIGURES for s in ("lo", "hi")), *MEDIANS,
                  *(col for col, _ in SPANS)}
