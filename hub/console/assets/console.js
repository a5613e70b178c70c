// The fleet console's only script: it asks before a rollout action.
// Everything works without it (the forms post either way).
(function () {
  "use strict";
  document.addEventListener("submit", function (e) {
    var q = e.target.getAttribute("data-confirm");
    if (q && !window.confirm(q)) {
      e.preventDefault();
    }
  });
})();
