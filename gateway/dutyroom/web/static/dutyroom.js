// CampusGuard duty room: keep the page's sections live over server-sent events.
// The server says which sections changed; each is fetched again, rendered by the
// server for this session. EventSource reconnects by itself and sends Last-Event-ID,
// so the server replays what was missed; on every (re)connect all sections reload.
"use strict";
(function () {
  const csrf = document.querySelector("meta[name=csrf]").content;
  const live = document.getElementById("live");
  const notices = document.getElementById("notices");
  const soundButton = document.getElementById("sound");
  let audio = null; // created on the operator's click: browsers allow sound only then
  const pending = new Map();

  function sections() {
    return Array.from(document.querySelectorAll("section[data-section]"));
  }

  function refresh(el) {
    const n = (pending.get(el) || 0) + 1; // only the newest answer is shown
    pending.set(el, n);
    fetch(el.dataset.fragment, { credentials: "same-origin" })
      .then(function (r) {
        if (r.status === 401) { window.location = "/login"; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html !== null && pending.get(el) === n) {
          el.innerHTML = html;
          document.body.dataset.refreshed = String(Date.now());
        }
      })
      .catch(function () {});
  }

  function beep(loud) {
    if (!audio) { return; }
    const t = audio.currentTime;
    const times = loud ? 6 : 2;
    for (let i = 0; i < times; i++) {
      const o = audio.createOscillator();
      const g = audio.createGain();
      o.frequency.value = loud ? 1320 : 880;
      g.gain.value = loud ? 0.9 : 0.3;
      o.connect(g).connect(audio.destination);
      o.start(t + i * 0.3);
      o.stop(t + i * 0.3 + 0.18);
    }
  }

  function notify(n) {
    if (!n) { return; }
    if (n.sound) { beep(n.sound === "realert"); }
    if (n.kind === "realert") {
      const p = document.createElement("p");
      p.className = "realert";
      p.textContent = "Unacknowledged alarm re-alerted, supervisor told: " + n.incident +
        " 警情超时未确认，已通知主管";
      notices.prepend(p);
    }
  }

  function connect() {
    const es = new EventSource("/events");
    es.addEventListener("open", function () {
      live.textContent = "live 实时";
      live.className = "live ok";
      sections().forEach(refresh); // catch up whatever state changed while away
    });
    es.addEventListener("error", function () {
      live.textContent = "reconnecting… 重连中";
      live.className = "live bad";
    });
    es.addEventListener("change", function (ev) {
      const d = JSON.parse(ev.data);
      document.body.dataset.seq = ev.lastEventId;
      const names = new Set(d.sections || []);
      sections().forEach(function (el) {
        if (names.has("all") || names.has(el.dataset.section)) { refresh(el); }
      });
      notify(d.notice);
    });
  }

  soundButton.addEventListener("click", function () {
    audio = audio || new AudioContext();
    soundButton.textContent = "Sound on 声音已开启";
    soundButton.disabled = true;
    beep(false);
  });

  // forms post with the session's CSRF token already in them; this adds nothing but
  // keeps a double click from posting twice
  document.addEventListener("submit", function (ev) {
    const b = ev.target.querySelector("button");
    if (b) { setTimeout(function () { b.disabled = true; }, 0); }
  });
  window.cgCsrf = csrf;
  connect();
})();
