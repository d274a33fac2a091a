"""The HTML of the Flywheel page: the index, a model, a dataset, the answer to an action.

Plain server-side HTML, every value escaped (`html.escape`), the charts inline SVG (charts.py), one
small inline stylesheet and no script: the browser fetches nothing but these pages and the files
they link to, all from the Airflow server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import quote

from pipelines.board import charts
from pipelines.runbooks import OUT_OF_BAND_CHAMPION

if TYPE_CHECKING:
    from pipelines.board.datasets import DatasetBoard
    from pipelines.board.files import FileRef
    from pipelines.board.models import DriftWindow, ModelBoard, TimelineEvent, VersionFacts

STYLE = """
body{font-family:system-ui,sans-serif;margin:1em 1.5em;color:#222;font-size:14px}
h1{font-size:22px;margin:.2em 0}h2{font-size:17px;margin:1.2em 0 .4em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:3px 7px;vertical-align:top;
text-align:left}th{background:#f4f4f4}.num{text-align:right}.ok{color:#1a7f37}.bad{color:#b42318}
.muted{color:#666}.problem{background:#fff4e5;border:1px solid #f0b35b;padding:6px 10px;margin:.5em 0}
.msg{padding:8px 12px;margin:.6em 0;border-radius:4px}.msg.good{background:#e8f5e9}.msg.err{background:#fdecea}
form.action{display:inline-block;border:1px solid #ddd;padding:8px 12px;margin:0 1em .5em 0;vertical-align:top}
form.action textarea{width:26em;height:3.2em;display:block;margin:.3em 0}
details summary{cursor:pointer}nav a{margin-right:1em}code{background:#f6f6f6;padding:0 3px}
.runbook{max-width:60em}.runbook pre{background:#f6f6f6;padding:6px 10px;overflow-x:auto}
.runbook pre code{padding:0}.runbook li{margin:.2em 0}
"""


@dataclass(frozen=True)
class Urls:
    base: str                     # the app's prefix, e.g. /flywheel
    airflow: str = "/"            # the Airflow UI, e.g. / (same origin) or AIRFLOW__API__BASE_URL
    mlflow: str = ""              # the MLflow UI, e.g. http://127.0.0.1:5000 ("" : no MLflow links)
    # dag_id -> {run_key (flywheel.dagkit.run_key of a run id): run_id}, to link the exact Airflow run
    run_ids: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def page(self, *parts: str) -> str:
        return self.base.rstrip("/") + "/" + "/".join(quote(p, safe="") for p in parts)

    def dag_run(self, dag_id: str, run_id: str | None = None, run_key: str | None = None) -> str:
        if run_id is None and run_key:
            run_id = self.run_ids.get(dag_id, {}).get(run_key)
        root = self.airflow.rstrip("/")
        if run_id:
            return f"{root}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
        return f"{root}/dags/{quote(dag_id, safe='')}/runs"

    def mlflow_version(self, registered: str, version: str) -> str | None:
        if not self.mlflow:
            return None
        return f"{self.mlflow.rstrip('/')}/#/models/{quote(registered, safe='')}/versions/{quote(version, safe='')}"


def e(x: object) -> str:
    return escape("" if x is None else str(x), quote=True)


def link(href: str | None, text: object) -> str:
    return f"<a href='{e(href)}'>{e(text)}</a>" if href else e(text)


def file_link(ref: FileRef | None, urls: Urls, text: str) -> str:
    return link(ref.url(urls.base), text) if ref is not None else ""


def _online_note(w: DriftWindow) -> str:
    """" (12 online)": the serving endpoint's requests among the window's rows, when it had any."""
    online = int(w.rows_by_source.get("online", 0))
    return f" <span class='online'>({online:,} online)</span>" if online else ""


def _num(x: float | None) -> str:
    return f"{x:.4g}" if x is not None and math.isfinite(x) else "—"


def layout_page(heading: str, urls: Urls, body: str) -> str:
    nav = (f"<nav>{link(urls.page(''), 'Flywheel: all models and datasets')}"
           f"{link(urls.page('runbooks', ''), 'Runbooks: what to do when something is wrong')}</nav>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(heading)}</title>"
            f"<style>{STYLE}</style></head><body>{nav}{body}</body></html>")


def _out_of_band(m: ModelBoard, urls: Urls) -> str:
    """The champion sentinel's red banner: `champion` was moved outside the audited path."""
    if not m.out_of_band:
        return ""
    return (f"<div class='msg err out-of-band' data-model='{e(m.name)}'><b>{e(m.name)}: champion moved outside the "
            f"audited path.</b> {e(m.out_of_band)}. Decide through <code>override__{e(m.name)}</code>: "
            f"{link(urls.page('runbooks', OUT_OF_BAND_CHAMPION), 'the runbook')}.</div>")


def _problems(problems: Sequence[str]) -> str:
    return "".join(f"<div class='problem'>{e(p)}</div>" for p in problems)


# ---------------------------------------------------------------------------------------------- index


def index_page(models: Sequence[ModelBoard], datasets: Sequence[DatasetBoard], urls: Urls, now: datetime) -> str:
    rows = []
    for m in models:
        c = m.champion
        last = m.drift[-1] if m.drift else None
        drift = (f"{'DRIFT' if last.drift_detected else 'no drift'} in window {last.key}" if last else "no window yet")
        rows.append(f"<tr><td>{link(urls.page('models', m.name), m.name)}</td>"
                    f"<td>{link(urls.page('datasets', m.dataset), m.dataset)}</td>"
                    f"<td class='champion' data-model='{e(m.name)}'>{e('v' + c.version) if c else '—'}</td>"
                    f"<td class='num'>{e(m.metric)} {_num(c.metric_value) if c else '—'}</td>"
                    f"<td>{e(c.age(now)) if c else '—'}</td><td>{e(drift)}</td>"
                    f"<td>{len(m.versions)}</td></tr>")
    drows = []
    for d in datasets:
        t = d.totals
        drows.append(f"<tr><td>{link(urls.page('datasets', d.name), d.name)}</td><td>{e(d.cadence)}</td>"
                     f"<td class='num'>{t['batches']}</td><td class='num'>{t['accepted']}</td>"
                     f"<td class='num'>{t['blocked']}</td><td class='num'>{t['rows_quarantined']:,}</td>"
                     f"<td>{', '.join(link(urls.page('models', r), r) for r in d.read_by)}</td></tr>")
    body = ("<h1>Flywheel</h1><p class='muted'>Every model and dataset of the loop, read from MLflow's registry, "
            "the monitor's verdicts and the data gate's results.</p>"
            + _problems([p for m in models for p in m.problems] + [p for d in datasets for p in d.problems])
            + "".join(_out_of_band(m, urls) for m in models)
            + "<h2>Models</h2><table id='models'><tr><th>model</th><th>dataset</th><th>champion</th>"
            "<th>gate holdout metric</th><th>champion age</th><th>last monitor window</th><th>versions</th></tr>"
            + "".join(rows) + "</table><h2>Datasets</h2><table id='datasets'><tr><th>dataset</th><th>cadence</th>"
            "<th>batches</th><th>accepted</th><th>blocked</th><th>rows quarantined</th><th>read by</th></tr>"
            + "".join(drows) + "</table>"
            + "".join(f"<h2>Rows per batch: {e(d.name)}</h2><div class='chart dataset-rows' "
                      f"data-dataset='{e(d.name)}'>{_rows_chart(d, 640, 190)}</div>" for d in datasets))
    return layout_page("Flywheel", urls, body)


# ---------------------------------------------------------------------------------------------- a model


def _version_links(m: ModelBoard, v: VersionFacts, urls: Urls) -> str:
    parts = [file_link(v.card, urls, "model card"),
             link(urls.mlflow_version(m.registered_model, v.version), "MLflow version")
             if urls.mlflow else "",
             link(urls.dag_run(f"train__{m.name}", run_key=v.run_key), "Airflow run") if v.run_key else ""]
    return " · ".join(p for p in parts if p)


def _checks_html(checks: Sequence) -> str:
    if not checks:
        return ""
    items = "".join(f"<li class='{'ok' if c.passed else 'bad'}'>{'PASS' if c.passed else 'FAIL'} "
                    f"<code>{e(c.name)}</code> {e(c.text)}</li>" for c in checks)
    failed = sum(1 for c in checks if not c.passed)
    return (f"<details class='checks'><summary>{len(checks)} checks, {failed} failed</summary>"
            f"<ul>{items}</ul></details>")


def _event_row(m: ModelBoard, ev: TimelineEvent, urls: Urls) -> str:
    run = link(urls.dag_run(ev.dag_id, ev.run_id, ev.run_key), "Airflow run") if ev.dag_id else ""
    cls = "bad" if "rejected" in ev.headline or ev.kind in ("rollback", "override-reject") else "ok"
    return (f"<tr class='event' data-kind='{e(ev.kind)}'><td>{e(ev.at[:19].replace('T', ' '))}</td>"
            f"<td class='{cls}'>{e(ev.headline)}</td><td>{e(ev.reason)}{_checks_html(ev.checks)}</td>"
            f"<td>{e(ev.actor)}</td><td>{run}</td></tr>")


ACTIONS = ("rollback", "override")   # what the page's forms trigger: `<action>__<model>`


def _refused(m: ModelBoard, action: str, may: frozenset[str]) -> tuple[str, str]:
    """(fieldset attributes, note) of an action form: disabled, with why, when the user may not trigger it."""
    if action in may:
        return "", ""
    return (" disabled", f"<p class='muted refused'>Your Airflow role may not trigger <code>{e(action)}__{e(m.name)}"
                         "</code> (the on-call and admin roles may: README, Security).</p>")


def _actions(m: ModelBoard, urls: Urls, may: frozenset[str] = frozenset(ACTIONS)) -> str:
    (rb_off, rb_note), (ov_off, ov_note) = (_refused(m, a, may) for a in ACTIONS)
    options = "".join(f"<option value='{e(v.version)}'>v{e(v.version)} ({e(v.decision or 'not gated')}"
                      f"{', ' + ', '.join(v.aliases) if v.aliases else ''})</option>" for v in reversed(m.versions))
    prev = f"v{m.previous.version}" if m.previous else "no previous champion"
    return (f"<h2>Actions</h2><p class='muted'>Each triggers a DAG run as you, through Airflow's API; the move is "
            f"audited in the alias history (who, when, why).</p>"
            f"<form class='action' id='rollback' method='post' action='{e(urls.page('models', m.name, 'rollback'))}'>"
            f"<fieldset{rb_off}><b>Roll back</b> <span class='muted'>champion → previous champion ({e(prev)}), "
            f"<code>rollback__{e(m.name)}</code></span>{rb_note}"
            f"<textarea name='reason' required placeholder='Why roll back? (required)'></textarea>"
            f"<button type='submit'>Roll back</button></fieldset></form>"
            f"<form class='action' id='override' method='post' action='{e(urls.page('models', m.name, 'override'))}'>"
            f"<fieldset{ov_off}><b>Override the gate</b> <span class='muted'><code>override__{e(m.name)}</code>"
            f"</span>{ov_note}<br>"
            f"<label>version <select name='version' required>{options}</select></label> "
            f"<label>action <select name='action'><option value='promote'>promote</option>"
            f"<option value='reject'>reject</option></select></label>"
            f"<textarea name='reason' required placeholder='Why override the gate? (required)'></textarea>"
            f"<button type='submit'>Override</button></fieldset></form>")


def _heatmap(m: ModelBoard) -> str:
    windows = list(m.drift)
    cells: dict[tuple[str, str], charts.Cell] = {}
    worst: dict[str, float] = {}
    for w in windows:
        for col, v in w.columns.items():
            score = v.get("score")
            cell = charts.Cell(float(score) if isinstance(score, (int, float)) else None,
                               float(v["threshold"]) if isinstance(v.get("threshold"), (int, float)) else None,
                               bool(v.get("drifted")), str(v.get("kind") or "distance"), str(v.get("method") or ""))
            cells[(col, w.key)] = cell
            sev = cell.severity
            worst[col] = max(worst.get(col, 0.0), sev if math.isfinite(sev) else 0.0)
    rows = sorted(worst, key=lambda c: (-worst[c], c))
    return charts.heatmap(rows, [w.key for w in windows], cells, f"drift per column per window: {m.name}")


def _metric_chart(m: ModelBoard) -> str:
    holdout = [(p.at, p.value, p.label) for p in m.metric_points if p.kind == "holdout"]
    live = [(p.at, p.value, p.label) for p in m.metric_points if p.kind == "live"]
    better = "higher is better" if m.higher_is_better else "lower is better"
    return charts.line_chart([charts.Series("live labelled windows", live, line=True, color="#1f77b4"),
                              charts.Series("gate holdout per version", holdout, line=False, color="#ff7f0e")],
                             f"{m.metric} over time: {m.name}", f"{m.metric} ({better})")


def model_page(m: ModelBoard, urls: Urls, now: datetime, message: str = "", error: str = "",
               message_link: tuple[str, str] | None = None, may: frozenset[str] = frozenset(ACTIONS)) -> str:
    """The model's page; `message` (and a link, e.g. to the triggered run) or `error` answer an action. `may`: the
    actions the user's Airflow role may trigger (the others' forms are disabled and say why)."""
    roles = []
    for role, v in (("champion", m.champion), ("challenger", m.challenger), ("previous champion", m.previous)):
        if v is None:
            roles.append(f"<tr><th>{e(role)}</th><td colspan='6' class='muted'>none</td></tr>")
            continue
        roles.append(f"<tr class='role' data-role='{e(role)}'><th>{e(role)}</th>"
                     f"<td class='version'>v{e(v.version)}</td>"
                     f"<td class='num'>{_num(v.metric_value)}</td><td>{e(v.decision or 'not gated')}"
                     f"{' (override: ' + e(v.override) + ')' if v.override else ''}</td>"
                     f"<td>{e(v.trained_as_of or '—')}</td><td>{e(v.age(now))}</td>"
                     f"<td>{_version_links(m, v, urls)}</td></tr>")
    windows = []
    for w in reversed(m.drift):
        perf = w.performance
        perf_text = (f"{perf.get('metric')} {_num(perf.get('value'))} ({perf.get('status')})"
                     if perf.get("status") else "—")
        windows.append(f"<tr><td>{e(w.key)}</td>"
                       f"<td>{e(w.interval_start[:10])} → {e(w.interval_end[:10])}{_online_note(w)}</td>"
                       f"<td>v{e(w.champion_version)}</td><td class='{'bad' if w.drift_detected else 'ok'}'>"
                       f"{100 * w.drifted_share:.0f}% of columns{' — DRIFT' if w.drift_detected else ''}</td>"
                       f"<td>{e(perf_text)}</td><td>{'retrain requested' if w.request else ''} {e(w.decision)}</td>"
                       f"<td>{e(w.email or '')}</td><td>{file_link(w.report, urls, 'Evidently report')} "
                       f"{file_link(w.verdict, urls, 'verdict')}</td></tr>")
    versions = "".join(f"<tr><td>v{e(v.version)}</td><td>{e(', '.join(v.aliases))}</td>"
                       f"<td>{e(v.decision or 'not gated')}</td><td class='num'>{_num(v.metric_value)}</td>"
                       f"<td>{e(v.trained_as_of or '—')}</td><td>{e(v.age(now))}</td>"
                       f"<td>{_version_links(m, v, urls)}</td></tr>" for v in reversed(m.versions))
    more = f" {link(*message_link)}" if message_link else ""
    msg = (f"<div class='msg good' id='message'>{e(message)}{more}</div>" if message else "") + (
        f"<div class='msg err' id='error'>{e(error)}</div>" if error else "")
    body = (f"<h1>Model <span id='model-name'>{e(m.name)}</span></h1><p>{e(m.description)} Dataset "
            f"{link(urls.page('datasets', m.dataset), m.dataset)}; registered as <code>{e(m.registered_model)}</code>; "
            f"primary metric <code>{e(m.metric)}</code> ({'higher' if m.higher_is_better else 'lower'} is better).</p>"
            + msg + _problems(m.problems) + _out_of_band(m, urls)
            + "<h2>Aliases</h2><table id='aliases'><tr><th></th><th>version</th><th>gate holdout "
            f"{e(m.metric)}</th><th>gate</th><th>trained as of (data time)</th><th>age</th><th>links</th></tr>"
            + "".join(roles) + "</table>" + _actions(m, urls, may)
            + f"<h2>{e(m.metric)} over time</h2><div class='chart' id='metric-chart'>{_metric_chart(m)}</div>"
            + "<h2>Gate decisions, overrides and rollbacks</h2><table id='timeline'><tr><th>when (UTC)</th>"
            "<th>what</th><th>reason and checks</th><th>by</th><th>run</th></tr>"
            + "".join(_event_row(m, ev, urls) for ev in reversed(m.timeline)) + "</table>"
            + f"<h2>Drift per column per window</h2><p class='muted'>A window alarms when at least "
            f"{100 * m.drift_share:.0f}% of its columns drift.</p><div class='chart' id='drift-heatmap'>"
            f"{_heatmap(m)}</div><table id='windows'><tr><th>window</th><th>data</th><th>scored by</th>"
            "<th>drift</th><th>performance</th><th>retrain policy</th><th>email</th><th>report</th></tr>"
            + "".join(windows) + "</table>"
            + "<h2>Versions</h2><table id='versions'><tr><th>version</th><th>aliases</th><th>gate</th>"
            f"<th>holdout {e(m.metric)}</th><th>trained as of</th><th>age</th><th>links</th></tr>{versions}</table>"
            + _release(m))
    return layout_page(f"Flywheel: {m.name}", urls, body)


def _runs(week: dict[str, object]) -> str:
    runs: dict[str, int] = week["runs"]  # type: ignore[assignment]
    return ", ".join(f"{k} ×{n}" for k, n in sorted(runs.items()))


def _release(m: ModelBoard) -> str:
    """Golden-set verdicts per version, and what the model cost per data week (pipelines/release/)."""
    out = "<h2>Golden sets</h2>"
    if m.golden:
        out += ("<table id='golden'><tr><th>version</th><th>golden set</th><th>verdict</th><th>file sha256</th></tr>"
                + "".join(f"<tr><td>v{e(v)}</td><td>{e(g)}</td><td class='{'ok' if r.startswith('PASS') else 'bad'}'>"
                          f"{e(r.split()[0])}</td><td><code>{e(r.partition('sha256=')[2][:16])}…</code></td></tr>"
                          for v, g, r in reversed(m.golden)) + "</table>"
                "<p class='muted'>Each check's detail is in the gate timeline above and in the version's model "
                "card.</p>")
    else:
        out += "<p class='muted'>No golden set judged yet (<code>golden:</code> in the spec).</p>"
    out += "<h2>Cost per week</h2>"
    if m.costs:
        out += ("<table id='costs'><tr><th>data week</th><th>runs</th><th>CPU s</th><th>wall s</th>"
                "<th>peak MB</th></tr>"
                + "".join(f"<tr><td>{e(w['week'])}</td><td>{e(_runs(w))}</td><td class='num'>{w['cpu_s']:.1f}</td>"
                          f"<td class='num'>{w['wall_s']:.1f}</td>"
                          f"<td class='num'>{w['peak_mb']:.0f}</td></tr>" for w in reversed(m.costs)) + "</table>")
    else:
        out += "<p class='muted'>No cost recorded yet.</p>"
    return out


# ---------------------------------------------------------------------------------------------- a dataset

BAR_STACKS = (("clean", "#2ca02c"), ("quarantined", "#ff7f0e"), ("blocked", "#d62728"))


def _rows_chart(d: DatasetBoard, width: int = 640, height: int = 220) -> str:
    return charts.stacked_bars([b.key for b in d.batches], BAR_STACKS,
                               {b.key: [b.rows_clean, b.rows_quarantined, b.rows_blocked] for b in d.batches},
                               f"rows per batch: {d.name}", width, height)


def dataset_page(d: DatasetBoard, urls: Urls) -> str:
    chart = _rows_chart(d)
    rows = []
    for b in reversed(d.batches):
        fails = "".join(f"<li>[{e(f.get('severity'))}] <code>{e(f.get('rule'))}</code>"
                        f"{'(' + e(f.get('column')) + ')' if f.get('column') else ''} ×{e(f.get('count'))}: "
                        f"{e(f.get('message'))}</li>" for f in b.failures)
        fails_html = (f"<details><summary>{len(b.failures)} rule(s) broken</summary><ul>{fails}</ul></details>"
                      if b.failures else "")
        kept = (f"<br><span class='bad'>{b.blocked_files} blocked file(s) kept "
                f"({b.rows_blocked:,} rows)</span>" if b.blocked_files else "")
        links = " · ".join(p for p in (file_link(b.data_docs, urls, "Data Docs"), file_link(b.report, urls, "result"),
                                       link(urls.dag_run(f"ingest_validate__{d.name}", b.run_id), "Airflow run"))
                           if p)
        rows.append(f"<tr class='batch' data-verdict='{e(b.verdict)}'><td>{e(b.key)}</td><td>{e(b.batch_file)}</td>"
                    f"<td class='{'bad' if b.verdict == 'blocked' else 'ok'}'>{e(b.verdict)}{kept}</td>"
                    f"<td class='num'>{b.rows_landed:,}</td><td class='num'>{b.rows_clean:,}</td>"
                    f"<td class='num'>{b.rows_quarantined:,}</td><td>{fails_html}</td><td>{links}</td></tr>")
    t = d.totals
    body = (f"<h1>Dataset <span id='dataset-name'>{e(d.name)}</span></h1><p>{e(d.description)}</p>"
            f"<p>Cadence <code>{e(d.cadence)}</code>; owners {e(', '.join(d.owners))}; read by "
            f"{', '.join(link(urls.page('models', r), r) for r in d.read_by) or 'no model'}. "
            f"{t['batches']} batches: {t['accepted']} accepted, {t['blocked']} blocked (now or before a re-landing), "
            f"{t['rows_quarantined']:,} rows quarantined. {file_link(d.data_docs_index, urls, 'Data Docs site')}</p>"
            + _problems(d.problems)
            + f"<h2>Rows per batch</h2><div class='chart' id='rows-chart'>{chart}</div>"
            "<h2>Batches</h2><table id='batches'><tr><th>interval</th><th>file</th><th>verdict</th><th>landed</th>"
            "<th>clean</th><th>quarantined</th><th>rules</th><th>links</th></tr>" + "".join(rows) + "</table>")
    return layout_page(f"Flywheel: {d.name}", urls, body)



# ---------------------------------------------------------------------------------------------- runbooks


def runbooks_page(runbooks: Sequence[tuple[str, str]], index_html: str, urls: Urls, missing: str = "") -> str:
    """The runbooks' index: each runbook (name, heading) linked, then the index's own text (`index_html`, already
    safe HTML: pipelines/runbooks.py `render_index`). `missing`: the name someone asked for and that does not
    exist (said first, with the list to choose from)."""
    items = "".join(f"<li>{link(urls.page('runbooks', name), heading)} <span class='muted'>({e(name)})</span></li>"
                    for name, heading in runbooks)
    lead = (f"<div class='msg err' id='error'>There is no runbook called {e(missing)}: "
            "choose one of these.</div>" if missing else "")
    body = (f"<h1>Runbooks</h1>{lead}<p class='muted'>What to do when Flywheel tells you something is wrong: "
            "each email links its own.</p>"
            f"<ul id='runbooks'>{items}</ul><div class='runbook' id='runbooks-index'>{index_html}</div>")
    return layout_page("Flywheel: runbooks", urls, body)


def runbook_page(heading: str, body_html: str, urls: Urls) -> str:
    """One runbook: its HTML (`body_html`, already safe HTML: pipelines/runbooks.py `render_runbook`)."""
    back = f"<p>{link(urls.page('runbooks', ''), 'All runbooks')}</p>"
    body = f"<div class='runbook' id='runbook'>{body_html}</div>{back}"
    return layout_page(f"Flywheel runbook: {heading}", urls, body)
