// Keyboard shortcuts for reviewers. Progressive enhancement only: every action is a plain form or link.
(function () {
  "use strict";
  function typing(e) {
    var t = e.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  }
  function press(id) {
    var b = document.getElementById(id);
    if (b && !b.disabled) { b.click(); return true; }
    return false;
  }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var category = document.getElementById("category");
    if (typing(e)) {
      if (e.key === "Escape") { e.target.blur(); }
      if (e.key === "Enter" && e.target === category && category.value.trim() !== "") { e.preventDefault(); press("relabel"); }
      return;
    }
    var done = false;
    switch (e.key) {
      case "a": done = press("accept"); break;
      case "o": done = press("outside"); break;
      case "s": done = press("skip"); break;
      case "c": if (category) { category.focus(); done = true; } break;
      case "/": var s = document.getElementById("search-box"); if (s) { s.focus(); done = true; } break;
      case "r": window.location.href = "/review"; done = true; break;
    }
    if (done) e.preventDefault();
  });
  // a form posts once: a double key press must not record two decisions
  document.addEventListener("submit", function (e) {
    var f = e.target;
    if (f.dataset.sent) { e.preventDefault(); return; }
    f.dataset.sent = "1";
  });
})();
