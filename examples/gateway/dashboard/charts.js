// Small bar charts drawn as SVG elements (no library): one bar per day.

const NS = "http://www.w3.org/2000/svg";

function el(name, attributes, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attributes || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// A chart of `points` ([{label, value}]) titled `title`, values written with `format`.
export function barChart(title, points, format, id) {
  const width = 320, height = 120, top = 18, bottom = 16;
  const max = Math.max(0, ...points.map((p) => p.value));
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart", "data-chart": id });
  svg.appendChild(el("title", {}, `${title}: ${format(points.reduce((a, p) => a + p.value, 0))} in ${points.length} days`));
  svg.appendChild(el("text", { x: 0, y: 12, class: "chart-title" }, `${title} (max ${format(max)})`));
  const slot = width / Math.max(points.length, 1);
  points.forEach((p, i) => {
    const h = max > 0 ? ((height - top - bottom) * p.value) / max : 0;
    const bar = el("rect", {
      x: (i * slot + 1).toFixed(1),
      y: (height - bottom - h).toFixed(1),
      width: Math.max(slot - 2, 1).toFixed(1),
      height: Math.max(h, p.value > 0 ? 1 : 0).toFixed(1),
      class: "bar",
      "data-day": p.label,
      "data-value": p.value,
    });
    bar.appendChild(el("title", {}, `${p.label}: ${format(p.value)}`));
    svg.appendChild(bar);
  });
  svg.appendChild(el("line", { x1: 0, y1: height - bottom, x2: width, y2: height - bottom, class: "axis" }));
  if (points.length) {
    svg.appendChild(el("text", { x: 0, y: height - 3, class: "chart-label" }, points[0].label.slice(5)));
    svg.appendChild(el("text", { x: width, y: height - 3, class: "chart-label end" }, points[points.length - 1].label.slice(5)));
  }
  return svg;
}
