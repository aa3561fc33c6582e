// edgecam viewer, first script: opens the broker's WebSocket while the rest of the page
// (the MQTT client and viewer.js) loads, so that the handshake, 150–250 ms with some
// brokers, is no longer on the way to the offer (docs/performance.md, "Page load").
// viewer.js hands the socket to the MQTT link (broker.js). Without a broker URL known
// here (a page served from elsewhere, or an invitation without one) nothing is opened,
// and viewer.js connects as it always did.
'use strict';

(function () {
  const params = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  // What /config.json would say, put into the page by edgecam in open mode (an
  // invitation page reads the fragment instead, and /config.json wants its token).
  let config = null;
  const meta = document.querySelector('meta[name="edgecam-config"]');
  if (meta && meta.content) {
    try { config = JSON.parse(meta.content); } catch (e) { config = null; }
  }
  const invited = fragment.get('v') === '1';

  // The broker's WebSocket URL: the invitation's, the URL parameter, the camera's fixed
  // URL, or its embedded broker's port on the page's own host (`cfg` is /config.json).
  function brokerUrl(cfg) {
    const c = cfg || {};
    const fixed = (invited && fragment.get('broker')) || params.get('broker') || c.brokerUrl;
    if (fixed) return fixed;
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    return `${scheme}://${location.hostname || '127.0.0.1'}:${c.brokerWsPort || 9001}/mqtt`;
  }

  function norm(u) {
    try { return new URL(u).href; } catch (e) { return u; }
  }

  const early = { socket: null, url: null };
  const known = (invited && fragment.get('broker')) || params.get('broker') || config;
  if (known && typeof WebSocket !== 'undefined') {
    early.url = brokerUrl(config);
    try {
      // The subprotocol MQTT over WebSocket asks for (MQTT 3.1.1 and 5: `mqtt`).
      early.socket = new WebSocket(early.url, ['mqtt']);
      early.socket.binaryType = 'arraybuffer';
      early.createdAt = performance.now();
      early.socket.addEventListener('open', () => { early.openAt = performance.now(); });
    } catch (e) {
      early.socket = null;
    }
  }

  window.edgecamBoot = {
    config,
    brokerUrl,
    // The early socket for `url`, once: still connecting or open, else null (closed,
    // refused, or another URL), and broker.js opens its own.
    takeSocket(url) {
      const s = early.socket;
      early.socket = null;
      if (!s || norm(url) !== norm(early.url) || s.readyState > 1) {
        if (s && s.readyState <= 1) s.close();
        return null;
      }
      return s;
    },
    early,
  };
})();
