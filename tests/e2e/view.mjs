// Opens the edgecam viewer page in Debian's headless Chromium (playwright-core) or
// Firefox ESR (puppeteer-core over WebDriver BiDi) and waits until video frames decode
// and audio packets arrive. Prints one JSON line with what it saw and exits 0 on
// success, 1 on failure.
//
// usage: node view.mjs --url URL [--browser chromium|firefox] [--screenshot FILE]
//                     [--timeout-ms N] [--hold-ms N] [--accept-any-cert 1]
//   --browser firefox: Debian's firefox-esr with its OpenH264 plugin switched off, as
//   where it was never downloaded: its offer has VP8, VP9 and AV1 but no H.264.
//   --hold-ms N: once playing, print {"phase":"playing",...} and keep watching for N ms
//   (--settle-ms M: and report the figures M ms into it as "settledStats")
//   (the caller may change the network meanwhile); the result then reports the final
//   figures and those at the moment playback started.
//   --talk-wav FILE --talk-ms N: two-way audio. Chromium's fake microphone plays FILE;
//   once playing, the page presses Talk and talks for N ms. Meanwhile a second page
//   (another session) presses Talk and must be refused; after the first stops, the
//   second presses again and must get the floor. Reported under "talk". The first page
//   also presses Snapshot and reports the JPEG it downloads (bytes, first bytes).
import { chromium } from 'playwright-core';
import puppeteer from 'puppeteer-core';
import { CHROMIUM, VIEWPORT, chromiumArgs } from './chromium.mjs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const url = args.url;
const timeoutMs = Number(args['timeout-ms'] || 30000);
const started = Date.now();

const firefox = args.browser === 'firefox';

// Firefox over WebDriver BiDi. Its profile is puppeteer's temporary one; the prefs let
// media autoplay, keep host candidates unobfuscated (no mDNS, as for Chromium below),
// and keep the OpenH264 plugin off and undownloaded.
async function launchFirefox() {
  return puppeteer.launch({
    browser: 'firefox',
    protocol: 'webDriverBiDi',
    executablePath: '/usr/bin/firefox-esr',
    headless: true,
    acceptInsecureCerts: args['accept-any-cert'] === '1',
    extraPrefsFirefox: {
      'media.autoplay.default': 0,
      'media.autoplay.blocking_policy': 0,
      'media.peerconnection.ice.obfuscate_host_addresses': false,
      'media.gmp-gmpopenh264.enabled': false,
      'media.gmp-gmpopenh264.autoupdate': false,
      'media.gmp-manager.url': '',
      'media.gmp-provider.enabled': false,
    },
  });
}

// Playwright's default switches carry their own --disable-features list, and Chromium
// keeps only the last one; so all defaults are dropped and one merged list is passed.
// --keep-profile 1 (Chromium): the profile in --user-data-dir is the browser's own, as a
// person's is (HTTP cache and compiled-code cache kept on disk), not the throw-away
// context Playwright opens otherwise; a repeat visit then reuses what the last one kept.
const persistent = !firefox && args['keep-profile'] === '1';
const launchChromium = (options) => (persistent
  ? chromium.launchPersistentContext(args['user-data-dir'], { ...options, viewport: VIEWPORT })
  : chromium.launch(options));
