/* pypi-fallback pages: absolute index URLs for the install lines, and instant search on
   the landing page from the static search index. No framework, nothing from elsewhere. */
(function () {
  "use strict";

  /* Install lines name the repository by a link relative to this page; show it absolute. */
  function absoluteIndexUrls() {
    var codes = document.querySelectorAll("[data-index]");
    for (var i = 0; i < codes.length; i++) {
      var el = codes[i];
      if (el.id === "q") continue;
      var url = new URL(el.getAttribute("data-index"), window.location.href).href;
      var target = el.classList.contains("index-url") ? el : el.querySelector(".index-url");
      if (target) target.textContent = url;
    }
  }

  function setupSearch() {
    var input = document.getElementById("q");
    if (!input) return;
    var all = document.getElementById("projects");
    var results = document.getElementById("results");
    var status = document.getElementById("results-status");
    var pages = input.getAttribute("data-pages");
    var index = null;
    var loading = null;
    var LIMIT = 200;

    function load() {
      if (!loading) {
        loading = fetch(input.getAttribute("data-index"), {credentials: "same-origin"})
          .then(function (r) {
            if (!r.ok) throw new Error("HTTP " + r.status);
            return r.json();
          })
          .then(function (data) {
            index = data.projects.map(function (row) {
              return {name: row[0], version: row[1], summary: row[2] || "",
                      repos: row[3] || [], hay: (row[0] + " " + (row[2] || "")).toLowerCase()};
            });
          });
      }
      return loading;
    }

    function item(p) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = pages + encodeURIComponent(p.name) + "/";
      a.textContent = p.name;
      li.appendChild(a);
      var v = document.createElement("span");
      v.className = "version";
      v.textContent = " " + p.version;
      li.appendChild(document.createTextNode(" "));
      li.appendChild(v);
      if (p.summary) {
        var s = document.createElement("span");
        s.className = "summary";
        s.textContent = p.summary;
        li.appendChild(document.createTextNode(" "));
        li.appendChild(s);
      }
      return li;
    }

    function search() {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      if (!words.length) {
        results.hidden = true;
        all.hidden = false;
        status.textContent = "";
        return;
      }
      var norm = words.join("-").replace(/[-_.]+/g, "-");
      var found = index.filter(function (p) {
        return words.every(function (w) { return p.hay.indexOf(w) !== -1; }) ||
          p.name.indexOf(norm) !== -1;
      });
      function rank(p) {
        if (p.name === norm) return 0;
        if (p.name.indexOf(norm) === 0) return 1;
        if (p.name.indexOf(norm) !== -1) return 2;
        return 3;
      }
      found.sort(function (a, b) {
        return rank(a) - rank(b) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
      });
      results.textContent = "";
      var shown = found.slice(0, LIMIT);
      for (var i = 0; i < shown.length; i++) results.appendChild(item(shown[i]));
      all.hidden = true;
      results.hidden = false;
      status.textContent = found.length === 1 ? "1 project matches" :
        found.length + " projects match" +
        (found.length > LIMIT ? " (the first " + LIMIT + " shown)" : "");
    }

    function onInput() {
      if (index) { search(); return; }
      load().then(search, function (err) {
        status.textContent = "Search is unavailable (" + err.message + "); every project is listed below.";
      });
    }

    input.addEventListener("input", onInput);
    input.addEventListener("focus", function () { load().catch(function () {}); });
    input.form.addEventListener("submit", function (ev) { ev.preventDefault(); onInput(); });
    if (input.value) onInput();
  }

  function start() {
    absoluteIndexUrls();
    setupSearch();
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
