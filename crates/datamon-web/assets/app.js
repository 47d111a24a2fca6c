// datamon web UI: renders the page its URL names from the JSON API under /api/v1/.
// Every value from the store is inserted as text (textContent, attribute values), never as
// HTML, so names like <script> show as written. No external libraries.
"use strict";

const API = "/api/v1";
const SVG_NS = "http://www.w3.org/2000/svg";

// ---- helpers ---------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const enc = encodeURIComponent;
const encPath = (p) => p.split("/").filter((c) => c !== "").map(enc).join("/");

function q(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x) => x !== "" && u.append(k, x));
    else if (v !== undefined && v !== null && v !== "") u.append(k, String(v));
  }
  const s = u.toString();
  return s ? "?" + s : "";
}

class ApiError extends Error {
  constructor(status, kind, message) {
    super(message);
    this.status = status;
    this.kind = kind;
  }
}

async function api(path) {
  const r = await fetch(API + path, { headers: { Accept: "application/json" } });
  let body = null;
  try {
    body = await r.json();
  } catch (_) {
    body = null;
  }
  if (!r.ok) {
    throw new ApiError(r.status, body && body.error, (body && body.message) || r.statusText);
  }
  return body;
}

function size(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let x = n;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return i === 0 ? n + " B" : x.toFixed(1) + " " + units[i];
}

const mode = (m) => (m === undefined ? "" : "0" + m.toString(8));
const time = (t) => (t ? t.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "");
const short = (id) => (id ? String(id).slice(0, 10) + "…" : "");

const repoUrl = (r) => "/repos/" + enc(r);
const bundleUrl = (r, id) => repoUrl(r) + "/bundles/" + enc(id);
const fileUrl = (r, id, p) => bundleUrl(r, id) + (p ? "/files/" + encPath(p) : "");
const runUrl = (id) => "/runs/" + enc(id);
const rawUrl = (r, id, p, inline) =>
  API + "/repos/" + enc(r) + "/bundles/" + enc(id) + "/raw" + q({ path: p, inline: inline ? 1 : "" });

function link(href, text, cls) {
  return h("a", { href, class: cls }, text);
}

function tags(list, cls) {
  return (list || []).map((t) => h("span", { class: "tag " + cls }, t));
}

function table(headers, rows, cls) {
  return h(
    "table",
    { class: cls || "" },
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows)
  );
}

function kv(pairs) {
  return h(
    "dl",
    { class: "kv" },
    pairs.filter((p) => p[1] !== undefined && p[1] !== null && p[1] !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])
  );
}

function setTitle(text, ...extra) {
  document.title = text + " · datamon";
  return h("h1", { id: "title" }, text, extra);
}

// ---- pages -------------------------------------------------------------------------------

async function reposPage() {
  const { repos } = await api("/repos");
  const rows = repos.map((r) =>
    h(
      "tr",
      { class: "repo-row" },
      h("td", {}, link(repoUrl(r.name), r.name, "repo-link")),
      h("td", {}, r.description),
      h("td", { class: "num" }, r.bundles),
      h("td", { class: "num" }, r.latest ? size(r.latest.bytes) : ""),
      h("td", {}, r.latest ? time(r.latest.created_at) : "")
    )
  );
  return [
    setTitle("Repos"),
    repos.length ? table(["Repo", "Description", "Bundles", "Size (latest)", "Last upload"], rows, "repos") : h("p", { class: "empty" }, "No repos yet."),
  ];
}

function repoNav(repo, current) {
  const items = [
    ["Bundles", repoUrl(repo)],
    ["Labels", repoUrl(repo) + "/labels"],
  ];
  return h(
    "nav",
    { class: "sub" },
    h("a", { href: "/" }, "Repos"),
    " / ",
    link(repoUrl(repo), repo, "crumb"),
    " · ",
    items.map(([t, u]) => [link(u, t, t === current ? "here" : ""), " "])
  );
}

