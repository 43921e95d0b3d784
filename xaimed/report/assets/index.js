// The index page: run summary, failures and warnings, and a paginated grid of cases x methods.
// Only one page of rows is in the DOM and thumbnails load lazily, so a run of 5,000 cases x
// 5 methods filters and sorts in a few milliseconds.
"use strict";
(function () {
  const R = window.XAIMED_REPORT;
  const el = R.el;
  const fmt = R.fmt;
  const byId = (id) => document.getElementById(id);
  let data = null;
  const state = { page: 0, view: [] };

  function summary() {
    const s = data.summary;
    byId("title").textContent = "xaimed report: " + s.cases + " case(s), " + s.methods.length + " method(s)";
    const states = Object.entries(s.states).map(([k, v]) => k + " " + v).join(", ");
    const rows = [
      ["model", s.model + (s.model_file ? " (" + s.model_file + ")" : "")],
      ["model SHA-256", s.model_sha256],
      ["config SHA-256", s.config_sha256],
      ["methods", s.methods.join(", ")],
      ["cases", states],
      ["maps", s.maps],
      ["compute time", fmt(s.compute_s, 4) + " s"],
      ["device", s.device],
      ["xaimed", s.xaimed_run + " (run), " + s.xaimed_report + " (report)"],
      ["evaluated", s.evaluated ? "yes" : "no (run `xaimed evaluate` for metrics)"],
      ["identifiers", data.report.identifiers ? "shown (report.identifiers: true)" : "left out"],
    ];
    byId("summary").appendChild(el("dl", { class: "summary" },
      rows.map(([k, v]) => [el("dt", {}, k), el("dd", { class: "mono" }, v === "" ? "n/a" : v)])));
  }

  function evaluation() {
    if (!data.evaluation.length && !data.evaluationPictures.length) return;
    const section = byId("evaluation");
    section.hidden = false;
    section.appendChild(el("summary", {}, "Evaluation: cohort means, curves (" + data.evaluation.length + " values)"));
    if (data.evaluation.length) {
      section.appendChild(el("table", { class: "small" },
        el("thead", {}, el("tr", {}, ["method", "metric", "n", "mean", "interval"].map((h) => el("th", {}, h)))),
        el("tbody", {}, data.evaluation.map((r) => el("tr", {},
          el("td", {}, r.method), el("td", {}, r.metric), el("td", {}, r.n),
          el("td", {}, fmt(r.mean)), el("td", {}, "[" + fmt(r.ci_low) + ", " + fmt(r.ci_high) + "]"))))));
    }
    section.appendChild(el("div", { class: "pictures" },
      data.evaluationPictures.map((src) => el("a", { href: src }, el("img", { src, loading: "lazy", alt: src })))));
  }

  function problems() {
    const section = byId("problems");
    const f = data.failures;
    const failures = el("details", { open: f.length > 0 && f.length <= 20, id: "failures" },
      el("summary", {}, "Failures (" + f.length + ")"),
      el("ul", {}, f.slice(0, 500).map((x) => el("li", {},
        el("a", { href: caseHref(x.case_id, x.column) }, x.case_id), " ", x.column, ": ",
        el("b", {}, x.type), " ", x.error))),
      f.length > 500 ? el("p", {}, (f.length - 500) + " more: filter the grid by status failed.") : null);
    const w = data.warnings;
    const warnings = el("details", { open: w.length > 0 && w.length <= 20, id: "warnings" },
      el("summary", {}, "Warnings (" + w.length + ")"),
      el("ul", {}, w.map((x) => el("li", {}, el("b", {}, x.source), ": ", x.text))));
    section.append(failures, warnings);
  }

  function caseHref(id, column) {
    return "case.html?case=" + encodeURIComponent(id) + (column ? "&method=" + encodeURIComponent(column) : "");
  }

  function options(select, values, allLabel) {
    select.appendChild(el("option", { value: "" }, allLabel));
    for (const v of values) select.appendChild(el("option", { value: v }, v === "" ? "(none)" : v));
  }

  function controls() {
    const cases = data.cases;
    options(byId("f-method"), data.columns.map((c) => c.key), "all methods");
    options(byId("f-status"), [...new Set(cases.map((c) => c[4]))].sort(), "any status");
    options(byId("f-pred"), [...new Set(cases.map((c) => c[2]))].sort(), "any prediction");
    options(byId("f-label"), [...new Set(cases.map((c) => c[1]))].sort(), "any label");
    const sort = byId("sort");
    sort.appendChild(el("option", { value: "order" }, "run order"));
    sort.appendChild(el("option", { value: "id" }, "case id"));
    sort.appendChild(el("option", { value: "prob" }, "probability"));
    data.metrics.forEach((m, i) => sort.appendChild(el("option", { value: "m" + i }, "metric: " + m)));
    byId("order").value = "asc";
    sort.addEventListener("change", () => {
      byId("order").value = sort.value === "order" || sort.value === "id" ? "asc" : "desc";
      update(true);
    });
    for (const id of ["f-method", "f-status", "f-pred", "f-label", "order", "per-page"]) {
      byId(id).addEventListener("change", () => update(true));
    }
    byId("f-text").addEventListener("input", () => update(true));
    byId("prev").addEventListener("click", () => { state.page -= 1; render(); });
    byId("next").addEventListener("click", () => { state.page += 1; render(); });
  }

  function visibleColumns() {
    const chosen = byId("f-method").value;
    return data.columns.map((c, i) => i).filter((i) => !chosen || data.columns[i].key === chosen);
  }

  function sortKey(row, how, columns) {
    if (how === "prob") return row[3];
    const metric = Number(how.slice(1));
    // A metric sorts by the chosen method's value, or the mean over the shown methods.
    const values = columns.map((i) => row[5][i] && row[5][i][4][metric]).filter((v) => v !== null && v !== undefined);
    return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
  }

  function update(resetPage) {
    const text = byId("f-text").value.trim().toLowerCase();
    const status = byId("f-status").value;
    const pred = byId("f-pred").value;
    const label = byId("f-label").value;
    const hasStatus = status !== "";
    const hasPred = byId("f-pred").selectedIndex > 0;
    const hasLabel = byId("f-label").selectedIndex > 0;
    const columns = visibleColumns();
    let view = [];
    data.cases.forEach((row, i) => {
      if (text && !row[0].toLowerCase().includes(text)) return;
      if (hasStatus && row[4] !== status) return;
      if (hasPred && row[2] !== pred) return;
      if (hasLabel && row[1] !== label) return;
      view.push(i);
    });
    const how = byId("sort").value;
    const sign = byId("order").value === "asc" ? 1 : -1;
    if (how === "id") {
      view.sort((a, b) => sign * data.cases[a][0].localeCompare(data.cases[b][0]));
    } else if (how !== "order") {
      const keys = new Map(view.map((i) => [i, sortKey(data.cases[i], how, columns)]));
      // Cases without a value go last whatever the order.
      view.sort((a, b) => {
        const ka = keys.get(a), kb = keys.get(b);
        if (ka === null || ka === undefined) return (kb === null || kb === undefined) ? a - b : 1;
        if (kb === null || kb === undefined) return -1;
        return sign * (ka - kb) || a - b;
      });
    } else if (sign < 0) {
      view.reverse();
    }
    state.view = view;
    if (resetPage) state.page = 0;
    render();
  }

  function cell(row, i) {
    const c = row[5][i];
    const column = data.columns[i].key;
    if (!c) return el("td", { class: "cell missing" }, "-");
    const [status, thumb, error, warning, values] = c;
    const how = byId("sort").value;
    const metricText = how.startsWith("m") && values[Number(how.slice(1))] !== null
      ? data.metrics[Number(how.slice(1))] + " " + fmt(values[Number(how.slice(1))]) : null;
    const content = status === "ok"
      ? (thumb ? el("img", { src: thumb, loading: "lazy", alt: row[0] + " " + column, width: 240, height: 90 })
               : el("span", {}, "map (no picture)"))
      : el("span", { class: "status-" + status }, status + (error >= 0 ? ": " + data.errors[error] : ""));
    return el("td", { class: "cell status-" + status, title: warning >= 0 ? data.warningTexts[warning] : null },
      el("a", { href: caseHref(row[0], column) }, content),
      warning >= 0 ? el("div", { class: "warn" }, "warning") : null,
      metricText ? el("div", { class: "metric" }, metricText) : null);
  }

  function render() {
    const perPage = Number(byId("per-page").value);
    const pages = Math.max(1, Math.ceil(state.view.length / perPage));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    byId("page-info").textContent = "page " + (state.page + 1) + " of " + pages;
    byId("count").textContent = state.view.length + " of " + data.cases.length + " cases";
    byId("prev").disabled = state.page === 0;
    byId("next").disabled = state.page >= pages - 1;
    const columns = visibleColumns();
    const head = byId("grid").tHead;
    head.replaceChildren(el("tr", {}, ["case", "label", "predicted", "probability", "status"].map((h) => el("th", {}, h)),
      columns.map((i) => el("th", {}, data.columns[i].key))));
    const body = byId("grid").tBodies[0];
    const rows = state.view.slice(state.page * perPage, (state.page + 1) * perPage).map((index) => {
      const row = data.cases[index];
      return el("tr", { "data-case": row[0] },
        el("td", {}, el("a", { href: caseHref(row[0]) }, row[0])),
        el("td", {}, row[1]), el("td", {}, row[2]), el("td", {}, fmt(row[3])),
        el("td", { class: "status-" + row[4] }, row[4]),
        columns.map((i) => cell(row, i)));
    });
    body.replaceChildren(...rows);
    document.body.dataset.ready = "1";
  }

  R.load("data/index.js", "index").then((loaded) => {
    data = loaded;
    summary();
    evaluation();
    problems();
    controls();
    update(true);
  }).catch((err) => {
    byId("summary").textContent = "The report's data could not be loaded (" + err.message + "); write the report again with `xaimed report RUN`.";
  });
})();
