// edgecam viewer: lists cameras from their retained status, and plays one over WebRTC,
// signaled over MQTT per docs/signaling.md (protocol 1). The viewer offers, the camera
// answers, candidates trickle both ways.
//
// URL parameters (all optional): broker (ws:// or wss:// URL), camera, prefix,
// username, password, session, relay=1 (relay-only ICE), autoplay=0.
//
// Invite mode (shared/design/access-v1.md, docs/security.md): an invitation link puts
// v=1, broker, prefix, camera, name, exp and key in the URL fragment, which no server
// receives. The page then signs what it sends and drops every camera message that is
// not signed with the key (HMAC-SHA256 from the vendored @noble/hashes).
'use strict';

(function () {
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);
  // boot.js: the page's config and the broker WebSocket it opened early.
  const boot = window.edgecamBoot || { config: null, takeSocket: () => null, early: {}, brokerUrl: () => null };
  const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

  const WILL_DELAY_S = 10;
  const state = {
    timeline: {}, page: {},
    client: null, socket: null, prefix: 'edgecam', cameras: new Map(),
    camera: null, session: null, pc: null, remoteSet: false, pendingCandidates: [],
    iceServers: [], iceTransportPolicy: params.get('relay') === '1' ? 'relay' : 'all',
    iceRestarts: 0, iceErrors: [], mqttVersion: params.get('mqtt') === '4' ? 4 : 5,
    connectTimer: null, restartTimer: null, stats: {}, lastBytes: null, stopped: false,
    log: [],
  };
  // For tests and curious users: window.edgecam.stats() returns the latest figures.
  window.edgecam = { state, stats: () => state.stats };

  // The invitation in the fragment, if any: { name, exp, key (bytes), broker, prefix,
  // camera }.
  const invitation = (() => {
    const f = new URLSearchParams(location.hash.slice(1));
    if (f.get('v') !== '1' || !f.get('key') || !f.get('name') || !f.get('exp')) return null;
    try {
      const b64 = f.get('key').replace(/-/g, '+').replace(/_/g, '/');
      const key = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      if (key.length !== 32) return null;
      return { name: f.get('name'), exp: Number(f.get('exp')), key, broker: f.get('broker'), prefix: f.get('prefix'), camera: f.get('camera') };
    } catch (e) { return null; }
  })();
  state.rejected = 0;
  const enc = new TextEncoder();
  function b64url(bytes) {
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }
  // MAC of a signed message (access-v1, "Signed messages").
  function macOf(dir, session, text) {
    const data = enc.encode(`edgecam-msg/1\n${dir}\n${state.camera}\n${session}\n${text}`);
    return b64url(nobleHashes.hmac(nobleHashes.sha256, invitation.key, data));
  }
  // What goes on the wire for `msg`: itself, or in invite mode a signed envelope, with
  // the page's clock as `ts` in requests (access-v1, "Freshness"); `tsOffsetMs` moves
  // it (the Last Will's bye, written long before it fires).
  function wire(msg, session, tsOffsetMs) {
    if (!invitation) return JSON.stringify(msg);
    const inner = Object.assign({}, msg);
    if (['offer', 'config-request', 'bye'].includes(msg.type)) inner.ts = Date.now() + (tsOffsetMs || 0);
    const text = JSON.stringify(inner);
    return JSON.stringify({ type: 'signed', v: 1, name: invitation.name, exp: invitation.exp, msg: text, mac: macOf('v2c', session, text) });
  }
  // The bearer token of the invitation (access-v1, "Token"): MQTT password, HTTP bearer.
  // Computed once per camera id: the config fetch and every broker (re)connect use it.
  const tokens = new Map();
  function token() {
    const cam = state.camera || invitation.camera;
    if (!tokens.has(cam)) {
      const data = enc.encode(`edgecam-token/1\n${cam}\n${invitation.name}\n${invitation.exp}`);
      tokens.set(cam, `${invitation.name}.${invitation.exp}.${b64url(nobleHashes.hmac(nobleHashes.sha256, invitation.key, data))}`);
    }
    return tokens.get(cam);
  }
  // A camera message as this page accepts it: in invite mode only signed ones with the
  // right MAC, and plain candidates and errors (which may go unsigned); else null.
  function accept(msg) {
    if (!invitation) return msg;
    if (msg.type === 'signed') {
      if (typeof msg.msg !== 'string' || typeof msg.mac !== 'string') return null;
      if (macOf('c2v', state.session, msg.msg) !== msg.mac) return null;
      try { return JSON.parse(msg.msg); } catch (e) { return null; }
    }
    if (msg.type === 'candidate') return msg;
    // An unsigned error may not end a session whose signed answer already came.
    if (msg.type === 'error' && !state.signedAnswer) return msg;
    return null;
  }

  function note(text) {
    $('message').textContent = text;
    state.log.push(new Date().toISOString() + ' ' + text);
    if (state.log.length > 200) state.log.shift();
  }
  function pill(el, text, cls) { el.textContent = text; el.className = 'pill ' + (cls || ''); }
  function newSessionId() {
    // 'v' + 12 alphanumerics: valid as a session id and as an MQTT 3.1.1 client id.
    const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
    const r = crypto.getRandomValues(new Uint8Array(12));
    return 'v' + Array.from(r, (b) => abc[b % abc.length]).join('');
  }
  const topic = {
    status: (cam) => `${state.prefix}/${cam}/status`,
    toCamera: (cam, s) => `${state.prefix}/${cam}/session/${s}/to-camera`,
    toViewer: (cam, s) => `${state.prefix}/${cam}/session/${s}/to-viewer`,
  };

  function send(msg) {
    if (!state.client || !state.camera || !state.session) return;
    state.client.publish(topic.toCamera(state.camera, state.session), wire(msg, state.session));
  }

  async function loadDefaults() {
    // In open mode edgecam puts /config.json into the page itself (boot.js read it).
    let cfg = boot.config;
    if (cfg) pageMark('configLoaded');
    // An invitation that names its broker needs nothing more: its fragment says it all.
    else if (!(invitation && invitation.broker)) {
      cfg = {};
      try {
        const headers = invitation ? { Authorization: 'Bearer ' + token() } : {};
        const r = await fetch('config.json', { cache: 'no-store', headers });
        if (r.ok) cfg = await r.json();
        pageMark('configLoaded');
      } catch (e) { /* page not served by edgecam */ }
    }
    cfg = cfg || {};
    const inv = invitation || {};
    state.prefix = inv.prefix || params.get('prefix') || cfg.prefix || 'edgecam';
    // A broker that speaks MQTT 3.1.1 only (edgecam's embedded one) says so, which
    // spares the MQTT 5 attempt it would close.
    if (!params.get('mqtt') && cfg.mqttVersion === 4) state.mqttVersion = 4;
    const broker = inv.broker || boot.brokerUrl(cfg);
    return { broker, camera: inv.camera || params.get('camera') || cfg.camera || null };
  }

  function connectBroker(broker) {
    state.session = params.get('session') && ID_RE.test(params.get('session')) ? params.get('session') : newSessionId();
    // MQTT 5 where the broker speaks it: a network change (Wi-Fi → mobile) kills the
    // WebSocket, and reconnecting under the same client id would make the broker publish
    // the Last Will `bye` and end the session. A Will Delay Interval (MQTT 5 §3.1.3.2.2)
    // with a persistent session suppresses it when we are back within WILL_DELAY_S; a
    // crashed page still frees its session, WILL_DELAY_S later. MQTT 3.1.1 brokers
    // (e.g. edgecam's embedded one over WebSocket) get the plain Will.
    const v5 = state.mqttVersion === 5;
    const connect = { client_id: state.session, keep_alive: 15, flags: { clean_start: !v5 } };
    if (v5) connect.props = { session_expiry_interval: WILL_DELAY_S * 2 };
    if (params.get('username')) { connect.username = params.get('username'); connect.password = params.get('password') || ''; }
    // Invite mode: the embedded broker admits the viewer name with its token.
    if (invitation) { connect.username = invitation.name; connect.password = token(); }
    if (state.camera) {
      // Signed in invite mode with a ts 4 min ahead, so that when it fires it is newer
      // than this session's offer; past the camera's 5 min window (when its clock is
      // synchronised) it is refused and the session ends by its ICE timeout instead.
      connect.will = { topic: topic.toCamera(state.camera, state.session), payload: wire({ type: 'bye' }, state.session, 240000), qos: 1, retain: false };
      if (v5) connect.will.props = { will_delay_interval: WILL_DELAY_S };
    }
    // The socket boot.js opened while the scripts loaded, if it is this broker's.
    const early = boot.takeSocket(broker);
    if (early) {
      pageMarkAt('wsCreated', boot.early.createdAt);
      if (boot.early.openAt != null) pageMarkAt('wsOpen', boot.early.openAt);
    }
    pill($('broker-state'), 'broker: connecting', 'wait');
    let link = null;
    // The camera list, and this session's answers and candidates once subscribed
    // (the contract: subscribed before anything is published).
    const subscriptions = [[`${state.prefix}/+/status`, null]];
    if (state.camera) {
      subscriptions.push([topic.toViewer(state.camera, state.session), (granted) => {
        if (!granted) { note('subscribe failed: the broker refused it'); return; }
        pageMark('suback');
        if (!state.pc && !state.stopped && params.get('autoplay') !== '0') start();
      }]);
    }
    link = edgecamBroker.open({
      url: broker, socket: early, version: state.mqttVersion, connect, subscriptions,
      onSocket: (ws) => {
        if (ws !== early) pageMark('wsCreated');
        state.socket = ws;
        ws.addEventListener('open', () => pageMark('wsOpen'));
      },
      onConnack: () => {
        pageMark('connack');
        pill($('broker-state'), 'broker: connected', 'ok');
      },
      onClose: (connackSeen) => {
        if (!connackSeen && v5 && link === state.client && !params.get('mqtt')) {
          // The broker closed an MQTT 5 CONNECT without CONNACK: speak 3.1.1 instead.
          state.mqttVersion = 4;
          link.end();
          connectBroker(broker);
          return;
        }
        pill($('broker-state'), 'broker: reconnecting', 'wait');
      },
      onMessage,
      onError: (m) => note('broker error: ' + m),
    });
    state.client = link;
  }

  function onMessage(t, text) {
    let msg;
    try { msg = JSON.parse(text); } catch (e) { return; }
    const parts = t.split('/');
    if (parts.length === 3 && parts[2] === 'status') { onStatus(parts[1], msg); return; }
    if (state.camera && t === topic.toViewer(state.camera, state.session)) {
      const ok = accept(msg);
      if (ok) onSignal(ok);
      else { state.rejected += 1; note('dropped a camera message that failed verification'); }
    }
  }

  function onStatus(cam, status) {
    pageMark('status');
    state.cameras.set(cam, status);
    const ul = $('camera-list');
    ul.innerHTML = '';
    for (const [id, s] of [...state.cameras.entries()].sort()) {
      const li = document.createElement('li');
      const online = s.state === 'online';
      li.textContent = `${s.name || id} ${online ? `· ${s.viewers}/${s.maxViewers} viewers` : '· offline'}`;
      li.dataset.camera = id;
      if (!online) li.classList.add('offline');
      if (id === state.camera) li.classList.add('selected');
      li.onclick = () => { if (online) selectCamera(id); };
      ul.appendChild(li);
    }
    if (!state.camera && state.cameras.size === 1 && status.state === 'online' && params.get('autoplay') !== '0') {
      selectCamera(cam);
    }
  }

  function selectCamera(cam) {
    if (!ID_RE.test(cam)) return;
    if (cam === state.camera && state.pc) return;
    stop(true);
    state.camera = cam;
    state.stopped = false;
    const url = new URL(location.href);
    url.searchParams.set('camera', cam);
    history.replaceState(null, '', url);
    // Reconnect so the Last Will names this camera's session topic.
    const broker = state.brokerUrl;
    if (state.client) state.client.end();
    connectBroker(broker);
  }

  async function start() {
    const cam = state.cameras.get(state.camera);
    $('s-camera').textContent = cam ? (cam.name || state.camera) : state.camera;
    note('');
    if (cam && cam.turn) {
      // The camera hands out TURN credentials for this session before we offer.
      state.awaitingConfig = true;
      send({ type: 'config-request' });
      setTimeout(() => { if (state.awaitingConfig) { state.awaitingConfig = false; createOffer(false); } }, 3000);
    } else {
      createOffer(false);
    }
  }

  // A peer connection made while the page is still connecting to the broker, with an ICE
  // candidate pool (JSEP, RFC 8829 §3.5.4), so the browser gathers its candidates during
  // that time instead of after the offer: about 150 ms off time to first frame in a fresh
  // Chromium (docs/performance.md).
  function warmPeer() {
    if (state.warm || typeof RTCPeerConnection === 'undefined') return;
    state.warm = new RTCPeerConnection({
      iceServers: state.iceServers, iceTransportPolicy: state.iceTransportPolicy, iceCandidatePoolSize: 1,
    });
    if (state.camera && params.get('autoplay') !== '0') prepareOffer();
  }

  // What the offer asks for: 'talk' (audio sendrecv and the control channel), 'audio'
  // (audio recvonly) or 'video' (no audio m-line).
  function offerShape(cam, talk) { return talk ? 'talk' : (!cam || cam.audio) ? 'audio' : 'video'; }

  // The offer made ahead, on the warm peer connection, while the broker connection and
  // subscription are still on their way: createOffer and setLocalDescription take a
  // fresh page ~70 ms. It guesses the common shape ('audio': a camera with a microphone
  // and no talk-back, or one whose status has not arrived); newPeer uses it only if the
  // camera's status says the same and no ICE servers came since, else closes it. Its
  // candidates wait until the offer is published (contract: the offer comes first).
  function prepareOffer() {
    const pc = state.warm;
    state.warm = null;
    pc.addTransceiver('video', { direction: 'recvonly' });
    const audio = pc.addTransceiver('audio', { direction: 'recvonly' });
    const prep = { pc, audio, shape: 'audio', iceServers: state.iceServers, policy: state.iceTransportPolicy, candidates: [] };
    pc.onicecandidate = (e) => prep.candidates.push(e);
    prep.ready = pc.createOffer().then((o) => pc.setLocalDescription(o)).then(() => true, () => false);
    state.prepared = prep;
  }

  // The prepared offer's peer connection if it fits `shape`, else null (and it is closed).
  function takePrepared(shape) {
    const prep = state.prepared;
    state.prepared = null;
    if (!prep) return null;
    if (prep.shape === shape && prep.iceServers === state.iceServers && prep.policy === state.iceTransportPolicy
        && prep.pc.signalingState !== 'closed') return prep;
    prep.pc.close();
    return null;
  }

  function newPeer() {
    const cam = state.cameras.get(state.camera);
    // A camera with a speaker (extension talk-v1): the audio m-line is sendrecv from the
    // start, with no track, so talking later is a replaceTrack, not a renegotiation.
    const offered = !!(cam && Array.isArray(cam.extensions) && cam.extensions.includes('talk-v1'));
    // getUserMedia exists only in a secure context (HTTPS, or localhost).
    const talk = offered && window.isSecureContext && !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
    const prep = takePrepared(offerShape(cam, talk));
    if (prep) return adopt(prep.pc, prep.audio, null, offered, prep);
    let pc = state.warm;
    state.warm = null;
    if (pc && pc.signalingState === 'stable' && !pc.localDescription) {
      // TURN credentials may have arrived since: the pool re-gathers with them.
      pc.setConfiguration({ iceServers: state.iceServers, iceTransportPolicy: state.iceTransportPolicy, iceCandidatePoolSize: 1 });
    } else {
      pc = new RTCPeerConnection({ iceServers: state.iceServers, iceTransportPolicy: state.iceTransportPolicy });
    }
    pc.addTransceiver('video', { direction: 'recvonly' });
    const audio = offerShape(cam, talk) !== 'video' ? pc.addTransceiver('audio', { direction: talk ? 'sendrecv' : 'recvonly' }) : null;
    return adopt(pc, audio, talk ? openControl(pc) : null, offered, null);
  }

  // Makes `pc` the session's peer connection: its handlers and the page's state.
  // `prep`, when the offer was made ahead, holds its candidates until it is published.
  function adopt(pc, audio, control, offered, prep) {
    state.audioTx = audio;
    state.control = control;
    setTalk(control ? 'idle' : offered ? 'insecure' : 'off');
    const stream = new MediaStream();
    $('video').srcObject = stream;
    pc.ontrack = (e) => {
      mark('track-' + e.track.kind);
      stream.addTrack(e.track);
      const v = $('video');
      v.play().catch(() => {});
      if (e.track.kind === 'video' && v.requestVideoFrameCallback) {
        // Offer published → first frame presented, in ms (same clock as performance.now()).
        v.requestVideoFrameCallback((now, meta) => {
          if (!state.firstFrameMs) state.firstFrameMs = now - state.offerSentAt;
          // When the frame's last RTP packet arrived (WebRTC sources only).
          if (meta && meta.receiveTime) markAt('firstFrameReceived', meta.receiveTime);
          // Page navigation → first frame: the whole wait, broker connection included.
          if (!state.pageToFirstFrameMs) state.pageToFirstFrameMs = now;
          mark('firstFramePresented');
          pageMark('firstFrame');
        });
      }
    };
    const onCandidate = (e) => {
      mark(e.candidate ? 'firstLocalCandidate' : 'localGatheringDone');
      send({ type: 'candidate', candidate: e.candidate ? e.candidate.toJSON() : null });
    };
    if (prep) {
      state.prepOffer = prep;
      pc.onicecandidate = (e) => prep.candidates.push(e);
      prep.flush = () => { pc.onicecandidate = onCandidate; for (const e of prep.candidates.splice(0)) onCandidate(e); };
    } else {
      state.prepOffer = null;
      pc.onicecandidate = onCandidate;
    }
    pc.onicecandidateerror = (e) => {
      // E.g. 401 from a TURN server: wrong or expired credentials (RFC 8489 §14.8).
      const text = `ICE server ${e.url || '?'}: ${e.errorCode} ${e.errorText || ''}`.trim();
      state.iceErrors.push(text);
      note(text);
    };
    pc.onconnectionstatechange = () => { mark('pc-' + pc.connectionState); onPcState(pc); };
    pc.oniceconnectionstatechange = () => mark('ice-' + pc.iceConnectionState);
    state.pc = pc;
    state.remoteSet = false;
    state.pendingCandidates = [];
    return pc;
  }

  // Page milestones in ms since navigation started (first one wins): where the wait
  // before the offer goes (config.json, broker WebSocket, CONNACK, SUBACK, status).
  function pageMark(name) { pageMarkAt(name, performance.now()); }
  function pageMarkAt(name, t) {
    if (state.page[name] == null) state.page[name] = Math.round(t);
  }

  // Connection set-up milestones in ms since the offer was published (first one wins),
  // so time to first frame can be split into signaling, ICE, DTLS and media.
  function mark(name) { markAt(name, performance.now()); }
  function markAt(name, t) {
    if (state.offerSentAt == null || state.timeline[name] != null) return;
    state.timeline[name] = Math.round(t - state.offerSentAt);
  }

  async function createOffer(iceRestart) {
    const pc = state.pc && iceRestart ? state.pc : newPeer();
    pill($('pc-state'), iceRestart ? 'restarting ICE' : 'offering', 'wait');
    if (!iceRestart) pageMark('offerCreate');
    if (iceRestart) {
      // Candidates of the new ICE generation wait for the new answer.
      state.remoteSet = false;
      state.iceRestarts += 1;
    }
    if (!iceRestart) { state.signedAnswer = false; state.refused = null; }
    const prep = !iceRestart ? state.prepOffer : null;
    state.prepOffer = null;
    if (!prep || !(await prep.ready)) {
      const offer = await pc.createOffer({ iceRestart });
      await pc.setLocalDescription(offer);
    }
    send({ type: 'offer', sdp: pc.localDescription.sdp });
    if (prep) prep.flush();
    if (!iceRestart) state.offerMadeAhead = !!prep;
    if (!iceRestart) pageMark('offerSent');
    if (!iceRestart) { state.offerSentAt = performance.now(); state.firstFrameMs = null; state.timeline = {}; }
  }

  async function onSignal(msg) {
    const pc = state.pc;
    switch (msg.type) {
      case 'config':
        state.iceServers = msg.iceServers || [];
        if (params.get('relay') !== '1' && msg.iceTransportPolicy) state.iceTransportPolicy = msg.iceTransportPolicy;
        if (state.awaitingConfig) { state.awaitingConfig = false; createOffer(false); }
        else if (pc) {
          // Fresh credentials on a live session: apply and restart ICE (contract).
          pc.setConfiguration({ iceServers: state.iceServers, iceTransportPolicy: state.iceTransportPolicy });
          createOffer(true);
        }
        break;
      case 'answer':
        if (!pc) return;
        mark('answer');
        if (invitation) state.signedAnswer = true;
        try {
          await pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
          state.remoteSet = true;
          // DTLS (RFC 6347) over the bundled transport: its handshake's end.
          const dtls = pc.getReceivers()[0] && pc.getReceivers()[0].transport;
          if (dtls) dtls.addEventListener('statechange', () => mark('dtls-' + dtls.state));
          for (const c of state.pendingCandidates) await pc.addIceCandidate(c).catch(() => {});
          state.pendingCandidates = [];
        } catch (e) { note('bad answer: ' + e.message); }
        break;
      case 'candidate':
        if (!pc || !msg.candidate) return;
        mark('firstRemoteCandidate');
        if (state.remoteSet) pc.addIceCandidate(msg.candidate).catch((e) => note('candidate: ' + e.message));
        else state.pendingCandidates.push(msg.candidate);
        break;
      case 'error':
        // Candidates trickled before a refusal reach a session that is gone, and the
        // camera answers each with `unknown-session`: the refusal is the reason shown.
        if (msg.code === 'unknown-session' && state.refused) return;
        state.refused = msg.code;
        note(msg.code === 'bad-offer'
          ? `the camera cannot serve this browser: ${msg.message}`
          : `camera refused: ${msg.code}: ${msg.message}`);
        pill($('pc-state'), 'error: ' + msg.code, 'bad');
        closePeer();
        if (msg.code === 'busy' || msg.code === 'internal') scheduleRestart(5000);
        break;
      case 'bye':
        note('camera ended the session: ' + msg.reason);
        pill($('pc-state'), 'ended: ' + msg.reason, 'bad');
        closePeer();
        if (msg.reason !== 'kicked') scheduleRestart(msg.reason === 'shutdown' ? 5000 : 2000);
        break;
    }
  }

  function onPcState(pc) {
    if (pc !== state.pc) return;
    const s = pc.connectionState;
    pill($('pc-state'), s, s === 'connected' ? 'ok' : (s === 'failed' || s === 'closed') ? 'bad' : 'wait');
    clearTimeout(state.connectTimer);
    if (s === 'disconnected') {
      // Give ICE a moment to recover by itself, then restart it.
      state.connectTimer = setTimeout(() => { if (state.pc === pc && pc.connectionState !== 'connected') restartIce(); }, 3000);
    } else if (s === 'failed') {
      restartIce();
    }
  }

  function restartIce() {
    // The path that broke ICE most likely broke the broker's WebSocket too, which would
    // only be noticed after the keep-alive: with MQTT 5 (Will delayed, session kept)
    // reconnect at once; the offer below is queued and sent once connected.
    if (state.mqttVersion === 5 && state.client && state.client.connected) {
      state.client.reconnectNow();
    }
    createOffer(true);
  }

  function closePeer() {
    stopMic();
    if (state.pc) { state.pc.onconnectionstatechange = null; state.pc.close(); }
    state.pc = null;
    state.control = null;
    if (state.talk !== 'off') setTalk('off');
  }

  // A JPEG of the current picture from the camera that served this page
  // (GET snapshot.jpg, with the invitation's bearer token), saved as a download.
  async function snapshot() {
    const headers = invitation ? { Authorization: 'Bearer ' + token() } : {};
    const r = await fetch('snapshot.jpg', { cache: 'no-store', headers });
    if (!r.ok) { note(`snapshot: HTTP ${r.status}${r.status === 404 ? ' (open the page from the camera itself)' : ''}`); return; }
    const url = URL.createObjectURL(await r.blob());
    const a = document.createElement('a');
    a.href = url;
    a.download = `${state.camera || 'edgecam'}-${new Date().toISOString().replace(/[:.]/g, '-')}.jpg`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  // --- Two-way audio (docs/signaling.md, "Two-way audio"; docs/integrations.md) ------
  // The `control` data channel: one JSON reply per request, matched by id.
  function openControl(pc) {
    const dc = pc.createDataChannel('control');
    const ctl = { dc, next: 1, pending: new Map() };
    dc.onmessage = (e) => {
      if (typeof e.data !== 'string') return;
      let reply; try { reply = JSON.parse(e.data); } catch (err) { return; }
      const done = ctl.pending.get(reply.id);
      if (done) { ctl.pending.delete(reply.id); done(reply); }
    };
    return ctl;
  }

  function request(cmd) {
    const ctl = state.control;
    if (!ctl || ctl.dc.readyState !== 'open') return Promise.resolve({ ok: false, error: 'unavailable', message: 'control channel not open' });
    const id = ctl.next++;
    return new Promise((resolve) => {
      ctl.pending.set(id, resolve);
      setTimeout(() => { if (ctl.pending.delete(id)) resolve({ ok: false, error: 'timeout', message: 'no reply' }); }, 5000);
      ctl.dc.send(JSON.stringify({ id, cmd }));
    });
  }

  // state.talk: off (not offered) | insecure (offered, but no getUserMedia here) | idle |
  // asking | talking | busy | error
  function setTalk(s, why) {
    state.talk = s;
    state.talkError = why || null;
    const b = $('talk');
    if (!b) return;
    b.hidden = s === 'off';
    b.textContent = s === 'talking' ? 'Stop talking' : s === 'asking' ? 'Asking…' : 'Talk';
    b.classList.toggle('active', s === 'talking');
    b.disabled = s === 'asking';
    if (why) note(why);
  }

  function stopMic() {
    if (state.mic) for (const t of state.mic.getTracks()) t.stop();
    state.mic = null;
  }

  async function toggleTalk() {
    if (state.talk === 'talking') {
      stopMic();
      if (state.audioTx) await state.audioTx.sender.replaceTrack(null).catch(() => {});
      request('talk-end');
      setTalk('idle');
      return;
    }
    if (state.talk === 'insecure') { note('talking needs this page over HTTPS (or on localhost): browsers give no microphone to plain-HTTP pages'); return; }
    if (!state.audioTx || state.talk === 'off' || state.talk === 'asking') return;
    setTalk('asking');
    try {
      // Echo cancellation keeps the camera's own sound, played here, out of what is sent back.
      state.mic = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
    } catch (e) { setTalk('error', 'microphone: ' + e.message); return; }
    const reply = await request('talk');
    if (!reply.ok) {
      stopMic();
      setTalk(reply.error === 'busy' ? 'busy' : 'error', reply.error === 'busy' ? 'someone else is talking: try again when they stop' : 'cannot talk: ' + (reply.message || reply.error));
      return;
    }
    await state.audioTx.sender.replaceTrack(state.mic.getAudioTracks()[0]);
    setTalk('talking');
  }

  function scheduleRestart(ms) {
    clearTimeout(state.restartTimer);
    warmPeer();
    state.restartTimer = setTimeout(() => {
      if (!state.stopped && !state.pc && state.client && state.client.connected) {
        state.session = newSessionId();
        // New session id: reconnect so the client id and the Last Will match it.
        state.client.end();
        connectBroker(state.brokerUrl);
      }
    }, ms);
  }

  function stop(silent) {
    clearTimeout(state.restartTimer);
    if (state.pc) send({ type: 'bye' });
    closePeer();
    state.stopped = true;
    if (!silent) pill($('pc-state'), 'stopped', '');
  }

  async function pollStats() {
    const pc = state.pc;
    if (!pc) return;
    const report = await pc.getStats();
    const s = { framesDecoded: 0, audioPacketsReceived: 0 };
    const byId = new Map();
    report.forEach((r) => byId.set(r.id, r));
    report.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        s.framesDecoded = r.framesDecoded || 0;
        s.framesPerSecond = r.framesPerSecond;
        s.width = r.frameWidth; s.height = r.frameHeight;
        s.videoBytes = r.bytesReceived;
        s.keyFramesDecoded = r.keyFramesDecoded;
        // Chromium's freeze and jitter-buffer figures (absent in Firefox).
        s.freezeCount = r.freezeCount;
        s.totalFreezesDuration = r.totalFreezesDuration;
        s.jitterBufferMs = r.jitterBufferEmittedCount ? (r.jitterBufferDelay / r.jitterBufferEmittedCount) * 1000 : null;
        s.nackCount = r.nackCount;
        s.packetsLost = r.packetsLost;
        // Packets that came as RTX (RFC 4588) resends.
        s.retransmittedPacketsReceived = r.retransmittedPacketsReceived;
        const c = byId.get(r.codecId); if (c) s.videoCodec = c.mimeType;
      } else if (r.type === 'inbound-rtp' && r.kind === 'audio') {
        s.audioPacketsReceived = r.packetsReceived || 0;
        s.audioBytes = r.bytesReceived;
        const c = byId.get(r.codecId); if (c) s.audioCodec = c.mimeType;
      } else if (r.type === 'transport' && r.selectedCandidatePairId) {
        s.pairId = r.selectedCandidatePairId;
      }
    });
    const pair = s.pairId ? byId.get(s.pairId) : null;
    if (pair) {
      s.rttMs = pair.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null;
      const l = byId.get(pair.localCandidateId), r = byId.get(pair.remoteCandidateId);
      s.candidatePair = `${l ? l.candidateType : '?'}/${r ? r.candidateType : '?'} ${l ? l.protocol : ''}`;
      // How this side reaches its TURN server (udp, tcp or tls) when it relays.
      if (l && l.relayProtocol) s.candidatePair += ` via ${l.relayProtocol}`;
      s.relayProtocol = l ? l.relayProtocol || null : null;
    }
    const now = performance.now();
    const bytes = (s.videoBytes || 0) + (s.audioBytes || 0);
    if (state.lastBytes) s.kbps = ((bytes - state.lastBytes.bytes) * 8) / (now - state.lastBytes.t);
    state.lastBytes = { bytes, t: now };
    s.firstFrameMs = state.firstFrameMs;
    s.timeline = state.timeline;
    s.pageToFirstFrameMs = state.pageToFirstFrameMs;
    s.page = state.page;
    s.iceRestarts = state.iceRestarts;
    s.iceErrors = state.iceErrors.slice(-5);
    s.iceTransportPolicy = state.iceTransportPolicy;
    s.connectionState = pc.connectionState;
    s.session = state.session;
    s.rejected = state.rejected;
    s.talk = state.talk;
    s.talkError = state.talkError;
    if (state.audioTx) {
      report.forEach((r) => { if (r.type === 'outbound-rtp' && r.kind === 'audio') s.talkPacketsSent = r.packetsSent || 0; });
    }
    state.stats = s;
    $('s-resolution').textContent = s.width ? `${s.width}×${s.height}` : '–';
    $('s-fps').textContent = s.framesPerSecond != null ? s.framesPerSecond.toFixed(0) + ' fps' : '–';
    $('s-bitrate').textContent = s.kbps != null ? s.kbps.toFixed(0) + ' kbit/s' : '–';
    $('s-rtt').textContent = s.rttMs != null ? s.rttMs.toFixed(1) + ' ms' : '–';
    $('s-pair').textContent = s.candidatePair || '–';
    $('s-codec').textContent = [s.videoCodec, s.audioCodec].filter(Boolean).join(', ') || '–';
    $('s-audio').textContent = String(s.audioPacketsReceived);
    // The camera's side (its rung, and its bandwidth estimate for this viewer), every
    // 2 s over the control channel when there is one.
    if (state.control && (!state.camStatsAt || performance.now() - state.camStatsAt > 2000)) {
      state.camStatsAt = performance.now();
      request('stats').then((r) => {
        if (!r.ok || !r.stats) return;
        state.cameraSide = r.stats;
        const c = r.stats;
        $('s-rung').textContent = c.rung ? `${c.rung} (${c.videoCodec}), estimate ${c.estimateKbps} kbit/s, ${c.resentPackets} packets resent` : '–';
      }).catch(() => {});
    }
    s.cameraSide = state.cameraSide || null;
    s.offerMadeAhead = !!state.offerMadeAhead;
  }

  window.addEventListener('pagehide', () => {
    // Write bye synchronously: the client's own send would come on a later tick that
    // never comes.
    if (state.client && state.socket && state.socket.readyState === 1 && state.camera && state.session && state.pc) {
      try { state.socket.send(state.client.encodePublish(topic.toCamera(state.camera, state.session), wire({ type: 'bye' }, state.session))); } catch (e) { /* unloading */ }
    }
  });
  $('unmute').onclick = () => { const v = $('video'); v.muted = !v.muted; $('unmute').textContent = v.muted ? 'Unmute' : 'Mute'; };
  $('stop').onclick = () => stop(false);
  $('talk').onclick = () => { toggleTalk().catch((e) => setTalk('error', 'talk: ' + e.message)); };
  $('snapshot').onclick = () => { snapshot().catch((e) => note('snapshot: ' + e.message)); };
  $('reconnect').onclick = () => { if (state.camera) { stop(true); state.stopped = false; state.client.end(); state.session = null; connectBroker(state.brokerUrl); } };
  setInterval(() => { pollStats().catch(() => {}); }, 1000);

  pageMark('script');
  // Navigation and Resource Timing (W3C): the HTML's first and last byte, and when
  // each script in front of this one had loaded.
  const nav = performance.getEntriesByType && performance.getEntriesByType('navigation')[0];
  if (nav) { pageMarkAt('htmlFirstByte', nav.responseStart); pageMarkAt('htmlLoaded', nav.responseEnd); }
  for (const r of (performance.getEntriesByType ? performance.getEntriesByType('resource') : [])) {
    if (r.initiatorType === 'script') pageMarkAt('loaded:' + r.name.split('/').pop(), r.responseEnd);
  }
  loadDefaults().then(({ broker, camera }) => {
    state.brokerUrl = broker;
    if (camera && ID_RE.test(camera)) state.camera = camera;
    connectBroker(broker);
    // After the CONNECT has left: the page's first RTCPeerConnection holds its main
    // thread for ~35 ms, which now overlaps the broker's answer; the offer made ahead
    // overlaps the subscription.
    warmPeer();
    // After the connect has started: the first toLocaleString() loads locale data, which
    // took ~35 ms of Chromium's main thread in front of the broker connection.
    if (invitation) note(`invited as ${invitation.name} until ${new Date(invitation.exp * 1000).toLocaleString()}`);
  });
})();
