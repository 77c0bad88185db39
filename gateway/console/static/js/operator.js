// The operator view: usage per team over time, the upstream key pool, and recent errors.

import { api, withQuery } from "./api.js";
import { COLORS, lineChart } from "./chart.js";
import { $, clock, h, usd } from "./dom.js";

const REFRESH_MS = 15000;
const FORMATS = { spend_usd: usd };

async function drawUsage() {
  const metric = $("#series-metric").value;
  const series = await api(withQuery("/admin/usage/series", { days: $("#series-days").value }));
  const format = FORMATS[metric] || ((v) => String(Math.round(v * 100) / 100));
  const lines = series.data.map((team) => ({ name: team.team, values: team[metric] }));
  const labels = series.days.map((day) => day.slice(5));
  $("#chart").replaceChildren(lineChart(lines, labels, format, $("#chart").clientWidth));
  $("#legend").replaceChildren(
    ...lines.map((line, index) => {
      const swatch = h("span", { class: "swatch" });
      swatch.style.background = COLORS[index % COLORS.length];
      const total = line.values.reduce((sum, v) => sum + v, 0);
      return h(
        "li",
        {},
        swatch,
        h("b", {}, line.name),
        ` ${format(total)} in ${series.days.length} days`,
      );
    }),
  );
}

function untilText(key) {
  const until = key.state === "cooling" ? key.cooldown_until : key.recheck_at;
  if (!until) return "—";
  const what = key.state === "cooling" ? "cools until" : "re-check at";
  return `${what} ${clock(Date.parse(until) / 1000)}`;
}

function keyRow(upstream, key) {
  const enable = h(
    "button",
    { type: "button", class: "enable", onclick: () => enableKey(upstream.name, key.fingerprint) },
    "Re-enable",
  );
  return h(
    "tr",
    { "data-key": key.fingerprint },
    h("td", {}, h("code", {}, key.fingerprint)),
    h("td", {}, h("span", { class: `badge ${key.state}` }, key.state)),
    h("td", { class: "number" }, String(key.in_flight)),
    h("td", {}, untilText(key)),
    h("td", { class: "message" }, key.last_error || "—"),
    h("td", {}, key.state === "healthy" ? null : enable),
  );
}

async function drawPool() {
  const pool = await api("/admin/upstreams");
  const head = ["Key", "State", "In flight", "Until", "Last error", ""];
  $("#pool").replaceChildren(
    ...pool.data.map((upstream) =>
      h(
        "div",
        { class: "upstream", "data-upstream": upstream.name },
        h(
          "h3",
          {},
          upstream.name,
          h("small", {}, ` ${upstream.kind} · priority ${upstream.priority}`),
        ),
        h(
          "div",
          { class: "scroll" },
          h(
            "table",
            {},
            h("thead", {}, h("tr", {}, ...head.map((name) => h("th", {}, name)))),
            h("tbody", {}, ...upstream.keys.map((key) => keyRow(upstream, key))),
          ),
        ),
      ),
    ),
  );
}

async function enableKey(upstream, fingerprint) {
  $("#pool-error").textContent = "";
  try {
    const path = `/admin/upstreams/${encodeURIComponent(upstream)}/keys`;
    await api(`${path}/${encodeURIComponent(fingerprint)}/enable`, { method: "POST" });
  } catch (problem) {
    $("#pool-error").textContent = problem.message;
  }
  await drawPool();
}

async function drawErrors() {
  const errors = await api(withQuery("/admin/errors", { limit: 50 }));
  if (errors.data.length === 0) {
    $("#errors").replaceChildren(h("p", { class: "hint" }, "No errors recorded."));
    return;
  }
  const head = ["Time", "Status", "Code", "Team", "Model", "Route", "Request", "Message"];
  const rows = errors.data.map((e) =>
    h(
      "tr",
      { "data-request": e.request_id },
      h("td", {}, clock(e.time)),
      h("td", { class: "number" }, String(e.status)),
      h("td", {}, e.code || "—"),
      h("td", {}, e.team || "—"),
      h("td", {}, e.model || "—"),
      h("td", {}, h("code", {}, e.route)),
      h("td", {}, h("code", {}, e.request_id)),
      h("td", { class: "message" }, e.message),
    ),
  );
  $("#errors").replaceChildren(
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, ...head.map((name) => h("th", {}, name)))),
      h("tbody", {}, ...rows),
    ),
  );
}

async function refresh() {
  await Promise.all([drawUsage(), drawPool(), drawErrors()]);
}

export async function openOperator() {
  $("#series-metric").addEventListener("change", drawUsage);
  $("#series-days").addEventListener("change", drawUsage);
  let resized = null;
  window.addEventListener("resize", () => {
    clearTimeout(resized);
    resized = setTimeout(() => drawUsage().catch(() => {}), 200);
  });
  $("#operator-refresh").addEventListener("click", refresh);
  await refresh();
  setInterval(() => refresh().catch(() => {}), REFRESH_MS);
}
