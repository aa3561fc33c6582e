// edgecam viewer: the page's link to the MQTT broker over a WebSocket, on the vendored
// u8-mqtt client (19 KB, web/vendor/README). u8-mqtt encodes and decodes the packets and
// matches SUBACK and PUBACK to their requests; this file adds what a viewer on a real
// network needs and the library leaves to its user:
// - the same CONNECT (client id, Last Will, MQTT 5 properties) on every reconnect;
// - reconnecting 1 s after a lost connection, or at once when asked to;
// - noticing a dead connection: nothing received for 1.5 keep-alive intervals (MQTT 5
//   §3.1.2.10 gives the broker the same rule towards us);
// - starting on a WebSocket that boot.js opened before the scripts loaded;
// - the subscriptions sent right behind the CONNECT, not after its CONNACK.
'use strict';

(function () {
  const RECONNECT_MS = 1000;

  // Opens the link. `o`: url, socket (an already created WebSocket for `url`, or null),
  // version (4 = MQTT 3.1.1, 5), connect (the CONNECT packet's fields in u8-mqtt's
  // shape: client_id, keep_alive in s, flags, props, will, username, password),
  // subscriptions ([topic, onSuback(granted) or null] pairs, subscribed at QoS 1 on every
  // connection), and the callbacks onSocket(ws) for each WebSocket, onConnack() after
  // each accepted CONNECT, onClose(connackSeen) after each lost connection,
  // onMessage(topic, text) and onError(message). Returns { publish, reconnectNow, end,
  // encodePublish, connected }.
  function open(o) {
    const make = o.version === 5 ? u8mqtt.mqtt_v5 : u8mqtt.mqtt_v4;
    let socket = null;
    let ended = false;
    let acked = false;
    let lastRx = 0;
    let retry = null;
    let nextDelay = RECONNECT_MS;
    const keepAliveS = o.connect.keep_alive || 60;

    const client = make({
      keep_alive: keepAliveS,
      log_conn() {},
      on_error(err) { o.onError(err && err.message ? err.message : String(err)); },
      // CONNECT is ours to send (below), with the Will and properties each time.
      on_live() {},
      on_disconnect() {
        if (ended) return;
        const was = acked;
        acked = false;
        link.connected = false;
        o.onClose(was);
        // onClose may have ended the link (the page's fall-back to MQTT 3.1.1).
        if (!ended) schedule(nextDelay);
        nextDelay = RECONNECT_MS;
      },
    });

    // Every PUBLISH the broker delivers; u8-mqtt's router sends the PUBACK of a QoS 1
    // one after this returns.
    client.on_topic('#', (pkt) => { o.onMessage(pkt.topic, pkt.utf8()); });

    function schedule(ms) {
      clearTimeout(retry);
      retry = setTimeout(() => { retry = null; if (!ended) attempt(new WebSocket(o.url, ['mqtt'])); }, ms);
    }

    function detach(ws) {
      if (!ws) return;
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try { ws.close(); } catch (e) { /* already closed */ }
    }

    function attempt(ws) {
      socket = ws;
      ws.binaryType = 'arraybuffer';
      o.onSocket(ws);
      lastRx = performance.now();
      ws.addEventListener('message', () => { lastRx = performance.now(); });
      // u8-mqtt watches a socket only once it is open: one that never opens would
      // leave it waiting for ever.
      ws.addEventListener('close', () => {
        if (socket === ws && ws.onmessage === null) client.conn.reset(new Error('websocket closed before it opened'));
      });
      try {
        client.with_websock(ws);
      } catch (e) {
        schedule(RECONNECT_MS);
        return;
      }
      client.connect({ ...o.connect }).then(() => {
        if (socket !== ws) return;
        acked = true;
        link.connected = true;
        o.onConnack();
      }, (e) => {
        // A refused CONNECT (its CONNACK's reason); a lost socket shows in onClose.
        if (socket === ws && e && e.mqtt_pkt) o.onError(e.message);
      });
      // A client may send further packets right behind its CONNECT without waiting for
      // the CONNACK, and the broker handles them in order (MQTT 3.1.1 and MQTT 5
      // §3.1.4): the SUBACKs and the retained status then follow the CONNACK instead of
      // coming a round trip after it. A refused CONNECT closes the connection and the
      // SUBSCRIBEs with it. u8-mqtt's subscribe() waits for the CONNACK; `_send0` is
      // its send before the CONNACK (what its connect() uses), queued until the socket
      // is open and kept in order with the CONNECT; the vendored version is pinned.
      for (const [topic, onSuback] of o.subscriptions || []) {
        const pkt = { topics: [[topic, { qos: 1 }]] };
        client._send0('subscribe', pkt, pkt).then((answer) => {
          const suback = answer && answer[0];
          if (socket !== ws || !suback || !onSuback) return;
          const code = suback.answers && suback.answers[0];
          onSuback(code != null && Number(code) < 0x80);
        }, () => { /* the connection failed; onClose reports it */ });
      }
    }

    // A connection that carried nothing for 1.5 keep-alives is dead (a network change
    // leaves the old TCP connection silent, and the browser would notice late).
    const watchdog = setInterval(() => {
      if (link.connected && performance.now() - lastRx > keepAliveS * 1500) link.reconnectNow();
    }, keepAliveS * 500);

    const link = {
      connected: false,
      // QoS 1 PUBLISH; queued while disconnected and sent after the next CONNACK.
      publish(topic, payload) { return client.pub({ topic, payload, qos: 1 }); },
      // Drops the connection now and connects again on a new WebSocket, without the
      // close handshake a dead path could not carry.
      reconnectNow() {
        if (ended) return;
        const old = socket;
        socket = null;
        detach(old);
        // u8-mqtt reports the reset on a later microtask: on_disconnect reconnects.
        nextDelay = 0;
        client.conn.reset(new Error('reconnecting'));
        if (retry) schedule(0);
      },
      // Closes the link for good, with no DISCONNECT (the broker publishes the Will, as
      // for a lost page). What was published just before still leaves: the socket is
      // closed on a later task, after u8-mqtt's writes. The reset stops u8-mqtt's
      // keep-alive timer, which would otherwise outlive the link.
      end() {
        ended = true;
        clearTimeout(retry);
        clearInterval(watchdog);
        const ws = socket;
        link.connected = false;
        setTimeout(() => { client.conn.reset(false); detach(ws); }, 0);
      },
      // The bytes of a QoS 0 PUBLISH, for writing to the socket synchronously (a page
      // that is unloading runs no later task).
      encodePublish(topic, payload) { return client.mqtt_ctx.encode_pkt('publish', { topic, payload, qos: 0 }); },
    };

    attempt(o.socket || new WebSocket(o.url, ['mqtt']));
    return link;
  }

  window.edgecamBroker = { open };
})();
