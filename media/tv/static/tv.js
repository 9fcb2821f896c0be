// The TV page: channel list, player (hls.js where Media Source Extensions exist, else the
// browser's own HLS), now/next from the guide. Every URL is relative to /iptv/<token>/.
"use strict";

const video = document.getElementById("video");
const list = document.getElementById("channels");
const statusLine = document.getElementById("status");
const forceNative = new URLSearchParams(location.search).get("player") === "native";
const state = { channels: [], current: null, hls: null, player: "" };
window.tvState = state; // read by the tests and handy in the browser console

function fmtTime(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function describe(p) {
  return p ? `${fmtTime(p.start)} ${p.title}` : "\u2013";
}

function showGuide() {
  const ch = state.channels.find((c) => c.number === state.current);
  document.getElementById("title").textContent = ch ? `${ch.number} ${ch.name}` : "Choose a channel";
  document.getElementById("now").textContent = ch ? describe(ch.now) : "\u2013";
  document.getElementById("next").textContent = ch ? describe(ch.next) : "\u2013";
}

function renderList() {
  list.replaceChildren();
  for (const ch of state.channels) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.dataset.number = ch.number;
    b.setAttribute("aria-current", String(ch.number === state.current));
    const num = document.createElement("span");
    num.className = "num";
    num.textContent = ch.number;
    b.append(num, ch.name);
    if (ch.group) {
      const g = document.createElement("span");
      g.className = "group";
      g.textContent = ch.group;
      b.append(g);
    }
    const prog = document.createElement("span");
    prog.className = "prog";
    prog.textContent = ch.now ? ch.now.title : "";
    b.append(prog);
    b.addEventListener("click", () => play(ch.number));
    li.append(b);
    list.append(li);
  }
}

async function loadChannels() {
  const r = await fetch("channels.json", { cache: "no-store" });
  if (r.status === 403) {
    statusLine.textContent = "This TV link has expired or was withdrawn: ask for a new one.";
    return false;
  }
  if (!r.ok) {
    statusLine.textContent = `Channel list unavailable (${r.status}).`;
    return false;
  }
  state.channels = (await r.json()).channels;
  renderList();
  showGuide();
  return true;
}

function stop() {
  if (state.hls) {
    state.hls.destroy();
    state.hls = null;
  }
  video.removeAttribute("src");
  video.load();
}

function play(number) {
  const ch = state.channels.find((c) => c.number === number);
  if (!ch) return;
  stop();
  state.current = number;
  statusLine.textContent = "";
  renderList();
  showGuide();
  const useHlsJs = !forceNative && window.Hls && window.Hls.isSupported();
  if (useHlsJs) {
    state.player = "hls.js";
    const hls = new window.Hls({ liveSyncDurationCount: 2, manifestLoadingMaxRetry: 6 });
    state.hls = hls;
    hls.on(window.Hls.Events.ERROR, (_event, data) => {
      const code = data.response && data.response.code;
      if (code === 403) {
        statusLine.textContent = "Access to this channel was withdrawn or has expired.";
        stop();
      } else if (data.fatal) {
        statusLine.textContent = "Playback problem; retrying\u2026";
        if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
        else setTimeout(() => state.current === number && play(number), 3000);
      }
    });
    hls.loadSource(ch.hls_quick); // hls.js starts on one segment: zap faster
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    state.player = "native";
    video.src = ch.hls;
  } else {
    statusLine.textContent = "This browser cannot play HLS.";
    return;
  }
  video.play().catch(() => {
    // Autoplay with sound needs a gesture on some browsers: start muted, let the user unmute.
    video.muted = true;
    video.play().catch(() => {});
  });
}

document.addEventListener("keydown", (e) => {
  if (!state.channels.length || (e.key !== "ArrowUp" && e.key !== "ArrowDown")) return;
  const i = state.channels.findIndex((c) => c.number === state.current);
  const step = e.key === "ArrowDown" ? 1 : -1;
  const next = state.channels[(i + step + state.channels.length) % state.channels.length];
  e.preventDefault();
  play(next.number);
});

loadChannels().then((ok) => {
  if (ok) setInterval(loadChannels, 60000);
});
