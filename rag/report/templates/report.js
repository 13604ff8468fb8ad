(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var pinned = null, hover = null;
  function all(sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); }
  function pct(x) {
    var p = x * 100;
    return p === 0 ? "0%" : p < 1 ? p.toFixed(1) + "%" : Math.round(p) + "%";
  }
  var cards = all(".card");
  var triggers = all(".sent, .srow, .sref, .sdetail");

  function showMark(card, i) {
    var box = card.querySelector(".chunk.clamped");
    if (!box) return;
    var mark = i === null ? null
      : card.querySelector('mark.ev[data-s~="' + i + '"]') || card.querySelector('mark.span[data-s~="' + i + '"]');
    box.scrollTop = mark ? Math.max(0, mark.getBoundingClientRect().top - box.getBoundingClientRect().top + box.scrollTop - 24) : 0;
  }

  function apply() {
    var i = hover !== null ? hover : pinned;
    var s = i === null ? null : data.sentences[i] || null;
    if (!s) i = null;
    document.body.classList.toggle("selecting", s !== null);
    triggers.forEach(function (el) {
      var k = +el.getAttribute("data-s");
      el.classList.toggle("active", k === i);
      el.classList.toggle("pinned", k === pinned);
      if (el.hasAttribute("aria-pressed")) el.setAttribute("aria-pressed", String(k === pinned));
    });
    var max = s ? Math.max.apply(null, s.support.concat([1e-9])) : 1;
    cards.forEach(function (card, k) {
      var w = s ? s.support[k] || 0 : 0;
      card.style.setProperty("--w", s ? (w / max).toFixed(3) : "0");
      card.style.setProperty("--share", (100 * w).toFixed(1) + "%");
      card.classList.toggle("lit", !!s && w > 0.005);
      card.classList.toggle("cited", !!s && s.cites.indexOf(k + 1) >= 0);
      card.classList.toggle("has-ev", !!s && s.evidence.some(function (e) { return e.n === k + 1; }));
      card.querySelector(".s-v").textContent = s ? "S" + (i + 1) + " " + pct(w) : "";
      all("mark.span, mark.ev", card).forEach(function (m) {
        var at = i === null ? -1 : m.getAttribute("data-s").split(" ").indexOf(String(i));
        m.classList.toggle("on", at >= 0);
        // evidence is tinted by its mass for the selected sentence, else by the strongest one here
        if (m.classList.contains("ev")) {
          m.style.setProperty("--m", at >= 0 ? m.getAttribute("data-m").split(" ")[at] : m.getAttribute("data-rest"));
        }
      });
      showMark(card, i);
    });
  }

  function setHash() {
    try {
      var url = location.pathname + location.search + (pinned === null ? "" : "#focus=" + (pinned + 1));
      history.replaceState(null, "", url);
    } catch (e) { /* some file:// contexts refuse; the selection still works */ }
  }
  function pin(i) {
    pinned = pinned === i ? null : i;
    setHash();
    apply();
  }

  triggers.forEach(function (el) {
    var i = +el.getAttribute("data-s");
    el.addEventListener("mouseenter", function () { hover = i; apply(); });
    el.addEventListener("mouseleave", function () { hover = null; apply(); });
    el.addEventListener("focus", function () { hover = i; apply(); });
    el.addEventListener("blur", function () { hover = null; apply(); });
    el.addEventListener("click", function () { pin(i); });
    if (el.classList.contains("sent")) {
      el.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pin(i); }
      });
    }
  });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && pinned !== null) { pinned = null; setHash(); apply(); }
  });

  all("a.cite").forEach(function (a) {
    a.addEventListener("click", function (e) {
      var card = document.getElementById("src-" + a.getAttribute("data-n"));
      if (!card) return;
      e.preventDefault();
      card.scrollIntoView({ behavior: "smooth", block: "nearest" });
      card.classList.add("flash");
      setTimeout(function () { card.classList.remove("flash"); }, 900);
    });
  });

  all(".chunk.long").forEach(function (box) {
    box.classList.add("clamped");
    if (box.scrollHeight <= box.clientHeight + 4) { box.classList.remove("clamped"); return; }
    var btn = box.parentNode.querySelector(".more");
    if (!btn) return;
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var open = box.classList.toggle("clamped") === false;
      btn.textContent = open ? "Show less" : "Show full chunk";
      btn.setAttribute("aria-expanded", String(open));
      if (!open) showMark(box.parentNode, hover !== null ? hover : pinned);
    });
  });

  function fromUrl() {
    var m = /(?:^#|[#&?])focus=(\d+)/.exec(location.hash) || /[?&]focus=(\d+)/.exec(location.search);
    var n = m ? parseInt(m[1], 10) : NaN;
    if (n >= 1 && n <= data.sentences.length) {
      pinned = n - 1;
      var el = document.querySelector('.sent[data-s="' + pinned + '"]');
      if (el && el.scrollIntoView) el.scrollIntoView({ block: "nearest" });
    }
    apply();
  }
  window.addEventListener("hashchange", function () { pinned = null; fromUrl(); });
  fromUrl();
  // transitions only after the first paint, so a deep-linked selection shows at once
  requestAnimationFrame(function () { requestAnimationFrame(function () { document.body.classList.add("ready"); }); });
})();
