// The TV page: channel list, player (hls.js where Media Source Extensions exist, else the
// browser's own HLS), now/next from the guide. Recorded channels also play time-shifted
// ("+7h"), pause and resume within the recording, and play programmes from their start.
// Every URL is relative to /iptv/<token>/.
"use strict";

const video = document.getElementById("video");
const list = document.getElementById("channels");
const statusLine = document.getElementById("status");
const forceNative = new URLSearchParams(location.search).get("player") === "native";
// mode: "live", "shift" (state.shift seconds behind live) or "catchup" (state.programme).
const state = {
  channels: [], current: null, hls: null, player: "", mode: "live", shift: 0, programme: null,
  pausedAt: null, switching: false, resumes: 0,
};
window.tvState = state; // read by the tests and handy in the browser console

function fmtTime(iso) {
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function describe(p) {
  return p ? `${fmtTime(p.start)} ${p.title}` : "\u2013";
}

function label(seconds) {
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  return "+" + ((h ? `${h}h` : "") + (m ? `${m}m` : "") + (s && !h ? `${s}s` : "") || "0s");
}

function currentChannel() {
  return state.channels.find((c) => c.number === state.current);
}

function showGuide() {
  const ch = currentChannel();
  document.getElementById("title").textContent = ch ? `${ch.number} ${ch.name}` : "Choose a channel";
  document.getElementById("now").textContent = ch ? describe(ch.now) : "\u2013";
  document.getElementById("next").textContent = ch ? describe(ch.next) : "\u2013";
  showDvr(ch);
}

function button(text, pressed, onClick) {
  const b = document.createElement("button");
  b.textContent = text;
  b.setAttribute("aria-pressed", String(pressed));
  b.addEventListener("click", onClick);
  return b;
}

function showDvr(ch) {
  const box = document.getElementById("dvr");
  box.hidden = !(ch && ch.dvr);
  if (box.hidden) return;
  const mode = document.getElementById("mode");
  if (state.mode === "live") mode.textContent = "live";
  else if (state.mode === "shift") mode.textContent = `${label(state.shift)} (as it was ${label(state.shift).slice(1)} ago)`;
  else mode.textContent = `from the start: ${state.programme.title}`;
  const shifts = document.getElementById("shifts");
  shifts.replaceChildren(button("Live", state.mode === "live", () => playLive(ch.number)));
  for (const s of ch.dvr.shifts) {
    shifts.append(button(s.label, state.mode === "shift" && state.shift === s.seconds, () => playShift(ch.number, s.seconds)));
  }
  const items = document.getElementById("catchup");
  items.replaceChildren();
  for (const p of ch.dvr.catchup.slice().reverse()) {
    const li = document.createElement("li");
    const pressed = state.mode === "catchup" && state.programme && state.programme.hls === p.hls;
    const b = button("", pressed, () => playCatchup(ch.number, p));
    const t = document.createElement("span");
    t.className = "time";
    t.textContent = fmtTime(p.start);
    b.append(t, p.title);
    b.dataset.start = p.start;
    li.append(b);
    items.append(li);
  }
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
    b.addEventListener("click", () => playLive(ch.number));
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
  state.switching = true; // the pause that unloading fires is not the viewer's
  if (state.hls) {
    state.hls.destroy();
    state.hls = null;
  }
  video.removeAttribute("src");
  video.load();
}

// Plays an HLS URL: ``quick`` is the variant hls.js may use (it starts on one segment).
function load(number, url, quick) {
  stop();
  state.current = number;
  state.pausedAt = null;
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
      } else if (code === 404 && state.mode !== "live") {
        statusLine.textContent = "That part of the recording is no longer kept.";
        stop();
      } else if (data.fatal) {
        statusLine.textContent = "Playback problem; retrying\u2026";
        if (data.type === window.Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
        else setTimeout(() => state.hls === hls && load(number, url, quick), 3000);
      }
    });
    hls.loadSource(quick || url);
    hls.attachMedia(video);
  } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
    state.player = "native";
    video.src = url;
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

function playLive(number) {
  const ch = state.channels.find((c) => c.number === number);
  if (!ch) return;
  state.mode = "live";
  state.shift = 0;
  load(number, ch.hls, ch.hls_quick);
}

function playShift(number, seconds) {
  const ch = state.channels.find((c) => c.number === number);
  if (!ch || !ch.dvr) return;
  state.mode = "shift";
  state.shift = seconds;
  load(number, ch.dvr.shift_url.replace("{seconds}", String(seconds)));
}

function playCatchup(number, programme) {
  state.mode = "catchup";
  state.programme = programme;
  load(number, programme.hls);
}

// Pause and resume within the recording: a shifted stream is the live one exactly N seconds
// later, so resuming N seconds behind (N = the pause, plus any earlier shift) continues
// from the paused picture.
video.addEventListener("playing", () => {
  state.switching = false;
});
video.addEventListener("pause", () => {
  if (state.switching || video.ended || state.mode === "catchup") return; // catch-up pauses like a video
  state.pausedAt = Date.now();
});
video.addEventListener("play", async () => {
  if (state.pausedAt === null) return;
  const pausedAt = state.pausedAt;
  state.pausedAt = null;
  if (!currentChannel() || !currentChannel().dvr || Date.now() - pausedAt < 2000) return; // a blink: the buffer covers it
  await loadChannels(); // how far back the recording reaches now
  const ch = currentChannel();
  const paused = (Date.now() - pausedAt) / 1000;
  let shift = Math.round((state.mode === "shift" ? state.shift : 0) + paused);
  // A few seconds to spare: the shifted playlist needs a segment or two behind its edge.
  const kept = ch.dvr.start ? (Date.now() - new Date(ch.dvr.start).getTime()) / 1000 - 5 : 0;
  if (shift > kept) {
    shift = Math.max(1, Math.floor(kept));
    statusLine.textContent = "Paused longer than the recording reaches: resuming from its oldest part.";
  }
  state.resumes += 1;
  playShift(ch.number, shift);
});

document.addEventListener("keydown", (e) => {
  if (!state.channels.length || (e.key !== "ArrowUp" && e.key !== "ArrowDown")) return;
  const i = state.channels.findIndex((c) => c.number === state.current);
  const step = e.key === "ArrowDown" ? 1 : -1;
  const next = state.channels[(i + step + state.channels.length) % state.channels.length];
  e.preventDefault();
  playLive(next.number);
});

window.tvReload = loadChannels; // the tests refresh the lists without waiting a minute
loadChannels().then((ok) => {
  if (ok) setInterval(loadChannels, 60000);
});
