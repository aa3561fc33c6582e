// The command line every edgecam Chromium run uses (view.mjs for the tests and the
// bench, floor.mjs for the browser's own floor), so that their figures are taken under
// the same flags: Debian's headless Chromium, nothing phoning home, autoplay allowed,
// loopback peer connections, host candidates as plain addresses (no mDNS).
export const CHROMIUM = '/usr/bin/chromium';
export const VIEWPORT = { width: 1280, height: 800 };

// `profile`: the user-data directory; `extra`: flags of the caller's own.
export function chromiumArgs(profile, extra = []) {
  return [
    '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-default-apps', '--mute-audio', '--autoplay-policy=no-user-gesture-required',
    '--allow-loopback-in-peer-connection', '--remote-debugging-pipe',
    `--user-data-dir=${profile}`,
    ...extra,
    '--disable-features=WebRtcHideLocalIpsWithMdns,Translate,MediaRouter,OptimizationHints',
    'about:blank',
  ];
}