function bundleRow(repo, b) {
  return h(
    "li",
    { class: "bundle-row", "data-id": b.id },
    h("div", { class: "line1" }, link(bundleUrl(repo, b.id), b.message || "(no message)", "bundle-link"), " ", tags(b.labels, "label"), tags(b.heads, "branch")),
    h(
      "div",
      { class: "line2" },
      h("code", {}, b.id),
      " · ",
      b.author,
      " · ",
      time(b.created_at),
      " · ",
      b.stats.files + " files, " + size(b.stats.bytes),
      b.branch ? " · on " + b.branch : "",
      Object.keys(b.meta || {}).length ? [" · ", Object.entries(b.meta).map(([k, v]) => h("span", { class: "tag meta" }, k + "=" + v))] : ""
    )
  );
}

async function repoPage(repo, params) {
  const filters = {
    since: params.get("since") || "",
    until: params.get("until") || "",
    meta: params.getAll("meta"),
  };
  const [info, page] = await Promise.all([
    api("/repos/" + enc(repo)),
    api("/repos/" + enc(repo) + "/bundles" + q({ ...filters, before: params.get("before") || "", limit: 50 })),
  ]);
  const form = h(
    "form",
    { class: "filters", method: "get", action: repoUrl(repo) },
    h("label", {}, "Since ", h("input", { name: "since", value: filters.since, placeholder: "YYYY-MM-DD" })),
    h("label", {}, "Until ", h("input", { name: "until", value: filters.until, placeholder: "YYYY-MM-DD" })),
    h("label", {}, "Metadata ", h("input", { name: "meta", value: filters.meta[0] || "", placeholder: "key=value" })),
    h("button", { type: "submit" }, "Filter")
  );
  const pager = h(
    "p",
    { class: "pager" },
    params.get("before") ? link(repoUrl(repo) + q(filters), "Newest", "newest") : "",
    " ",
    page.next ? link(repoUrl(repo) + q({ ...filters, before: page.next }), "Older →", "older") : ""
  );
  return [
    repoNav(repo, "Bundles"),
    setTitle(repo),
    h("p", { class: "description" }, info.repo.description),
    h("p", { class: "counts" }, page.total + " bundles", info.repo.latest ? " · latest " + size(info.repo.latest.bytes) : "",
      info.branches.length ? [" · branches: ", info.branches.map((b) => h("span", { class: "tag branch" }, b.name))] : ""),
    form,
    page.bundles.length ? h("ol", { class: "timeline" }, page.bundles.map((b) => bundleRow(repo, b))) : h("p", { class: "empty" }, "No bundles match."),
    pager,
  ];
}

function breadcrumbs(repo, id, path) {
  const parts = path.split("/").filter((c) => c !== "");
  const out = [link(fileUrl(repo, id, ""), "/", "crumb")];
  parts.forEach((p, i) => {
    out.push(" ", link(fileUrl(repo, id, parts.slice(0, i + 1).join("/")), p, "crumb"), i + 1 < parts.length ? " /" : "");
  });
  return h("p", { class: "breadcrumbs" }, out);
}

async function bundleHeader(repo, id) {
  const { bundle: b } = await api("/repos/" + enc(repo) + "/bundles/" + enc(id));
  const parent = b.parents && b.parents[0];
  return {
    b,
    el: [
      repoNav(repo, ""),
      setTitle(b.message || "(no message)", " ", tags(b.labels, "label"), tags(b.heads, "branch")),
      kv([
        ["Bundle", h("code", { id: "bundle-id" }, b.id)],
        ["Author", b.author],
        ["Committed", time(b.created_at)],
        ["Branch", b.branch],
        ["Files", b.stats.files + " files, " + size(b.stats.bytes)],
        ["Parents", (b.parents || []).length ? b.parents.map((p) => [link(bundleUrl(repo, p), short(p)), " "]) : null],
        ["Metadata", Object.keys(b.meta || {}).length ? Object.entries(b.meta).map(([k, v]) => h("span", { class: "tag meta" }, k + "=" + v)) : null],
      ]),
      h(
        "p",
        { class: "actions" },
        link(bundleUrl(repo, b.id) + "/lineage", "Lineage", "lineage-link"),
        parent ? [" · ", link(repoUrl(repo) + "/diff/" + enc(parent) + "/" + enc(b.id), "Diff with parent", "diff-parent")] : ""
      ),
    ],
  };
}

