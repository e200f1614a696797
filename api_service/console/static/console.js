// MoonMind console: the live parts. No framework, no build step.
"use strict";

(function () {
  var POLL_MS = 2000;
  var opened = null; // the log opened for the step in progress

  // Runs list: the rows are re-rendered by the server and swapped in every POLL_MS.
  function liveList(tbody) {
    var src = tbody.getAttribute("data-src");
    function tick() {
      fetch(src, { credentials: "same-origin", cache: "no-store" }).then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (html !== null && html !== undefined) { tbody.innerHTML = html; }
      }).catch(function () {}).finally(function () { setTimeout(tick, POLL_MS); });
    }
    setTimeout(tick, POLL_MS);
  }

  function seconds(a, b) {
    var s = Math.max(0, Math.round((Date.parse(b) - Date.parse(a)) / 1000));
    if (isNaN(s)) { return ""; }
    if (s < 60) { return s + "s"; }
    return Math.floor(s / 60) + "m " + ("0" + (s % 60)).slice(-2) + "s";
  }

  function showStep(data) {
    var li = document.getElementById("step-" + data.name);
    if (!li) { return; }
    li.className = "step " + data.status;
    li.setAttribute("data-status", data.status);
    li.querySelector(".state").textContent = data.status;
    if (data.started_at && data.completed_at) {
      li.querySelector(".dur").textContent = seconds(data.started_at, data.completed_at);
    }
    if (data.message) { li.querySelector(".msg").textContent = data.message; }
    if (data.status === "in_progress") {
      document.getElementById("current-step").textContent = "current step: " + data.name;
      // Only the current step's log is opened for the reader (others stay as they are).
      var box = document.getElementById("log-" + data.name);
      if (opened && opened !== box) { opened.open = false; }
      if (box) { box.open = true; opened = box; }
    }
  }

  function appendLog(data) {
    var box = document.getElementById("log-" + data.step);
    if (!box) { return; }
    var pre = box.querySelector("pre");
    var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(document.createTextNode(data.line + "\n"));
    if (atEnd) { pre.scrollTop = pre.scrollHeight; }
  }

  // Run page: steps and logs from the event stream; the page reloads when the run's own
  // status changes (to show the diff, the approval, the artifacts and the right buttons).
  function liveRun(main) {
    var runId = main.getAttribute("data-run");
    var shown = main.getAttribute("data-status");
    var logs = document.getElementById("logs");
    var stream = new EventSource(logs.getAttribute("data-events"));
    stream.addEventListener("step", function (e) { showStep(JSON.parse(e.data)); });
    stream.addEventListener("log", function (e) { appendLog(JSON.parse(e.data)); });
    stream.addEventListener("status", function (e) {
      stream.close();
      var status = JSON.parse(e.data).status;
      if (status !== shown) { window.location.reload(); }
    });
    if (main.getAttribute("data-terminal") === "1") { return; }
    function tick() {
      fetch("/runs/" + runId + "/state", { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (state) {
          var approved = state && (state.approval ? "1" : "0");
          if (state && (state.status !== shown || approved !== main.getAttribute("data-approved"))) {
            window.location.reload();
            return;
          }
          setTimeout(tick, POLL_MS);
        }).catch(function () { setTimeout(tick, POLL_MS); });
    }
    setTimeout(tick, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var tbody = document.getElementById("rows");
    if (tbody && tbody.getAttribute("data-src")) { liveList(tbody); }
    var main = document.getElementById("run");
    if (main && document.getElementById("logs")) { liveRun(main); }
  });
})();
