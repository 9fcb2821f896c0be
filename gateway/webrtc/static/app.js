// Seabridge browser phone. Plain JavaScript, no dependencies: the page must work at a site with no internet.
// Signalling: JSON over the authenticated WebSocket at /ws (docs/browser-signalling.md).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const STORE = "seabridge.session";
  const KEYS = [["1", ""], ["2", "ABC"], ["3", "DEF"], ["4", "GHI"], ["5", "JKL"], ["6", "MNO"],
    ["7", "PQRS"], ["8", "TUV"], ["9", "WXYZ"], ["*", ""], ["0", "+"], ["#", ""]];
  const REASONS = {
    hangup: "Call ended", busy: "Busy", busy_here: "You are already in a call", declined: "Declined",
    not_found: "No such user", forbidden: "Not allowed to call this user", unavailable: "Not reachable",
    no_answer: "No answer", cancelled: "Missed call", incompatible: "Incompatible media",
    media_failed: "Connection failed", failed: "Call failed",
  };

  const app = {
    token: null, user: null, expires: 0, ws: null, iceServers: [], iceTransportPolicy: "all", registered: false,
    call: null, retry: 1000, audio: null, ringer: null, events: [],
  };

  // --- sign-in and the session ------------------------------------------------------------------

  function loadSession() {
    try {
      const saved = JSON.parse(localStorage.getItem(STORE) || "null");
      if (saved && saved.expires * 1000 > Date.now()) return saved;
    } catch (e) { /* a corrupt entry means signed out */ }
    return null;
  }

  async function signIn(event) {
    event.preventDefault();
    const error = $("login-error");
    error.hidden = true;
    $("login-button").disabled = true;
    try {
      const response = await fetch("/api/session", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ address: $("login-address").value.trim(), password: $("login-password").value }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        error.textContent = response.status === 429 ? body.message : "Wrong address or password.";
        error.hidden = false;
        return;
      }
      $("login-password").value = "";
      localStorage.setItem(STORE, JSON.stringify(body));
      start(body);
    } catch (e) {
      error.textContent = "The gateway cannot be reached.";
      error.hidden = false;
    } finally {
      $("login-button").disabled = false;
    }
  }

  function start(session) {
    app.token = session.token;
    app.user = session.user;
    app.expires = session.expires;
    unlockAudio();
    connect();
  }

  function signOut(message) {
    localStorage.removeItem(STORE);
    app.token = null;
    if (app.call) finishCall("hangup", true);
    if (app.ws) { app.ws.onclose = null; app.ws.close(); app.ws = null; }
    setStatus("off");
    show("login");
    $("me").hidden = true;
    $("sign-out").hidden = true;
    if (message) { $("login-error").textContent = message; $("login-error").hidden = false; }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    app.ws = ws;
    setStatus("wait");
    ws.onopen = () => send({ type: "auth", token: app.token });
    ws.onmessage = (event) => onMessage(JSON.parse(event.data));
    ws.onclose = (event) => {
      app.ws = null;
      app.registered = false;
      setStatus("off");
      if (app.call) finishCall("media_failed", true);
      if (event.code === 4401) { signOut("Please sign in again."); return; }
      if (event.code === 4429) { signOut("This account is open on too many pages."); return; }
      if (app.token) setTimeout(connect, app.retry);
      app.retry = Math.min(app.retry * 2, 30000);
    };
  }

  function send(message) {
    if (app.ws && app.ws.readyState === WebSocket.OPEN) app.ws.send(JSON.stringify(message));
  }

  function setStatus(state) {
    const dot = $("status");
    dot.dataset.state = state;
    dot.title = { on: "Ready for calls", wait: "Connecting", off: "Not connected" }[state];
  }

  // --- messages from the gateway -----------------------------------------------------------------

  function onMessage(m) {
    app.events.push(m);
    const call = app.call && m.call === app.call.id ? app.call : null;
    switch (m.type) {
      case "ready":
        app.retry = 1000;
        app.iceServers = m.ice_servers || [];
        app.iceTransportPolicy = m.ice_transport_policy || "all";
        $("me").textContent = m.user;
        $("me").hidden = false;
        $("sign-out").hidden = false;
        if (!app.call) show("phone");
        loadRecent();
        break;
      case "registered":
        app.registered = m.ok;
        setStatus(m.ok ? "on" : "wait");
        break;
      case "incoming":
        incoming(m);
        break;
      case "answer":
        if (call && call.pc) call.pc.setRemoteDescription({ type: "answer", sdp: m.sdp }).catch(() => hangUp("failed"));
        break;
      case "ringing":
        if (call) setCallState("Ringing…");
        break;
      case "connected":
        if (call) connected(call, m);
        break;
      case "ended":
        if (call) finishCall(m.reason, false);
        else if (app.ringing && app.ringing.call === m.call) stopRinging(m.reason);
        break;
      case "held":
        if (call) {
          call.remoteHold = m.by === "remote" && m.on;
          setCallState(m.on ? (m.by === "remote" ? "On hold by the other side" : "On hold") : "Connected");
        }
        break;
      case "dtmf":
        if (call) setCallState(`Connected · received ${m.digit}`);
        break;
      case "error":
        if (m.code === "unauthorized") signOut("Please sign in again.");
        else if (call) setCallState(m.message);
        break;
      default:
        break;
    }
  }

  // --- calls -----------------------------------------------------------------------------------------

  async function media(video) {
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: true, video: video ? { width: 640, height: 480 } : false });
    } catch (e) {
      if (video) return navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      throw e;
    }
  }

  function newCall(id, peer, outgoing) {
    const call = {
      id, peer, outgoing, pc: null, local: null, remote: new MediaStream(), startedAt: 0, tick: null,
      statsTimer: null, muted: false, held: false, cameraOff: false, last: null, video: false, quality: null,
    };
    app.call = call;
    $("peer").textContent = peer;
    $("timer").textContent = "00:00";
    $("quality").dataset.level = "0";
    $("quality-text").textContent = "";
    for (const id2 of ["mute", "hold", "camera", "keypad"]) $(id2).setAttribute("aria-pressed", "false");
    $("camera").textContent = "Camera off";
    $("call-pad").hidden = true;
    show("call");
    return call;
  }

  async function offer(call, video) {
    call.local = await media(video);
    call.video = call.local.getVideoTracks().length > 0;
    const pc = new RTCPeerConnection({ iceServers: app.iceServers, iceTransportPolicy: app.iceTransportPolicy });
    call.pc = pc;
    for (const track of call.local.getTracks()) pc.addTrack(track, call.local);
    pc.ontrack = (event) => {
      call.remote.addTrack(event.track);
      $("remote-audio").srcObject = call.remote;
      $("remote-video").srcObject = call.remote;
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && app.call === call) hangUp("media_failed");
    };
    $("local-video").srcObject = call.video ? call.local : null;
    $("camera").disabled = !call.video;
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    return pc.localDescription.sdp;
  }

  function gathered(pc) {
    // The protocol carries complete descriptions: wait for candidates (bounded, for slow STUN).
    return new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") { resolve(); return; }
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);
    });
  }

  async function placeCall(video) {
    const target = $("target").value.trim();
    if (!target || app.call || !app.ws) return;
    const call = newCall(`c${Date.now().toString(36)}`, target, true);
    setCallState("Calling…");
    try {
      const sdp = await offer(call, video);
      if (app.call !== call) return;
      send({ type: "call", call: call.id, to: target, sdp });
    } catch (e) {
      finishCall("failed", true);
      setCallState("Microphone not available");
    }
  }

  function incoming(m) {
    if (app.call) return; // the gateway refuses a second call; nothing to show
    app.ringing = m;
    $("incoming-from").textContent = m.display ? `${m.display} (${m.from})` : m.from;
    $("answer-video").hidden = !m.video;
    $("incoming").hidden = false;
    startRinging();
  }

  async function answer(video) {
    const m = app.ringing;
    if (!m) return;
    stopRinging();
    const call = newCall(m.call, m.display || m.from, false);
    setCallState("Connecting…");
    try {
      const sdp = await offer(call, video);
      if (app.call !== call) return;
      send({ type: "accept", call: call.id, sdp });
    } catch (e) {
      send({ type: "decline", call: call.id });
      finishCall("failed", true);
    }
  }

  function decline() {
    const m = app.ringing;
    stopRinging();
    if (m) send({ type: "decline", call: m.call });
  }

  function connected(call, m) {
    call.startedAt = Date.now();
    if (!m.video && call.pc) {
      // The other side takes no video: stop sending it (satellite bandwidth is the dearest part).
      call.pc.getSenders().filter((s) => s.track && s.track.kind === "video").forEach((s) => s.replaceTrack(null));
      $("camera").disabled = true;
    }
    setCallState(m.video ? "Connected (video)" : "Connected");
    $("videos").hidden = !m.video;
    call.tick = setInterval(() => {
      const s = Math.floor((Date.now() - call.startedAt) / 1000);
      $("timer").textContent = `${String(Math.floor(s / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
    }, 500);
    call.statsTimer = setInterval(() => measure(call), 2000);
  }

  function hangUp(reason) {
    const call = app.call;
    if (!call) return;
    send({ type: "hangup", call: call.id });
    finishCall(reason || "hangup", true);
  }

  function finishCall(reason, local) {
    const call = app.call;
    if (!call) return;
    app.call = null;
    clearInterval(call.tick);
    clearInterval(call.statsTimer);
    if (call.pc) call.pc.close();
    if (call.local) call.local.getTracks().forEach((t) => t.stop());
    $("remote-audio").srcObject = null;
    $("remote-video").srcObject = null;
    $("local-video").srcObject = null;
    $("videos").hidden = true;
    app.lastEnded = { id: call.id, reason };
    setCallState(REASONS[reason] || "Call ended");
    setTimeout(() => { if (!app.call) show(app.token ? "phone" : "login"); }, local ? 0 : 1500);
    loadRecent();
  }

  function setCallState(text) {
    $("call-state").textContent = text;
  }

  // --- in-call controls ----------------------------------------------------------------------------

  function toggle(button, on) {
    button.setAttribute("aria-pressed", on ? "true" : "false");
  }

  function mute() {
    const call = app.call;
    if (!call || !call.local) return;
    call.muted = !call.muted;
    call.local.getAudioTracks().forEach((t) => { t.enabled = !call.muted; });
    toggle($("mute"), call.muted);
  }

  function hold() {
    const call = app.call;
    if (!call || !call.startedAt) return;
    call.held = !call.held;
    send({ type: "hold", call: call.id, on: call.held });
    toggle($("hold"), call.held);
  }

  function camera() {
    const call = app.call;
    if (!call || !call.local) return;
    call.cameraOff = !call.cameraOff;
    call.local.getVideoTracks().forEach((t) => { t.enabled = !call.cameraOff; });
    toggle($("camera"), call.cameraOff);
    $("camera").textContent = call.cameraOff ? "Camera on" : "Camera off";
  }

  function digit(key) {
    if (app.call) {
      if (app.call.startedAt) send({ type: "dtmf", call: app.call.id, digits: key });
    } else {
      $("target").value += key;
    }
  }

  // --- connection quality ------------------------------------------------------------------------------

  async function measure(call) {
    if (!call.pc || app.call !== call) return;
    const report = await call.pc.getStats();
    let rtt = null;
    let mediaRtt = null;
    let lost = 0;
    let received = 0;
    let jitter = 0;
    report.forEach((s) => {
      if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && s.currentRoundTripTime !== undefined) {
        rtt = s.currentRoundTripTime;
      } else if (s.type === "remote-inbound-rtp" && s.kind === "audio" && s.roundTripTime !== undefined) {
        mediaRtt = s.roundTripTime;
      } else if (s.type === "inbound-rtp" && s.kind === "audio") {
        lost = s.packetsLost || 0;
        received = s.packetsReceived || 0;
        jitter = s.jitter || 0;
      }
    });
    const last = call.last || { lost: 0, received: 0 };
    const dLost = Math.max(0, lost - last.lost);
    const dAll = dLost + Math.max(0, received - last.received);
    call.last = { lost, received };
    const loss = dAll ? dLost / dAll : 0;
    const delay = mediaRtt !== null ? mediaRtt : rtt;
    let level = 4;
    if (delay === null && !received) level = 1;
    else if (loss > 0.08 || jitter > 0.1) level = 1;
    else if (loss > 0.03 || (delay !== null && delay > 1.0)) level = 2;
    else if (loss > 0.01 || (delay !== null && delay > 0.35)) level = 3;
    call.quality = { rtt, mediaRtt, loss, jitter, level };
    $("quality").dataset.level = String(level);
    const parts = [];
    if (delay !== null) parts.push(`${Math.round(delay * 1000)} ms`);
    parts.push(`${(loss * 100).toFixed(loss < 0.1 ? 1 : 0)}% loss`);
    $("quality-text").textContent = parts.join(" · ");
    $("quality").title = `Connection quality: ${["", "poor", "weak", "fair", "good"][level]}`;
  }

  // --- ringing (a local tone: no audio files to download) -------------------------------------------

  function unlockAudio() {
    try {
      if (!app.audio) app.audio = new AudioContext();
      if (app.audio.state === "suspended") app.audio.resume();
    } catch (e) { /* no audio output: ring silently */ }
  }

  function startRinging() {
    if (!app.audio) return;
    const ctx = app.audio;
    const gain = ctx.createGain();
    gain.gain.value = 0;
    gain.connect(ctx.destination);
    const tones = [440, 480].map((f) => {
      const o = ctx.createOscillator();
      o.frequency.value = f;
      o.connect(gain);
      o.start();
      return o;
    });
    const t0 = ctx.currentTime;
    for (let i = 0; i < 30; i += 1) {
      gain.gain.setValueAtTime(0.15, t0 + i * 6);
      gain.gain.setValueAtTime(0, t0 + i * 6 + 2);
    }
    app.ringer = { gain, tones };
  }

  function stopRinging(reason) {
    $("incoming").hidden = true;
    if (app.ringer) {
      app.ringer.tones.forEach((o) => o.stop());
      app.ringer.gain.disconnect();
      app.ringer = null;
    }
    if (reason) app.lastEnded = { id: app.ringing && app.ringing.call, reason };
    app.ringing = null;
  }

  // --- recent calls ---------------------------------------------------------------------------------------

  async function loadRecent() {
    if (!app.token) return;
    try {
      const response = await fetch("/api/phone/calls", { headers: { Authorization: `Bearer ${app.token}` } });
      if (response.status === 401) { signOut("Please sign in again."); return; }
      const body = await response.json();
      const list = $("recent");
      list.replaceChildren();
      if (!body.calls.length) {
        const li = document.createElement("li");
        li.className = "muted";
        li.textContent = "No calls yet";
        list.append(li);
      }
      for (const c of body.calls.slice(0, 20)) {
        const li = document.createElement("li");
        const who = document.createElement("button");
        who.type = "button";
        const missed = c.direction === "in" && c.disposition !== "answered";
        who.textContent = `${c.direction === "out" ? "↗" : "↙"} ${c.peer}`;
        if (missed) who.className = "missed";
        who.addEventListener("click", () => { $("target").value = c.peer; });
        const when = document.createElement("span");
        when.className = "muted";
        const d = new Date(c.start);
        when.textContent = `${d.toLocaleDateString()} ${d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}` +
          (c.seconds ? ` · ${Math.floor(c.seconds / 60)}:${String(c.seconds % 60).padStart(2, "0")}` : "");
        li.append(who, when);
        list.append(li);
      }
    } catch (e) { /* recent calls are a convenience */ }
  }

  // --- views and wiring ------------------------------------------------------------------------------------

  function show(view) {
    for (const name of ["login", "phone", "call"]) $(`${name}-view`).hidden = name !== view;
  }

  function pad(container) {
    for (const [key, letters] of KEYS) {
      const b = document.createElement("button");
      b.type = "button";
      b.dataset.key = key;
      b.append(key);
      if (letters) { const s = document.createElement("small"); s.textContent = letters; b.append(s); }
      b.addEventListener("click", () => digit(key));
      container.append(b);
    }
  }

  function init() {
    pad($("dialpad"));
    pad($("call-pad"));
    $("login-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut());
    $("backspace").addEventListener("click", () => { $("target").value = $("target").value.slice(0, -1); });
    $("target").addEventListener("keydown", (e) => { if (e.key === "Enter") placeCall(false); });
    $("call-audio").addEventListener("click", () => { unlockAudio(); placeCall(false); });
    $("call-video").addEventListener("click", () => { unlockAudio(); placeCall(true); });
    $("answer-audio").addEventListener("click", () => answer(false));
    $("answer-video").addEventListener("click", () => answer(true));
    $("decline").addEventListener("click", decline);
    $("hangup").addEventListener("click", () => hangUp("hangup"));
    $("mute").addEventListener("click", mute);
    $("hold").addEventListener("click", hold);
    $("camera").addEventListener("click", camera);
    $("keypad").addEventListener("click", () => {
      $("call-pad").hidden = !$("call-pad").hidden;
      toggle($("keypad"), !$("call-pad").hidden);
    });
    document.addEventListener("click", unlockAudio, { once: true });
    const saved = loadSession();
    if (saved) start(saved);
    else show("login");
  }

  // Read-only hooks for diagnostics (and the gateway's own browser tests).
  window.seabridge = {
    get registered() { return app.registered; },
    get call() { return app.call; },
    get events() { return app.events.slice(); },
    get lastEnded() { return app.lastEnded || null; },
    get ringing() { return app.ringing || null; },
    async stats() {
      if (!app.call || !app.call.pc) return [];
      const out = [];
      (await app.call.pc.getStats()).forEach((s) => out.push(s));
      return out;
    },
  };

  document.addEventListener("DOMContentLoaded", init);
})();