function previewOf(repo, id, p) {
  switch (p.preview) {
    case "text":
    case "json":
      return h("pre", { class: "preview " + p.preview }, p.text);
    case "table":
      return table(p.rows.length ? p.rows[0] : [], p.rows.slice(1).map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))), "preview csv");
    case "parquet":
      return h(
        "div",
        { class: "preview parquet" },
        h("p", { class: "counts" }, p.num_rows + " rows in " + p.row_groups + " row groups, " + p.columns + " columns" + (p.truncated ? "; the first " + (p.rows.length - 1) + " rows shown" : "")),
        table(["Column", "Type"], p.schema.map((c) => h("tr", {}, h("td", {}, c.name), h("td", {}, c.type))), "schema"),
        table(p.rows.length ? p.rows[0] : [], p.rows.slice(1).map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))), "rows")
      );
    case "image":
      return h("img", { class: "preview image", src: rawUrl(repo, id, p.path, true), alt: p.name });
    case "symlink":
      return h("p", { class: "preview" }, "Symbolic link to ", h("code", {}, p.target));
    case "binary":
      return h("p", { class: "preview" }, "Binary file: download it to look inside.");
    default:
      return h("p", { class: "preview" }, p.reason || "No preview.");
  }
}

async function filesPage(repo, id, path, params) {
  const offset = Number(params.get("offset") || 0);
  const [head, t] = await Promise.all([
    bundleHeader(repo, id),
    api("/repos/" + enc(repo) + "/bundles/" + enc(id) + "/tree" + q({ path, offset, limit: 200 })),
  ]);
  const out = [head.el, breadcrumbs(repo, id, path)];
  if (t.kind === "dir") {
    const rows = t.entries.map((e) => {
      const p = (path ? path.replace(/\/+$/, "") + "/" : "") + e.name;
      return h(
        "tr",
        { class: "entry-row", "data-kind": e.kind },
        h("td", {}, link(fileUrl(repo, id, p), e.name + (e.kind === "dir" ? "/" : ""), "entry-link")),
        h("td", { class: "num" }, e.kind === "dir" ? "" : size(e.size)),
        h("td", {}, mode(e.mode)),
        h("td", {}, time(e.mtime)),
        h("td", {}, e.kind === "file" ? h("a", { href: rawUrl(repo, id, p), download: e.name, class: "download" }, "download") : "")
      );
    });
    out.push(
      h("p", { class: "counts" }, t.total + " entries"),
      table(["Name", "Size", "Mode", "Modified", ""], rows, "files"),
      h(
        "p",
        { class: "pager" },
        offset > 0 ? link(fileUrl(repo, id, path) + q({ offset: Math.max(0, offset - 200) || "" }), "← Previous", "prev") : "",
        " ",
        t.next_offset ? link(fileUrl(repo, id, path) + q({ offset: t.next_offset }), "Next →", "next") : ""
      )
    );
  } else {
    const p = await api("/repos/" + enc(repo) + "/bundles/" + enc(id) + "/preview" + q({ path }));
    out.push(
      h("p", { class: "file-info" }, size(p.size), " · mode ", mode(p.mode), " · ", time(p.mtime), " · ",
        p.kind === "file" ? h("a", { href: rawUrl(repo, id, path), download: p.name, class: "download" }, "download") : "",
        p.truncated ? " · preview truncated" : ""),
      previewOf(repo, id, p)
    );
  }
  return out;
}

