// Drives the dashboard in Debian's headless Chromium: the page shows a SKU's number, a hold
// made over HTTP appears on the page, the manager form records a wastage, the ledger lag
// panel lists the outlet, the end of day shows the wastage, rows show the SKU's name, and the keys are out of the address and only in the session.
// Usage: node dashboard.mjs URL VIEWER_KEY MANAGER_KEY STOREFRONT_KEY OUTLET SKU SCREENSHOT
import { fail, launch } from "./launch.mjs";

const [url, viewer, manager, storefront, outlet, sku, screenshot] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1024, height: 768 } }); // a tablet
  page.on("pageerror", (e) => fail("page error: " + e.message));
  await page.goto(`${url}/?key=${viewer}&manager_key=${manager}&outlets=${outlet}`);
  const selector = `tr[data-outlet="${outlet}"][data-sku="${sku}"] td.avail`;
  await page.locator(selector).waitFor({ timeout: 15000 });
  // The row names the item as the catalogue does (GET /v1/skus), not by its id.
  const info = await (await fetch(`${url}/v1/skus/${sku}`, { headers: { "Authorization": `Bearer ${viewer}` } })).json();
  const nameCell = `tr[data-outlet="${outlet}"][data-sku="${sku}"] td:nth-child(2)`;
  await page.waitForFunction(([sel, name]) => document.querySelector(sel)?.textContent === name,
    [nameCell, info.name], { timeout: 5000 }).catch(() => fail(`the row does not show the name '${info.name}'`));
  const shown = async () => Number(await page.locator(selector).textContent());
  const before = await shown();
  const waitFor = async (want, what) => {
    const started = Date.now();
    await page.waitForFunction(([sel, w]) => document.querySelector(sel)?.textContent === String(w),
      [selector, want], { timeout: 5000 }).catch(() => fail(`${what}: the page did not show ${want}`));
    return Date.now() - started;
  };

  const res = await fetch(`${url}/v1/reservations`, {
    method: "POST",
    headers: { "Authorization": `Bearer ${storefront}`, "Content-Type": "application/json",
               "Idempotency-Key": `browser-${Date.now()}` },
    body: JSON.stringify({ outlet, lines: [{ sku, qty: 2 }] }),
  });
  if (res.status !== 201) fail("reserve answered " + res.status);
  const holdMs = await waitFor(before - 2, "hold");

  await page.selectOption("#m-outlet", outlet);
  await page.fill("#m-sku", sku);
  await page.selectOption("#m-kind", "wastage");
  await page.fill("#m-qty", "1");
  await page.fill("#m-note", "dropped tray");
  await page.click("#m-submit");
  const wastageMs = await waitFor(before - 3, "wastage");
  await page.locator("#form-result.good").waitFor({ timeout: 5000 }).catch(() => fail("the form did not report success"));
  await page.locator("#feed li", { hasText: "wastage" }).first().waitFor({ timeout: 5000 })
    .catch(() => fail("the recent movements do not show the wastage"));
  // The end of day shows the wastage (the hold is not sold, so nothing is).
  await page.selectOption("#eod-outlet", outlet);
  await page.click("#eod-show");
  const eodWasted = `#eod-rows tr[data-sku="${sku}"] td:nth-child(3)`;
  await page.waitForFunction((sel) => document.querySelector(sel)?.textContent === "1", eodWasted, { timeout: 5000 })
    .catch(() => fail("the end of day does not show the wastage"));
  await page.locator("#eod-totals", { hasText: "wasted 1" }).waitFor({ timeout: 5000 })
    .catch(() => fail("the end of day totals do not show the wastage"));
  await page.locator(`#lag-rows tr[data-outlet="${outlet}"]`).waitFor({ timeout: 5000 })
    .catch(() => fail("the ledger lag panel does not show the outlet"));
  // The keys were taken from the address and left it, and they live in this tab's session,
  // never in localStorage (which outlives the browser and is shared by every tab).
  if (/[?&](key|manager_key)=/.test(page.url())) fail("a key stayed in the address: " + page.url());
  const stored = await page.evaluate(() => ({
    local: [localStorage.getItem("shelfsync.key"), localStorage.getItem("shelfsync.manager_key")],
    session: [sessionStorage.getItem("shelfsync.key"), sessionStorage.getItem("shelfsync.manager_key")],
  }));
  if (stored.local.some((k) => k !== null)) fail("a key is in localStorage");
  if (stored.session[0] !== viewer || stored.session[1] !== manager) fail("the keys are not in the session");
  await page.screenshot({ path: screenshot });
  console.log(JSON.stringify({ before, after_hold: before - 2, after_wastage: before - 3, hold_to_page_ms: holdMs, wastage_to_page_ms: wastageMs }));
} finally {
  await browser.close();
}
