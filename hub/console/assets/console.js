// The fleet console's only script: it asks before a rollout action, and
// keeps the live part of a page (an element with data-live, the URL of
// its fragment) fresh while the page is visible. Everything works
// without it: the forms post either way, and a page is correct as loaded.
(function () {
  "use strict";
  document.addEventListener("submit", function (e) {
    var q = e.target.getAttribute("data-confirm");
    if (q && !window.confirm(q)) {
      e.preventDefault();
    }
  });

  var every = 5000;
  var live = document.querySelector("[data-live]");
  if (!live) {
    return;
  }
  var url = live.getAttribute("data-live");
  var timer = null;
  var busy = false; // one request at a time

  function schedule() {
    window.clearTimeout(timer);
    timer = document.visibilityState === "visible" ? window.setTimeout(refresh, every) : null;
  }

  function done(html) {
    busy = false;
    if (html === null) {
      // The session ended: stop; a reload goes to the login page.
      live.setAttribute("data-live-stopped", "session ended");
      return;
    }
    if (html) {
      live.innerHTML = html;
    }
    schedule();
  }

  function refresh() {
    if (busy) {
      return;
    }
    busy = true;
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (resp) {
        if (resp.status === 401) {
          return null;
        }
        return resp.ok ? resp.text() : "";
      })
      .then(done, function () {
        done(""); // the hub is restarting: try again later
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") {
      refresh(); // catch up at once, then every 5 s
    } else {
      schedule();
    }
  });
  schedule();
})();