async function diffPage(repo, a, b, params) {
  const offset = Number(params.get("offset") || 0);
  const d = await api("/repos/" + enc(repo) + "/diff" + q({ a, b, offset }));
  const textOk = (s) => s && s.kind === "file" && s.size <= 256 * 1024;
  const rows = d.changes.map((c) => {
    const holder = h("td", { colspan: 5, class: "textdiff-holder" });
    const extra = h("tr", { class: "textdiff-row", hidden: true }, holder);
    const canDiff = c.change === "M" ? textOk(c.a) && textOk(c.b) : textOk(c.a) || textOk(c.b);
    const button = canDiff
      ? h("button", {
          class: "show-text-diff",
          type: "button",
          onclick: async () => {
            extra.hidden = !extra.hidden;
            if (holder.childNodes.length) return;
            try {
              const t = await api("/repos/" + enc(repo) + "/diff/text" + q({ a: d.a, b: d.b, path: c.path }));
              holder.append(
                t.text
                  ? h("pre", { class: "textdiff" }, t.lines.map((l) => h("div", { class: "diff-line op" + ({ "+": "-add", "-": "-del", " ": "-same" }[l.op] || "") }, l.op + " " + l.text)))
                  : h("p", {}, "Not a text file.")
              );
            } catch (e) {
              holder.append(h("p", { class: "error" }, e.message));
            }
          },
        }, "text diff")
      : "";
    const target = c.change === "D" ? d.a : d.b;
    return [
      h(
        "tr",
        { class: "change-row", "data-change": c.change },
        h("td", { class: "change change-" + c.change }, c.change),
        h("td", {}, link(fileUrl(repo, target, c.path), c.path, "change-link")),
        h("td", { class: "num" }, c.a ? size(c.a.size) : ""),
        h("td", { class: "num" }, c.b ? size(c.b.size) : ""),
        h("td", {}, button)
      ),
      extra,
    ];
  });
  return [
    repoNav(repo, ""),
    setTitle("Diff"),
    h("p", {}, "From ", link(bundleUrl(repo, d.a), short(d.a), "diff-a"), " to ", link(bundleUrl(repo, d.b), short(d.b), "diff-b"), " · " + d.total + " changes"),
    d.total ? table(["", "Path", "Size before", "Size after", ""], rows, "changes") : h("p", { class: "empty" }, "No changes."),
    d.next_offset ? h("p", { class: "pager" }, link(repoUrl(repo) + "/diff/" + enc(a) + "/" + enc(b) + q({ offset: d.next_offset }), "More →", "next")) : "",
  ];
}

async function labelsPage(repo) {
  const { labels } = await api("/repos/" + enc(repo) + "/labels");
  const rows = labels.map((l) =>
    h("tr", { class: "label-row" }, h("td", {}, link(repoUrl(repo) + "/labels/" + enc(l.name), l.name, "label-link")), h("td", {}, link(bundleUrl(repo, l.bundle), l.bundle)), h("td", {}, l.author), h("td", {}, time(l.time)))
  );
  return [repoNav(repo, "Labels"), setTitle("Labels of " + repo), labels.length ? table(["Label", "Bundle", "Set by", "When"], rows, "labels") : h("p", { class: "empty" }, "No labels.")];
}

async function labelPage(repo, label) {
  const { history } = await api("/repos/" + enc(repo) + "/labels/" + enc(label));
  const rows = history.map((r) =>
    h("tr", { class: "history-row" }, h("td", {}, link(bundleUrl(repo, r.bundle), r.bundle)), h("td", {}, r.previous ? link(bundleUrl(repo, r.previous), short(r.previous)) : ""), h("td", {}, r.author), h("td", {}, time(r.time)))
  );
  return [repoNav(repo, "Labels"), setTitle("Label " + label), table(["Bundle", "Previously", "Set by", "When"], rows, "history")];
}

function bundleRef(repo, id) {
  return [link(repoUrl(repo), repo), " ", link(bundleUrl(repo, id), short(id), "bundle-ref")];
}

