// A Chart.js chart as a Preact component: made once, its data replaced on each render.
import { useEffect, useRef } from "preact/hooks";
import { BarController, BarElement, CategoryScale, Chart, Legend, LinearScale, Tooltip } from "chart.js";
import { html } from "../html.js";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Legend, Tooltip);

export function BarChart({ labels, datasets, stacked = false, label, testId }) {
  const canvas = useRef(null);
  const chart = useRef(null);
  useEffect(() => {
    chart.current = new Chart(canvas.current, {
      type: "bar",
      data: { labels, datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: { legend: { display: datasets.length > 1, position: "bottom" } },
        scales: {
          x: { stacked, grid: { display: false }, ticks: { autoSkip: true, maxRotation: 0 } },
          y: { stacked, beginAtZero: true, ticks: { precision: 0 } },
        },
      },
    });
    return () => chart.current?.destroy();
  }, []);
  useEffect(() => {
    if (chart.current === null) return;
    chart.current.data.labels = labels;
    chart.current.data.datasets = datasets;
    chart.current.update();
  }, [labels, datasets]);
  return html`<div class="chart" data-testid=${testId}><canvas ref=${canvas} role="img" aria-label=${label}></canvas></div>`;
}
