// The prodkg query page: posts the query to this server's /sparql and shows the answer. No external code.
(function () {
  "use strict";
  var form = document.getElementById("form");
  var box = document.getElementById("query");
  var state = document.getElementById("state");
  var out = document.getElementById("result");
  var download = document.getElementById("download");
  var given = new URLSearchParams(window.location.search).get("query");
  if (given) { box.value = given; }

  function cell(term) {
    if (!term) { return ""; }
    if (term.type === "uri") { return term.value; }
    if (term.type === "bnode") { return "_:" + term.value; }
    return term.value + (term["xml:lang"] ? "@" + term["xml:lang"] : "");
  }

  function table(data) {
    var vars = data.head.vars || [];
    var t = document.createElement("table");
    var head = t.insertRow();
    vars.forEach(function (v) { var th = document.createElement("th"); th.textContent = v; head.appendChild(th); });
    data.results.bindings.forEach(function (row) {
      var tr = t.insertRow();
      vars.forEach(function (v) { tr.insertCell().textContent = cell(row[v]); });
    });
    return t;
  }

  function show(node) { out.textContent = ""; out.appendChild(node); }

  function run() {
    var query = box.value;
    var started = Date.now();
    state.textContent = "running…";
    download.hidden = true;
    fetch("/sparql", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded",
                 "Accept": "application/sparql-results+json, text/turtle;q=0.9" },
      body: new URLSearchParams({ query: query })
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      return response.text().then(function (text) { return { response: response, type: type, text: text }; });
    }).then(function (r) {
      var seconds = ((Date.now() - started) / 1000).toFixed(2);
      if (!r.response.ok) {
        var message = r.text;
        try { message = JSON.parse(r.text).message; } catch (e) { /* not JSON */ }
        var p = document.createElement("p"); p.className = "error"; p.textContent = r.response.status + ": " + message;
        show(p); state.textContent = "failed after " + seconds + " s"; return;
      }
      document.getElementById("run").textContent = "run " + (r.response.headers.get("Prodkg-Run") || "");
      if (r.type.indexOf("json") >= 0) {
        var data = JSON.parse(r.text);
        if (data.boolean !== undefined) {
          var b = document.createElement("p"); b.textContent = String(data.boolean); show(b);
          state.textContent = "answered in " + seconds + " s"; return;
        }
        show(table(data));
        state.textContent = data.results.bindings.length + " rows in " + seconds + " s";
        download.href = "/sparql?query=" + encodeURIComponent(query);
        download.setAttribute("download", "result.csv");
        download.hidden = false;
        download.onclick = function (ev) {
          ev.preventDefault();
          fetch("/sparql?query=" + encodeURIComponent(query), { headers: { "Accept": "text/csv" } })
            .then(function (x) { return x.blob(); })
            .then(function (blob) {
              var a = document.createElement("a"); a.href = URL.createObjectURL(blob); a.download = "result.csv"; a.click();
            });
        };
      } else {
        var pre = document.createElement("pre"); pre.textContent = r.text; show(pre);
        state.textContent = "answered in " + seconds + " s";
      }
    }).catch(function (err) {
      state.textContent = "failed: " + err;
    });
  }

  form.addEventListener("submit", function (ev) { ev.preventDefault(); run(); });
  box.addEventListener("keydown", function (ev) { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); run(); } });
})();
