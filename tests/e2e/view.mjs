// Opens the edgecam viewer page in Debian's headless Chromium and waits until video
// frames decode and audio packets arrive. Prints one JSON line with what it saw and
// exits 0 on success, 1 on failure.
//
// usage: node view.mjs --url URL [--screenshot FILE] [--timeout-ms N] [--hold-ms N]
//                     [--accept-any-cert 1]
//   --hold-ms N: once playing, print {"phase":"playing",...} and keep watching for N ms
//   (the caller may change the network meanwhile); the result then reports the final
//   figures and those at the moment playback started.
import { chromium } from 'playwright-core';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const url = args.url;
const timeoutMs = Number(args['timeout-ms'] || 30000);
const started = Date.now();

// Playwright's default switches carry their own --disable-features list, and Chromium
// keeps only the last one; so all defaults are dropped and one merged list is passed.
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  ignoreDefaultArgs: true,
  args: [
    '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-default-apps', '--mute-audio', '--autoplay-policy=no-user-gesture-required',
    '--allow-loopback-in-peer-connection', '--remote-debugging-pipe',
    `--user-data-dir=${args['user-data-dir'] || '/tmp/edgecam-chromium-' + process.pid}`,
    // Tests that run their own TURN-over-TLS server with a certificate they made.
    ...(args['accept-any-cert'] === '1' ? ['--ignore-certificate-errors'] : []),
    '--disable-features=WebRtcHideLocalIpsWithMdns,Translate,MediaRouter,OptimizationHints',
    'about:blank',
  ],
});
let result = { ok: false, url };
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(m.text()));
  // edgecam may still be starting inside its namespace: retry the page load briefly.
  for (let attempt = 0; ; attempt++) {
    try { await page.goto(url, { waitUntil: 'load', timeout: 5000 }); break; } catch (e) {
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
  let playingStats = null;
  const holdMs = Number(args['hold-ms'] || 0);
  if (ok && holdMs > 0) {
    playingStats = stats;
    console.log(JSON.stringify({ phase: 'playing', stats }));
    const holdEnd = Date.now() + holdMs;
    while (Date.now() < holdEnd) {
      await new Promise((r) => setTimeout(r, 500));
      stats = await page.evaluate(() => (window.edgecam ? window.edgecam.stats() : {}));
    }
    ok = stats.framesDecoded > playingStats.framesDecoded;
  }
  const log = await page.evaluate(() => (window.edgecam ? window.edgecam.state.log : []));
  result = {
    ok, url, stats, playingStats, log, console: consoleLines.slice(-20), elapsedMs: Date.now() - started,
  };
  if (args.screenshot) await page.screenshot({ path: args.screenshot });
} catch (e) {
  result.error = String(e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
