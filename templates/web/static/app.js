// Paper Digest: small improvements on top of pages that work without JavaScript.
(function () {
  "use strict";

  // The sign-up form starts with the server's default time zone: use the browser's instead.
  function fillTimezone() {
    var select = document.querySelector("select[data-auto-timezone]");
    if (!select || !window.Intl) return;
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (!zone) return;
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].value === zone) {
        select.value = zone;
        return;
      }
    }
  }

  // Live preview: as keywords are typed, fetch the ranked results as an HTML fragment.
  function livePreview(input) {
    var target = document.getElementById(input.getAttribute("data-preview-target"));
    if (!target) return;
    var base = document.querySelector(".brand").getAttribute("href").replace(/\/$/, "");
    var timer = null;
    var controller = null;
    var last = null;

    function update() {
      var keywords = input.value.trim();
      if (keywords === last) return;
      last = keywords;
      if (controller) controller.abort();
      controller = window.AbortController ? new AbortController() : null;
      target.setAttribute("aria-busy", "true");
      var url = base + "/preview/results?keywords=" + encodeURIComponent(keywords);
      fetch(url, { headers: { Accept: "text/html" }, signal: controller && controller.signal })
        .then(function (response) {
          if (!response.ok && response.status !== 422) throw new Error(String(response.status));
          return response.text();
        })
        .then(function (html) {
          // The server escapes everything it puts in this fragment.
          target.innerHTML = html;
          target.removeAttribute("aria-busy");
        })
        .catch(function (error) {
          if (error.name === "AbortError") return;
          target.removeAttribute("aria-busy");
          target.textContent = "The preview is not available right now.";
        });
    }

    // A link that carries the keywords along (preview page -> sign-up form).
    var carry = document.querySelector("a[data-keywords-link]");

    input.addEventListener("input", function () {
      if (carry) {
        var typed = input.value.trim();
        carry.href = base + "/" + (typed ? "?keywords=" + encodeURIComponent(typed) : "");
      }
      clearTimeout(timer);
      timer = setTimeout(update, 350);
    });
    // Pages rendered with results already (preview, manage) need no first fetch.
    if (target.hasAttribute("data-rendered")) last = input.value.trim();
    // A field the server marked invalid already shows its error beside it: not again below.
    else if (input.value.trim() && input.getAttribute("aria-invalid") !== "true") update();
  }

  document.addEventListener("DOMContentLoaded", function () {
    fillTimezone();
    var inputs = document.querySelectorAll("[data-preview-target]");
    for (var i = 0; i < inputs.length; i++) livePreview(inputs[i]);
  });
})();