async function runsPage(params) {
  const filters = { step: params.get("step") || "", since: params.get("since") || "", until: params.get("until") || "" };
  const offset = Number(params.get("offset") || 0);
  const r = await api("/runs" + q({ ...filters, offset, limit: 50 }));
  const rows = r.runs.map((run) =>
    h(
      "tr",
      { class: "run-row" },
      h("td", {}, link(runUrl(run.id), short(run.id), "run-link")),
      h("td", {}, link("/runs" + q({ step: run.step }), run.step, "step-link")),
      h("td", { class: "status status-" + String(run.status).toLowerCase() }, run.status),
      h("td", {}, time(run.started_at)),
      h("td", {}, run.inputs.map((i) => h("div", {}, bundleRef(i.repo, i.bundle)))),
      h("td", {}, run.outputs.map((o) => h("div", {}, bundleRef(o.repo, o.bundle))))
    )
  );
  return [
    setTitle("Runs"),
    h(
      "form",
      { class: "filters", method: "get", action: "/runs" },
      h("label", {}, "Step ", h("input", { name: "step", value: filters.step })),
      h("label", {}, "Since ", h("input", { name: "since", value: filters.since, placeholder: "YYYY-MM-DD" })),
      h("label", {}, "Until ", h("input", { name: "until", value: filters.until, placeholder: "YYYY-MM-DD" })),
      h("button", { type: "submit" }, "Filter")
    ),
    h("p", { class: "counts" }, r.total + " runs"),
    r.runs.length ? table(["Run", "Step", "Status", "Started", "Inputs", "Outputs"], rows, "runs") : h("p", { class: "empty" }, "No runs match."),
    r.next_offset ? h("p", { class: "pager" }, link("/runs" + q({ ...filters, offset: r.next_offset }), "Older →", "older")) : "",
  ];
}

function mapTable(obj, cls) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("p", { class: "empty" }, "None.");
  return table(["Key", "Value"], entries.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, typeof v === "string" ? v : JSON.stringify(v)))), cls);
}

async function runPage(id) {
  const { run } = await api("/runs/" + enc(id));
  const same = await api("/runs" + q({ step: run.step, limit: 1000 }));
  const older = same.runs.filter((r) => r.id < run.id);
  const prev = older.length ? older[0] : null;
  const code = run.code || {};
  return [
    setTitle("Run " + run.step),
    kv([
      ["Run", h("code", {}, run.id)],
      ["Status", run.status + (run.exit_code !== undefined && run.exit_code !== null ? " (exit " + run.exit_code + ")" : "")],
      ["Git commit", code.git_commit ? code.git_commit + (code.git_dirty ? " (dirty)" : "") : null],
      ["Image", code.image],
      ["Command", (run.command || []).length ? h("code", {}, run.command.join(" ")) : null],
      ["Host", run.host],
      ["User", run.user],
      ["Started", time(run.started_at)],
      ["Finished", time(run.finished_at)],
    ]),
    h("p", { class: "actions" }, link(runUrl(run.id) + "/lineage", "Lineage", "lineage-link"), prev ? [" · ", link(runUrl(prev.id) + "/diff/" + enc(run.id), "Diff with the previous run of this step", "diff-prev")] : ""),
    h("h2", {}, "Parameters"),
    mapTable(run.params, "params"),
    h("h2", {}, "Inputs"),
    h("ul", { class: "inputs" }, run.inputs.map((i) => h("li", {}, bundleRef(i.repo, i.bundle), i.path ? " (" + i.path + ")" : "", i.selector ? " as " + i.selector : ""))),
    h("h2", {}, "Outputs"),
    h("ul", { class: "outputs" }, run.outputs.map((o) => h("li", {}, bundleRef(o.repo, o.bundle)))),
    h("h2", {}, "Metrics"),
    mapTable(run.metrics, "metrics"),
  ];
}