const browser = firefox ? await launchFirefox() : await launchChromium({
  executablePath: CHROMIUM,
  ignoreDefaultArgs: true,
  args: chromiumArgs(args['user-data-dir'] || '/tmp/edgecam-chromium-' + process.pid, [
    // Tests that run their own TURN-over-TLS server with a certificate they made.
    ...(args['accept-any-cert'] === '1' ? ['--ignore-certificate-errors'] : []),
    // Two-way audio: a fake microphone playing a file, no permission prompt, and the
    // test's plain-HTTP camera treated as the secure context getUserMedia needs.
    ...(args['talk-wav'] ? [
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      `--use-file-for-fake-audio-capture=${args['talk-wav']}`,
      `--unsafely-treat-insecure-origin-as-secure=${new URL(url).origin}`,
    ] : []),
  ]),
});
let result = { ok: false, url };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Glass-to-glass (--glass 1): the camera's test pattern carries its capture time (ms,
// modulo 2^32) as 32 black/white blocks across the top strip (edgecam's media::stamp,
// [video] stamp_capture_time). At each requestVideoFrameCallback the frame is drawn on
// a canvas, the blocks are read, and the age at its expected display time is kept
// (same machine, same clock). Ages outside -1 s..10 s are counted as unreadable.
function installGlass() {
  const v = document.getElementById('video');
  const c = document.createElement('canvas');
  const g = c.getContext('2d', { willReadFrequently: true });
  window.__glass = { ages: [], unreadable: 0 };
  const BITS = 32, DIV = 18;
  const step = (now, meta) => {
    const w = meta.width, h = meta.height;
    const block = Math.floor(w / BITS), strip = Math.floor(h / DIV);
    if (block > 0 && strip > 0) {
      if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
      g.drawImage(v, 0, 0, w, h);
      const row = g.getImageData(0, Math.floor(strip / 2), w, 1).data;
      let stamp = 0;
      for (let i = 0; i < BITS; i++) {
        const x = (i * block + Math.floor(block / 2)) * 4;
        const luma = 0.299 * row[x] + 0.587 * row[x + 1] + 0.114 * row[x + 2];
        stamp = stamp * 2 + (luma > 127.5 ? 1 : 0);
      }
      const shown = Math.floor(performance.timeOrigin + meta.expectedDisplayTime);
      let age = (shown - stamp) % 2 ** 32;
      if (age < 0) age += 2 ** 32;
      if (age >= 2 ** 31) age -= 2 ** 32;
      if (age > -1000 && age < 10000) window.__glass.ages.push(age); else window.__glass.unreadable += 1;
    }
    v.requestVideoFrameCallback(step);
  };
  v.requestVideoFrameCallback(step);
}
function glassSummary(g) {
  const a = [...g.ages].sort((x, y) => x - y);
  const q = (p) => (a.length ? a[Math.min(a.length - 1, Math.floor(p * a.length))] : null);
  return { frames: a.length, unreadable: g.unreadable, p50Ms: q(0.5), p95Ms: q(0.95), maxMs: a.length ? a[a.length - 1] : null };
}
const statsOf = (p) => p.evaluate(() => (window.edgecam ? window.edgecam.stats() : {}));
// Clicks Talk on `p` and polls (at most 10 s) until its talk state has left `from`
// and `asking`; returns the new state.
async function pressTalk(p) {
  const from = await p.evaluate(() => window.edgecam.state.talk);
  await p.click('#talk');
  const end = Date.now() + 10000;
  let s = from;
  while (Date.now() < end) {
    s = await p.evaluate(() => window.edgecam.state.talk);
    if (s !== 'asking' && s !== from) break;
    await sleep(100);
  }
  return s;
}

