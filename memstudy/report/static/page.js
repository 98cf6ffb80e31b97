/* memstudy's interactive report: draws the charts with plotly.js, highlights one layer's buffers on the
   timeline, sorts the tables. Reads everything from the page's JSON block; fetches nothing. */
(function () {
  "use strict";
  var payload = JSON.parse(document.getElementById("memstudy-data").textContent);
  var config = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d"]};
  var charts = {};

  function formatBytes(n) {
    var units = ["B", "KiB", "MiB", "GiB"], value = n, i = 0;
    while (Math.abs(value) >= 1024 && i < units.length - 1) { value /= 1024; i += 1; }
    return i === 0 ? value.toFixed(0) + " B" : value.toFixed(2) + " " + units[i];
  }

  /* Full colour for the bands of `layer` (null: every band), faded for the rest; a line says what is lit. */
  function highlightLayer(chartId, layer) {
    var gd = document.getElementById(chartId), indices = [], opacities = [], count = 0, total = 0;
    gd.data.forEach(function (trace, i) {
      if (!trace.meta || trace.meta.key === undefined) { return; }
      var lit = layer === null || trace.meta.layer === layer;
      indices.push(i);
      opacities.push(lit ? 1 : 0.15);
      if (lit && layer !== null) { count += 1; total += trace.meta.nbytes; }
    });
    var status = document.getElementById(chartId + "-layer-status"), name = "";
    document.querySelectorAll("button.ms-layer[data-chart='" + chartId + "']").forEach(function (b) {
      var pressed = layer !== null && b.dataset.layer === layer;
      b.setAttribute("aria-pressed", String(pressed));
      if (pressed) { name = b.textContent; }
    });
    status.textContent = layer === null ? "" : name + ": " + count +
      " buffers, " + formatBytes(total) + " in all (each counted over its whole life)";
    status.dataset.buffers = layer === null ? "" : String(count);
    return Plotly.restyle(gd, {opacity: opacities}, indices);
  }

  function wireLayers() {
    document.querySelectorAll("button.ms-layer").forEach(function (button) {
      button.addEventListener("click", function () {
        var chartId = button.dataset.chart, pressed = button.getAttribute("aria-pressed") === "true";
        highlightLayer(chartId, pressed ? null : button.dataset.layer);
      });
    });
  }

  /* A cell's sort key: its value (data-value, written by the renderer from the number itself), else its text. */
  function sortKey(cell) {
    if (cell.dataset.value !== undefined) { return {number: true, value: parseFloat(cell.dataset.value)}; }
    return {number: false, value: cell.textContent.trim().toLowerCase()};
  }
  function compare(a, b) {
    if (a.number !== b.number) { return a.number ? -1 : 1; }  /* numbers first, then text ("—" last) */
    return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
  }
  function wireTables() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      table.querySelectorAll("thead th").forEach(function (th, column) {
        th.addEventListener("click", function () {
          var ascending = th.getAttribute("aria-sort") !== "ascending";
          table.querySelectorAll("thead th").forEach(function (other) { other.removeAttribute("aria-sort"); });
          th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
          var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
          rows.sort(function (r1, r2) {
            var order = compare(sortKey(r1.cells[column]), sortKey(r2.cells[column]));
            return ascending ? order : -order;
          });
          rows.forEach(function (row) { body.appendChild(row); });
        });
      });
    });
  }

  function draw(chart) {
    var gd = document.getElementById(chart.id);
    charts[chart.id] = chart;
    return Plotly.newPlot(gd, chart.data, chart.layout, config).then(function () {
      gd.dataset.rendered = "yes";
    });
  }

  wireLayers();
  wireTables();
  Promise.all(payload.charts.map(draw)).then(function () {
    document.body.dataset.ready = "yes";
  }, function (error) {
    document.body.dataset.ready = "failed";
    console.error("memstudy: a chart failed to draw: " + error);
  });
}());
