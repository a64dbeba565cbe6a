// GourmetGram page: preview, drag and drop, and Submit without leaving the page.
// Plain JavaScript, no framework; without it the form still posts and the page answers.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.fetch || !window.FormData) { return; }
  var input = document.getElementById("file");
  var drop = document.getElementById("drop");
  var preview = document.getElementById("preview");
  var hint = document.getElementById("drop-hint");
  var fileName = document.getElementById("file-name");
  var submit = document.getElementById("submit");
  var result = document.getElementById("result");
  var maxBytes = parseInt(form.getAttribute("data-max-bytes"), 10);
  var limitText = form.getAttribute("data-limit-text");
  var objectUrl = null;

  function showError(title, message) {
    var box = document.createElement("div");
    box.className = "result error";
    box.setAttribute("role", "alert");
    var text = document.createElement("div");
    var h = document.createElement("h2");
    h.className = "result-title";
    h.textContent = title;
    var p = document.createElement("p");
    p.className = "result-message";
    p.textContent = message;
    text.appendChild(h);
    text.appendChild(p);
    box.appendChild(text);
    result.replaceChildren(box);
  }

  function sizeText(n) {
    return n < 1e6 ? Math.max(1, Math.round(n / 1e3)) + " kB" : (n / 1e6).toFixed(1) + " MB";
  }

  function currentFile() {
    return input.files && input.files.length ? input.files[0] : null;
  }

  function fileChosen() {
    var file = currentFile();
    result.replaceChildren();
    if (objectUrl) { URL.revokeObjectURL(objectUrl); objectUrl = null; }
    if (!file) {
      preview.classList.add("hidden");
      hint.classList.remove("hidden");
      fileName.textContent = "";
      submit.disabled = true;
      return;
    }
    fileName.textContent = file.name + " \u00b7 " + sizeText(file.size);
    if (file.size > maxBytes) {
      submit.disabled = true;
      showError("That photo is too large", "Photos up to " + limitText + " are accepted. Try a smaller photo.");
    } else {
      submit.disabled = false;
    }
    if (file.type.indexOf("image/") === 0) {
      objectUrl = URL.createObjectURL(file);
      preview.src = objectUrl;
      preview.classList.remove("hidden");
      hint.classList.add("hidden");
    } else {
      preview.classList.add("hidden");
      hint.classList.remove("hidden");
    }
  }

  input.addEventListener("change", fileChosen);

  ["dragenter", "dragover"].forEach(function (type) {
    drop.addEventListener(type, function (e) {
      e.preventDefault();
      drop.classList.add("dragging");
    });
  });
  ["dragleave", "dragend"].forEach(function (type) {
    drop.addEventListener(type, function () { drop.classList.remove("dragging"); });
  });
  drop.addEventListener("drop", function (e) {
    e.preventDefault();
    drop.classList.remove("dragging");
    if (e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      fileChosen();
    }
  });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (!currentFile()) {
      showError("No photo chosen", "Choose a photo first, then press Submit.");
      return;
    }
    submit.disabled = true;
    submit.classList.add("busy");
    submit.setAttribute("aria-busy", "true");
    fetch(form.getAttribute("data-predict-url"), {
      method: "POST",
      body: new FormData(form),
      headers: { "Accept": "text/html" },
      credentials: "same-origin"
    }).then(function (resp) {
      return resp.text().then(function (text) {
        var type = resp.headers.get("Content-Type") || "";
        if (type.indexOf("text/html") === 0 && text.trim()) {
          // Our own server-rendered fragment; every value in it is escaped by the template.
          result.innerHTML = text;
          wireFeedback();
          if (result.scrollIntoView) { result.scrollIntoView({ block: "nearest", behavior: "smooth" }); }
        } else {
          showError("Something went wrong", "The server answered " + resp.status + ". Please try again.");
        }
      });
    }).catch(function () {
      showError("No connection", "We could not reach GourmetGram. Check your connection and try again.");
    }).then(function () {
      submit.disabled = !currentFile();
      submit.classList.remove("busy");
      submit.removeAttribute("aria-busy");
    });
  });

  // Right / Wrong under an answer: "Wrong" first opens the class picker.
  function wireFeedback() {
    var fb = document.getElementById("feedback-form");
    if (!fb) { return; }
    var correction = document.getElementById("feedback-correction");
    var label = document.getElementById("feedback-label");
    var status = document.getElementById("feedback-status");
    correction.classList.add("collapsed");
    fb.addEventListener("submit", function (e) {
      e.preventDefault();
      var verdict = e.submitter ? e.submitter.value : "right";
      if (verdict === "wrong" && !label.value) {
        correction.classList.remove("collapsed");
        label.focus();
        return;
      }
      var data = new FormData(fb);
      data.set("verdict", verdict);
      if (verdict === "right") { data.delete("label"); }
      fetch(fb.getAttribute("action"), {
        method: "POST", body: data, credentials: "same-origin",
        headers: { "Accept": "text/html", "X-Fragment": "1" }
      }).then(function (resp) {
        return resp.text().then(function (text) {
          // Our own server-rendered fragment, escaped by the template.
          if (resp.ok) {
            fb.outerHTML = text;
          } else {
            status.innerHTML = text;
          }
        });
      }).catch(function () {
        showError("No connection", "We could not send your answer. Check your connection and try again.");
      });
    });
  }

  document.documentElement.classList.add("js");
  wireFeedback();
  submit.disabled = !currentFile();
})();