// The two-way audio script (see --talk-wav above).
async function talkTurns(first, talkMs) {
  const t = {};
  t.before = await first.evaluate(() => window.edgecam.state.talk);
  const [download] = await Promise.all([first.waitForEvent('download', { timeout: 10000 }), first.click('#snapshot')]);
  const jpeg = await import('node:fs').then((fs) => download.path().then((p) => fs.readFileSync(p)));
  t.snapshotBytes = jpeg.length;
  t.snapshotMagic = jpeg.subarray(0, 3).toString('hex');
  t.first = await pressTalk(first);
  const second = await browser.newPage();
  await second.goto(url, { waitUntil: 'load', timeout: 10000 });
  const end = Date.now() + 20000;
  while (Date.now() < end && !((await statsOf(second)).framesDecoded > 0)) await sleep(200);
  t.second = await pressTalk(second);
  t.secondError = await second.evaluate(() => window.edgecam.state.talkError);
  await sleep(talkMs);
  t.firstPacketsSent = (await statsOf(first)).talkPacketsSent || 0;
  t.afterStop = await pressTalk(first);
  t.secondAfterRelease = await pressTalk(second);
  await sleep(1000);
  t.secondPacketsSent = (await statsOf(second)).talkPacketsSent || 0;
  await second.click('#talk');
  await second.close();
  return t;
}
try {
  const page = firefox || persistent ? await browser.newPage() : await browser.newPage({ viewport: VIEWPORT });
  if (firefox) await page.setViewport(VIEWPORT);
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(m.text()));
  // --no-twcc 1: a browser that does not negotiate transport-wide congestion control
  // (the offer loses its transport-cc feedback and header extension), so the camera
  // must estimate from receiver reports and REMB.
  if (args['no-twcc'] === '1') {
    const strip = () => {
      const create = RTCPeerConnection.prototype.createOffer;
      RTCPeerConnection.prototype.createOffer = async function (...a) {
        const offer = await create.apply(this, a);
        const sdp = offer.sdp.split('\r\n')
          .filter((l) => !/^a=rtcp-fb:\d+ transport-cc/.test(l) && !/transport-wide-cc/.test(l))
          .join('\r\n');
        return { type: offer.type, sdp };
      };
    };
    if (firefox) await page.evaluateOnNewDocument(strip); else await page.addInitScript(strip);
  }
  // edgecam may still be starting inside its namespace: retry the page load briefly.
  // A load whose script never ran is retried too, up to 3 times: a fresh namespace's
  // network may still be settling (IPv6 addresses coming up), and Chromium then fails
  // requests in flight with net::ERR_NETWORK_CHANGED, as a real viewer would reload.
  for (let attempt = 0, reloads = 0; ; attempt++) {
    try {
      await page.goto(url, { waitUntil: 'load', timeout: 5000 });
      if (reloads >= 3 || await page.evaluate(() => !!window.edgecam)) break;
      reloads += 1;
      consoleLines.push(`view.mjs: the page's script did not start; loading it again (${reloads})`);
    } catch (e) {
      if (attempt >= 40 || Date.now() > started + timeoutMs) throw e;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  const deadline = started + timeoutMs;
  let stats = {};
  while (Date.now() < deadline) {
    stats = await page.evaluate(() => (window.edgecam ? window.edgecam.stats() : {}));
    if (stats.framesDecoded > 10 && stats.audioPacketsReceived > 10 && stats.width) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  let ok = stats.framesDecoded > 10 && stats.audioPacketsReceived > 10;
  if (ok && args.glass === '1') await page.evaluate(installGlass);
  let playingStats = null;
  let settledStats = null;
  // Every 500 ms of the hold: [ms since start, framesDecoded, freezeCount,
  // totalFreezesDuration, width, packetsLost, nackCount, keyFramesDecoded].
  const series = [];
  const holdMs = Number(args['hold-ms'] || 0);
  if (ok && holdMs > 0) {
    playingStats = stats;
    console.log(JSON.stringify({ phase: 'playing', stats }));
    const holdEnd = Date.now() + holdMs;
    // --settle-ms N: also keep the figures N ms into the hold, so the caller can measure
    // the window after the stream settled (e.g. after adapting to a shaped link).
    const settleAt = args['settle-ms'] ? Date.now() + Number(args['settle-ms']) : null;
    while (Date.now() < holdEnd) {
      await new Promise((r) => setTimeout(r, 500));
      stats = await page.evaluate(() => (window.edgecam ? window.edgecam.stats() : {}));
      if (settleAt && !settledStats && Date.now() >= settleAt) {
        settledStats = stats;
        // Glass-to-glass counts the window after settling only.
        if (args.glass === '1') await page.evaluate(() => { window.__glass = { ages: [], unreadable: 0 }; });
      }
      series.push([Date.now() - started, stats.framesDecoded, stats.freezeCount, stats.totalFreezesDuration, stats.width, stats.packetsLost, stats.nackCount, stats.keyFramesDecoded]);
    }
    ok = stats.framesDecoded > playingStats.framesDecoded;
  }
  let talk = null;
  if (ok && args['talk-wav']) {
    talk = await talkTurns(page, Number(args['talk-ms'] || 3000));
    console.log(JSON.stringify({ phase: 'talked', talk }));
    ok = talk.first === 'talking' && talk.second === 'busy' && talk.secondAfterRelease === 'talking';
  }
  const log = await page.evaluate(() => (window.edgecam ? window.edgecam.state.log : []));
  const glass = args.glass === '1' ? glassSummary(await page.evaluate(() => window.__glass || { ages: [], unreadable: 0 })) : null;
  result = {
    ok, url, stats, playingStats, settledStats, series, glass, talk, log, console: consoleLines.slice(-20), elapsedMs: Date.now() - started,
  };
  if (args.screenshot) await page.screenshot({ path: args.screenshot });
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