async function runDiffPage(a, b) {
  const { diff: d, causes_changed } = await api("/runs/" + enc(a) + "/diff/" + enc(b));
  const vals = (list) =>
    list.length
      ? table(["Key", "Run A", "Run B"], list.map((v) => h("tr", { class: JSON.stringify(v.a) !== JSON.stringify(v.b) ? "changed" : "" }, h("td", {}, v.key), h("td", {}, v.a === null ? "—" : typeof v.a === "string" ? v.a : JSON.stringify(v.a)), h("td", {}, v.b === null ? "—" : typeof v.b === "string" ? v.b : JSON.stringify(v.b)))), "values")
      : h("p", { class: "empty" }, "None.");
  const slots = (list) =>
    list.length
      ? table(["Slot", "Run A", "Run B", "Changes"], list.map((s) => h("tr", { class: s.a !== s.b ? "changed" : "" }, h("td", {}, s.key), h("td", {}, s.a ? bundleRef(s.repo, s.a) : "—"), h("td", {}, s.b ? bundleRef(s.repo, s.b) : "—"), h("td", {}, s.changes.map((c) => h("div", { class: "slot-change" }, c.kind + " " + c.path))))), "slots")
      : h("p", { class: "empty" }, "None.");
  return [
    setTitle("Run diff"),
    h("p", {}, link(runUrl(d.a.id), "Run A " + short(d.a.id)), " (" + d.a.step + ") → ", link(runUrl(d.b.id), "Run B " + short(d.b.id)), " (" + d.b.step + ")"),
    h("p", { class: causes_changed ? "verdict changed" : "verdict" }, causes_changed ? "The causes differ (code, parameters or inputs)." : "Same code, parameters and inputs."),
    h("p", {}, "Code: ", d.code_changed ? "changed" : "same"),
    h("h2", {}, "Parameters"),
    vals(d.params),
    h("h2", {}, "Inputs"),
    slots(d.inputs),
    h("h2", {}, "Outputs"),
    slots(d.outputs),
    h("h2", {}, "Metrics"),
    vals(d.metrics),
  ];
}

// The lineage graph: bundles and runs in columns by their distance from the sources, edges
// from inputs to runs to outputs; every node is a link.
function lineageGraph(l, focus) {
  const nodes = new Map();
  const bkey = (repo, id) => "b:" + repo + "@" + id;
  for (const b of l.bundles) nodes.set(bkey(b.repo, b.id), { key: bkey(b.repo, b.id), kind: "bundle", label: b.repo, sub: short(b.id), href: bundleUrl(b.repo, b.id), focus: focus === bkey(b.repo, b.id) });
  for (const r of l.runs) nodes.set("r:" + r.id, { key: "r:" + r.id, kind: "run", label: r.step, sub: short(r.id), href: runUrl(r.id), focus: focus === "r:" + r.id });
  const edges = [];
  for (const e of l.edges) {
    const b = bkey(e.repo, e.bundle);
    const r = "r:" + e.run;
    if (!nodes.has(b) || !nodes.has(r)) continue;
    edges.push(e.kind === "Input" || e.kind === "input" ? [b, r] : [r, b]);
  }
  const layer = new Map([...nodes.keys()].map((k) => [k, 0]));
  for (let i = 0; i < nodes.size; i++) {
    let moved = false;
    for (const [from, to] of edges) {
      if (layer.get(to) < layer.get(from) + 1) {
        layer.set(to, layer.get(from) + 1);
        moved = true;
      }
    }
    if (!moved) break;
  }
  const columns = [];
  for (const [k, n] of nodes) {
    const c = layer.get(k);
    (columns[c] = columns[c] || []).push(n);
  }
  const W = 170, H = 46, GX = 60, GY = 20;
  let height = 0;
  columns.forEach((col, ci) =>
    (col || []).forEach((n, ri) => {
      n.x = 10 + ci * (W + GX);
      n.y = 10 + ri * (H + GY);
      height = Math.max(height, n.y + H + 10);
    })
  );
  const width = 20 + columns.length * (W + GX);
  const g = svg("svg", { class: "lineage", width, height: Math.max(height, 60), viewBox: "0 0 " + width + " " + Math.max(height, 60), role: "img" });
  g.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto" }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" }))));
  for (const [from, to] of edges) {
    const a = nodes.get(from), b = nodes.get(to);
    g.append(svg("path", { class: "edge", d: `M${a.x + W},${a.y + H / 2} C${a.x + W + GX / 2},${a.y + H / 2} ${b.x - GX / 2},${b.y + H / 2} ${b.x},${b.y + H / 2}`, "marker-end": "url(#arrow)" }));
  }
  for (const n of nodes.values()) {
    const a = svg("a", { href: n.href, class: "lineage-node " + n.kind + (n.focus ? " focus" : ""), "data-key": n.key });
    a.append(svg("rect", { x: n.x, y: n.y, width: W, height: H, rx: n.kind === "run" ? 16 : 3 }));
    a.append(svg("text", { x: n.x + 8, y: n.y + 19, class: "node-label" }, (n.kind === "run" ? "run " : "") + n.label));
    a.append(svg("text", { x: n.x + 8, y: n.y + 36, class: "node-sub" }, n.sub));
    g.append(a);
  }
  return g;
}

