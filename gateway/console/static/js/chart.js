// A line chart drawn as SVG: one line per series over shared x labels. No library needed.

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 240;
const PAD = { left: 56, right: 28, top: 12, bottom: 28 };
const LABEL_SPACE = 64;
export const COLORS = [
  "#3b82f6",
  "#f97316",
  "#10b981",
  "#e11d48",
  "#8b5cf6",
  "#eab308",
  "#06b6d4",
  "#64748b",
];

function svg(tag, attributes = {}, text = null) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== null) element.textContent = text;
  return element;
}

/** A round step so that about `ticks` gridlines cover 0…max. */
function niceStep(max, ticks = 4) {
  const raw = max / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  return step;
}

/** `series`: [{name, values}], `labels`: one per x position, `format`: value → text.
 * Drawn at `width` pixels so that text keeps its size on any screen. */
export function lineChart(series, labels, format = String, width = 720) {
  const WIDTH = Math.max(width, 280);
  const max = Math.max(0, ...series.flatMap((s) => s.values));
  const step = max > 0 ? niceStep(max) : 1;
  const top = max > 0 ? Math.ceil(max / step) * step : 4;
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (labels.length > 1 ? (i * plotW) / (labels.length - 1) : plotW / 2);
  const y = (v) => PAD.top + plotH - (v / top) * plotH;
  const root = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", class: "line-chart" });
  root.append(svg("title", {}, "Usage per team and day"));
  for (let v = 0; v <= top + step / 2; v += step) {
    root.append(
      svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(v), y2: y(v), class: "grid" }),
    );
    root.append(
      svg("text", { x: PAD.left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, format(v)),
    );
  }
  const every = Math.max(1, Math.ceil(labels.length / Math.floor(plotW / LABEL_SPACE)));
  labels.forEach((label, i) => {
    if ((labels.length - 1 - i) % every === 0) {
      root.append(
        svg("text", { x: x(i), y: HEIGHT - 8, class: "axis", "text-anchor": "middle" }, label),
      );
    }
  });
  series.forEach((s, index) => {
    const color = COLORS[index % COLORS.length];
    const points = s.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const group = svg("g", { "data-series": s.name });
    group.append(
      svg("polyline", {
        points,
        fill: "none",
        stroke: color,
        "stroke-width": 2,
        "stroke-linejoin": "round",
      }),
    );
    s.values.forEach((v, i) => {
      const dot = svg("circle", { cx: x(i), cy: y(v), r: v > 0 ? 3 : 1.5, fill: color });
      dot.append(svg("title", {}, `${s.name} · ${labels[i]}: ${format(v)}`));
      group.append(dot);
    });
    root.append(group);
  });
  return root;
}
