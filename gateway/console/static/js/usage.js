// The team's use of its limits: requests this minute, in flight, images today, spend this month.

import { api } from "./api.js";
import { $, h, usd } from "./dom.js";

const METERS = [
  ["requests_this_minute", "Requests this minute", String],
  ["in_flight", "In flight", String],
  ["images_today", "Images today", String],
  ["spend_this_month_usd", "Spend this month", usd],
];

function meter(label, { used, limit }, format) {
  const bar = h("span", { class: "fill" });
  const share = limit ? Math.min(used / limit, 1) : 0;
  bar.style.width = `${(share * 100).toFixed(1)}%`;
  const level = share >= 0.9 ? "high" : share >= 0.7 ? "mid" : "low";
  return h(
    "div",
    { class: `meter ${level}`, "data-meter": label },
    h("span", { class: "label" }, label),
    h(
      "span",
      { class: "value" },
      format(used),
      h("small", {}, limit === null ? " · no limit" : ` / ${format(limit)}`),
    ),
    h("span", { class: "track" }, bar),
  );
}

/** Fetch and draw the meters; returns the usage (it names the team and its models). */
export async function refreshUsage() {
  const usage = await api("/v1/console/usage");
  $("#usage").replaceChildren(
    ...METERS.map(([field, label, format]) => meter(label, usage[field], format)),
  );
  return usage;
}
