// What every browser script shares: Debian's headless Chromium, and failing with a message.
import { chromium } from "playwright-core";

export const fail = (msg) => { console.error("FAIL: " + msg); process.exit(1); };

export const launch = () => chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
