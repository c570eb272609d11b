// sluice web: the little the pages need beyond htmx. A banner when polling fails (the server stopped, the
// database does not answer), gone again with the next good answer.
(function () {
  function bad(ev) {
    document.body.classList.add("offline");
    var b = document.getElementById("offline");
    var x = ev.detail && ev.detail.xhr;
    var why = "the dashboard server does not answer";
    if (x && x.status) {
      try { why = JSON.parse(x.responseText).error || why; } catch (e) { why = x.status + " " + (x.statusText || ""); }
    }
    if (b) { b.textContent = "Live updates stopped: " + why; }
  }
  document.addEventListener("htmx:sendError", bad);
  document.addEventListener("htmx:responseError", bad);
  document.addEventListener("htmx:afterRequest", function (ev) {
    if (ev.detail && ev.detail.successful) { document.body.classList.remove("offline"); }
  });
})();
