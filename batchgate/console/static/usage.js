// Usage charts: stacked bars per day from the JSON the page embeds (#usage-data).
// Each series is drawn as the running total of the stack up to it, largest first, so
// the bars stack; the numbers themselves are in the table under the charts.
(function () {
  "use strict";
  var COLOURS = ["#3b6fb6", "#d9822b", "#2f9e6e", "#b5475a", "#7d5ab5", "#8a8a2e", "#2a9bb0", "#a0522d"];

  function stacked(rows) {
    var sums = [];
    var running = null;
    rows.forEach(function (row) {
      running = running ? running.map(function (v, i) { return v + row[i]; }) : row.slice();
      sums.push(running);
    });
    return sums;
  }

  function draw(el, days, names, rows, money) {
    if (!el || !window.uPlot) return;
    var totals = stacked(rows);
    var series = [{}];
    var data = [days];
    for (var i = names.length - 1; i >= 0; i--) {
      var colour = COLOURS[i % COLOURS.length];
      series.push({
        label: names[i],
        stroke: colour,
        fill: colour,
        paths: uPlot.paths.bars({ size: [0.6, 60] }),
        value: (function (idx) {
          return function (u, v, s, di) {
            if (di == null) return "—";
            var own = rows[idx][di];
            return money ? "$" + own.toFixed(6) : own.toLocaleString();
          };
        })(i),
      });
      data.push(totals[i]);
    }
    var opts = {
      width: Math.max(320, el.clientWidth || 800),
      height: 260,
      series: series,
      scales: { x: { time: true } },
      axes: [{}, { values: function (u, ticks) { return ticks.map(function (t) { return money ? "$" + t : t.toLocaleString(); }); }, size: 70 }],
      legend: { live: true },
    };
    new uPlot(opts, data, el);
  }

  function init() {
    var source = document.getElementById("usage-data");
    if (!source) return;
    var chart = JSON.parse(source.textContent);
    draw(document.getElementById("chart-tokens"), chart.days, chart.names, chart.tokens, false);
    draw(document.getElementById("chart-cost"), chart.days, chart.names, chart.cost, true);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
