// Smoke test of the web console in Debian's firefox-esr, driven over WebDriver BiDi by
// puppeteer-core (no geckodriver, no browser download). Run by tests/test_console_firefox.py.
//
// Env: GATEWAY_URL, CLIENT_KEY (a team's key), SCREENSHOT (png path), FIREFOX (optional).
// Prints {"cards": n, "models": n, "errors": [...]} and exits non-zero on any failure.
import puppeteer from "puppeteer-core";

const base = process.env.GATEWAY_URL;
const key = process.env.CLIENT_KEY;
const screenshot = process.env.SCREENSHOT;
const executablePath = process.env.FIREFOX || "/usr/bin/firefox-esr";
const TIMEOUT = 20_000;

if (!base || !key || !screenshot) {
  console.error("GATEWAY_URL, CLIENT_KEY and SCREENSHOT must be set");
  process.exit(2);
}

const errors = [];
const summary = { cards: 0, models: 0, errors };
let browser;
try {
  browser = await puppeteer.launch({
    browser: "firefox",
    executablePath,
    headless: true,
    // A fresh profile; no updates, telemetry or first-run pages.
    extraPrefsFirefox: {
      "app.update.enabled": false,
      "browser.shell.checkDefaultBrowser": false,
      "datareporting.policy.dataSubmissionEnabled": false,
      "toolkit.telemetry.reportingpolicy.firstRun": false,
    },
  });
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  await page.setViewport({ width: 1366, height: 900 });
  page.on("pageerror", (error) => errors.push(`pageerror: ${error.message ?? error}`));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(`console: ${message.text()}`);
  });

  await page.goto(`${base}/console`, { waitUntil: "load" });
  // The same controls the Chromium test uses: the "Key" field and the "Sign in" button.
  await page.waitForSelector("#key", { visible: true });
  await page.type("#key", key);
  await page.click("#sign-in button[type=submit]");
  await page.waitForSelector("#team-view:not([hidden])");
  await page.waitForFunction(() => document.querySelector("#who-name")?.textContent.trim());

  // The gallery: at least one card whose image has actually loaded.
  await page.waitForFunction(() => {
    const img = document.querySelector("#gallery .tile img");
    return img !== null && img.complete && img.naturalWidth > 0;
  });
  summary.cards = await page.$$eval("#gallery .tile", (tiles) => tiles.length);

  // The playground's model list.
  await page.waitForFunction(() => document.querySelectorAll("#model option").length > 0);
  await page.click("#model");
  summary.models = await page.$$eval("#model option", (options) => options.length);
  await page.keyboard.press("Escape");

  await page.screenshot({ path: screenshot, fullPage: true });
} catch (error) {
  errors.push(`driver: ${error?.stack ?? error}`);
} finally {
  if (browser) await browser.close().catch(() => {});
}

console.log(JSON.stringify(summary));
process.exit(errors.length || !summary.cards || !summary.models ? 1 : 0);
