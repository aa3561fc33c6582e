// The browser's own floor for "page load → first frame" on this machine: serves
// floor.html on an ephemeral loopback port and opens it in N freshly started headless
// Chromiums (Debian's, with the flags of chromium.mjs, as view.mjs), then prints one
// JSON line with the median and p95 of each milestone, ms since navigation. Nothing of edgecam runs here;
// start a camera beside it to load the machine as the bench does.
//
// usage: node floor.mjs [--runs N]
import { chromium } from 'playwright-core';
import { CHROMIUM, VIEWPORT, chromiumArgs } from './chromium.mjs';
import { createServer } from 'node:http';
import { readFileSync, rmSync } from 'node:fs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const runs = Math.min(Math.max(Number(args.runs || 10), 1), 100);
const html = readFileSync(new URL('./floor.html', import.meta.url));
const server = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${server.address().port}/`;

const samples = [];
for (let i = 0; i < runs; i++) {
  const profile = `/tmp/edgecam-floor-${process.pid}-${i}`;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    ignoreDefaultArgs: true,
    args: chromiumArgs(profile),
  });
  try {
    const page = await browser.newPage({ viewport: VIEWPORT });
    await page.goto(url);
    await page.waitForFunction(() => window.done, null, { timeout: 15000 });
    samples.push(await page.evaluate(() => window.done));
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
}
server.close();

const quantile = (values, q) => {
  const a = values.filter((x) => typeof x === 'number').sort((x, y) => x - y);
  return a.length ? Math.round(a[Math.min(a.length - 1, Math.floor(q * a.length))]) : null;
};
const keys = ['script', 'peers', 'offer', 'answer', 'ice-checking', 'ice-connected', 'pc-connected', 'received', 'presented'];
const of = (k) => samples.map((s) => s[k]);
console.log(JSON.stringify({
  runs,
  p50: Object.fromEntries(keys.map((k) => [k, quantile(of(k), 0.5)])),
  p95: Object.fromEntries(keys.map((k) => [k, quantile(of(k), 0.95)])),
  offerToReceivedP50: quantile(samples.map((s) => s.received - s.offer), 0.5),
}));