async function bundleLineagePage(repo, id) {
  const { lineage: l } = await api("/repos/" + enc(repo) + "/bundles/" + enc(id) + "/lineage");
  return [repoNav(repo, ""), setTitle("Lineage of " + repo + " " + short(l.bundle)), h("p", {}, link(bundleUrl(repo, l.bundle), "Back to the bundle")), h("div", { class: "graph" }, lineageGraph(l, "b:" + repo + "@" + l.bundle))];
}

async function runLineagePage(id) {
  const { lineage: l } = await api("/runs/" + enc(id) + "/lineage");
  return [setTitle("Lineage of run " + short(id)), h("p", {}, link(runUrl(id), "Back to the run")), h("div", { class: "graph" }, lineageGraph(l, "r:" + id))];
}

// ---- routing -----------------------------------------------------------------------------

const ROUTES = [
  [/^\/$/, () => reposPage()],
  [/^\/runs$/, (m, p) => runsPage(p)],
  [/^\/runs\/([^/]+)$/, (m) => runPage(m[1])],
  [/^\/runs\/([^/]+)\/lineage$/, (m) => runLineagePage(m[1])],
  [/^\/runs\/([^/]+)\/diff\/([^/]+)$/, (m) => runDiffPage(m[1], m[2])],
  [/^\/repos\/([^/]+)$/, (m, p) => repoPage(m[1], p)],
  [/^\/repos\/([^/]+)\/labels$/, (m) => labelsPage(m[1])],
  [/^\/repos\/([^/]+)\/labels\/([^/]+)$/, (m) => labelPage(m[1], m[2])],
  [/^\/repos\/([^/]+)\/diff\/([^/]+)\/([^/]+)$/, (m, p) => diffPage(m[1], m[2], m[3], p)],
  [/^\/repos\/([^/]+)\/bundles\/([^/]+)\/lineage$/, (m) => bundleLineagePage(m[1], m[2])],
  [/^\/repos\/([^/]+)\/bundles\/([^/]+)$/, (m, p) => filesPage(m[1], m[2], "", p)],
  [/^\/repos\/([^/]+)\/bundles\/([^/]+)\/files\/(.*)$/, (m, p) => filesPage(m[1], m[2], m[3], p)],
];

async function render() {
  document.body.dataset.ready = "0";
  const main = document.getElementById("main");
  const path = location.pathname.replace(/\/+$/, "") || "/";
  const params = new URLSearchParams(location.search);
  let content;
  try {
    const route = ROUTES.find(([re]) => re.test(path));
    if (!route) throw new ApiError(404, "NotFound", "No such page: " + path);
    const m = path.match(route[0]).map((x, i) => (i === 0 ? x : decodeURIComponent(x)));
    content = await route[1](m, params);
  } catch (e) {
    content = [setTitle("Error"), h("p", { class: "error", "data-status": e.status || "" }, (e.status ? e.status + ": " : "") + e.message)];
  }
  main.replaceChildren(...[content].flat(Infinity).filter((x) => x));
  document.body.dataset.ready = "1";
}

document.addEventListener("click", (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.target.closest("a");
  if (!a || a.hasAttribute("download")) return;
  const href = a.getAttribute("href");
  if (!href || !href.startsWith("/") || href.startsWith(API)) return;
  ev.preventDefault();
  history.pushState(null, "", href);
  render();
});

document.addEventListener("submit", (ev) => {
  const f = ev.target;
  if (!(f instanceof HTMLFormElement)) return;
  ev.preventDefault();
  const data = new URLSearchParams();
  for (const [k, v] of new FormData(f)) if (v !== "") data.append(k, v);
  const s = data.toString();
  history.pushState(null, "", f.getAttribute("action") + (s ? "?" + s : ""));
  render();
});

window.addEventListener("popstate", render);
render();
