// Drives the server's page in headless Chromium (make test-browser, through
// TestBrowserPage): loads the page, uploads the given images through the file
// picker, waits for the scores, takes a screenshot and prints what the page
// shows as JSON on stdout. The Go test compares it with /v1/score.
//
// usage: node page_test.mjs URL SCREENSHOT.png IMAGE...
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, screenshot, ...images] = process.argv.slice(2);
if (!url || !screenshot || images.length === 0) {
  console.error("usage: node page_test.mjs URL SCREENSHOT.png IMAGE...");
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), "clipagiqa-chromium-"));
// A fresh profile (--user-data-dir) per run: playwright passes it itself.
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1000, height: 700 },
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic"],
});
let code = 0;
try {
  const page = await browser.newPage();
  const external = [];
  page.on("request", (req) => { if (!req.url().startsWith(url) && !req.url().startsWith("blob:") && !req.url().startsWith("data:")) external.push(req.url()); });
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.goto(url, { waitUntil: "load" });
  await page.waitForFunction(() => document.getElementById("model").dataset.method, null, { timeout: 30000 });
  const model = await page.textContent("#model");
  await page.setInputFiles("#files", images);
  await page.waitForSelector("body[data-state=done]", { timeout: 60000 });
  const status = await page.textContent("#status");
  const results = await page.$$eval("#results .result", (els) => els.map((e) => ({
    image: e.dataset.name,
    score: e.dataset.score === undefined ? null : Number(e.dataset.score),
    shown: e.querySelector(".score") ? e.querySelector(".score").lastChild.textContent : null,
    thumbnail: (() => { const i = e.querySelector("img"); return i && i.complete && i.naturalWidth > 0; })(),
  })));
  const bars = await page.$$eval("#hist rect", (els) => els.map((e) => Number(e.dataset.count)));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ model, status, results, histogram: bars, external, consoleErrors }));
} catch (e) {
  console.error(String(e && e.stack || e));
  code = 1;
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
