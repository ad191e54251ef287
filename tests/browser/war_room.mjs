// Drives the war-room screen and the kitchen view in Debian's headless Chromium.
// War room: every outlet has a row, the till that sent a POS message shows it as seen, the
// sell-out and low-stock lists name the SKUs the test made sell out and run low, and the
// sales chart draws the units sold (coloured pixels above its baseline, its scale up to
// them). Kitchen: the plan lists the SKU, and the cook's number typed in is saved and set
// beside the suggestion.
// Usage: node war_room.mjs URL VIEWER_KEY MANAGER_KEY OUTLET SELLING_OUT_SKU LOW_SKU SOLD WAR_SHOT KITCHEN_SHOT
import { fail, launch } from "./launch.mjs";

const [url, viewer, manager, outlet, sku, lowSku, sold, warShot, kitchenShot] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } }); // a war-room screen
  page.on("pageerror", (e) => fail("page error: " + e.message));
  await page.goto(`${url}/war-room?key=${viewer}`);
  await page.waitForFunction(() => Number(document.body.dataset.loaded || 0) >= 1, null, { timeout: 15000 })
    .catch(() => fail("the war room never loaded"));
  if (/[?&]key=/.test(page.url())) fail("the key stayed in the address: " + page.url());
  const outlets = await (await fetch(`${url}/v1/outlets`, { headers: { "Authorization": `Bearer ${viewer}` } })).json();
  const rows = await page.locator("#outlet-rows tr[data-outlet]").count();
  if (rows !== outlets.length) fail(`${rows} outlet rows for ${outlets.length} outlets`);
  const pos = await page.locator(`#outlet-rows tr[data-outlet="${outlet}"] td:nth-child(2)`).textContent();
  if (!/ago$/.test(pos)) fail(`the outlet's POS link shows '${pos}', not when it was seen`);
  await page.locator(`#sellout-rows tr[data-sku="${sku}"]`).waitFor({ timeout: 10000 })
    .catch(() => fail("the sell-out list does not name the SKU"));
  await page.locator(`#low-rows tr[data-sku="${lowSku}"]`).waitFor({ timeout: 10000 })
    .catch(() => fail("the low-stock list does not name the SKU"));
  const chart = await page.evaluate(() => {
    const c = document.getElementById("chart"), ctx = c.getContext("2d");
    const { data } = ctx.getImageData(0, 0, c.width, c.height - 22 - 3);  // above the baseline
    let coloured = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
      if (a > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured++;
    }
    return { coloured, max: Number(c.dataset.max), legend: document.getElementById("legend").textContent };
  });
  if (chart.coloured < 50) fail(`the chart drew no line above its baseline (${chart.coloured} coloured pixels)`);
  // The chart draws what the service counted: its scale is the busiest minute, and the
  // outlet's legend its sum over the half hour (which holds the rush of `sold` units).
  const room = await (await fetch(`${url}/v1/war-room`, { headers: { "Authorization": `Bearer ${viewer}` } })).json();
  const mine = room.outlets.find((o) => o.outlet === outlet);
  const total = mine.sales_per_min.reduce((a, b) => a + b, 0);
  const busiest = Math.max(1, ...room.outlets.flatMap((o) => o.sales_per_min));
  if (total < Number(sold)) fail(`the service counted ${total} units in the half hour, fewer than the ${sold} sold`);
  if (chart.max !== busiest) fail(`the chart's scale is ${chart.max}, the busiest minute ${busiest}`);
  if (!chart.legend.includes(`${mine.name} ${total}`)) fail(`the legend does not say '${mine.name} ${total}': ${chart.legend}`);
  await page.screenshot({ path: warShot });

  const kitchen = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  kitchen.on("pageerror", (e) => fail("kitchen page error: " + e.message));
  await kitchen.goto(`${url}/kitchen?key=${viewer}&manager_key=${manager}`);
  const row = `#rows tr[data-outlet="${outlet}"][data-sku="${sku}"]`;
  await kitchen.locator(row).waitFor({ timeout: 15000 }).catch(() => fail("the kitchen plan has no row of the SKU"));
  const suggested = Number(await kitchen.locator(`${row} td.suggested`).textContent());
  await kitchen.fill(`${row} input`, String(suggested + 3));
  await kitchen.press(`${row} input`, "Tab");
  await kitchen.locator(`${row} td.mark.saved`).waitFor({ timeout: 5000 }).catch(() => fail("the cook's number was not saved"));
  const diff = await kitchen.locator(`${row} td.diff`).textContent();
  if (diff !== "+3") fail(`the difference shows '${diff}', not +3`);
  await kitchen.screenshot({ path: kitchenShot });
  console.log(JSON.stringify({ outlets: rows, pos, chart, suggested, cook: suggested + 3 }));
} finally {
  await browser.close();
}
