// PC2 cloud: uploads with progress, confirmations. The pages work without
// it (forms post to the server); this only makes them nicer.
"use strict";
(function () {
  var meta = document.querySelector('meta[name="csrf"]');
  var csrf = meta ? meta.content : "";

  function encPath(p) {
    return p.split("/").map(encodeURIComponent).join("/");
  }

  function put(url, file, bar, done) {
    var x = new XMLHttpRequest();
    x.open("PUT", url);
    x.setRequestHeader("X-CSRF-Token", csrf);
    x.setRequestHeader("Accept", "application/json");
    x.upload.onprogress = function (e) {
      if (e.lengthComputable) bar.value = e.loaded / e.total;
    };
    x.onload = function () {
      var msg = "";
      if (x.status >= 300) {
        try { msg = JSON.parse(x.responseText).error; } catch (e) { msg = "HTTP " + x.status; }
      }
      done(msg);
    };
    x.onerror = function () { done("network error"); };
    x.send(file);
  }

  var form = document.getElementById("upload-form");
  if (form && window.XMLHttpRequest) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var input = document.getElementById("file");
      var dir = form.getAttribute("data-dir");
      var list = Array.prototype.slice.call(input.files);
      var box = document.getElementById("progress");
      var failed = [];
      var left = list.length;
      if (!left) return;
      form.querySelector("button").disabled = true;
      list.forEach(function (f) {
        var row = document.createElement("div");
        var bar = document.createElement("progress");
        bar.max = 1; bar.value = 0;
        row.className = "upload";
        row.appendChild(document.createTextNode(f.name + " "));
        row.appendChild(bar);
        box.appendChild(row);
        var path = dir ? dir + "/" + f.name : f.name;
        put("/_/api/files/" + encPath(path), f, bar, function (err) {
          if (err) { failed.push(f.name + ": " + err); row.className = "upload err"; row.appendChild(document.createTextNode(" " + err)); }
          else { bar.value = 1; row.className = "upload done"; }
          if (--left === 0) {
            var q = failed.length ? "?err=" + encodeURIComponent("Failed: " + failed.join("; "))
                                  : "?msg=" + encodeURIComponent("Uploaded " + list.length + " file(s).");
            location.href = location.pathname + q;
          }
        });
      });
    });
  }

  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      if (!window.confirm(f.getAttribute("data-confirm"))) ev.preventDefault();
    });
  });
  document.querySelectorAll("a[data-back]").forEach(function (a) {
    a.addEventListener("click", function (ev) {
      if (history.length > 1) { ev.preventDefault(); history.back(); }
    });
  });
})();
