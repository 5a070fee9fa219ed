// Draws every plotly figure of the page: each `.plotly-chart` names, in data-figure, the id of
// the <script type="application/json"> element holding its figure (built server-side).
(function () {
  "use strict";

  function draw(root) {
    if (typeof window.Plotly === "undefined") { return; }
    root.querySelectorAll(".plotly-chart[data-figure]").forEach(function (element) {
      var source = document.getElementById(element.dataset.figure);
      if (!source || element.dataset.drawn === "true") { return; }
      var figure = JSON.parse(source.textContent);
      var config = { displaylogo: false, responsive: true, displayModeBar: "hover" };
      window.Plotly.newPlot(element, figure.data || [], figure.layout || {}, config).then(function () {
        element.dataset.drawn = "true";
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSettle", function (event) { draw(event.target); });
})();
