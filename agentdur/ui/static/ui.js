// Live refresh: poll the JSON API and reload when what the page shows has changed.
(function () {
  "use strict";
  var PERIOD_MS = 3000;
  function poll(url, changed) {
    var timer = setInterval(function () {
      var live = document.getElementById("live");
      if (live && !live.checked) { return; }
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data && changed(data)) { clearInterval(timer); window.location.reload(); }
        })
        .catch(function () {});
    }, PERIOD_MS);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var runs = document.getElementById("runs");
    if (runs && runs.dataset.live === "yes") {
      var shown = Array.prototype.map.call(
        runs.querySelectorAll("tr.run-row"),
        function (row) { return row.dataset.runId + ":" + row.dataset.status; }
      ).join(",");
      poll(runs.dataset.api, function (data) {
        return data.runs.map(function (r) { return r.run_id + ":" + r.status; }).join(",") !== shown;
      });
    }
    var header = document.getElementById("run-header");
    if (header && header.dataset.live === "yes") {
      poll(header.dataset.api, function (data) {
        return data.status !== header.dataset.status ||
          String(data.steps_recorded) !== header.dataset.steps;
      });
    }
  });
})();
