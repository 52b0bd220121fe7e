// desk.mjs - drives the desk's page in Debian's headless chromium through playwright-core: log in, see the
// queue, open the oldest case, tick "card to blocked_cards", resolve it as fraud; screenshots of the queue and
// of the case. Prints one JSON line {txn_id, message} for the shell script to check in NATS.
// Usage: node desk.mjs URL USER SECRET SCREENSHOT_DIR
import { chromium } from "playwright-core";

const [url, user, secret, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1366, height: 768 } });
  page.setDefaultTimeout(30000);
  await page.goto(url);
  await page.waitForSelector("#login-user", { state: "visible" });
  // a wrong secret is refused
  await page.fill("#login-user", user);
  await page.fill("#login-secret", "not-the-secret");
  await page.click("#login-btn");
  await page.waitForFunction(() => document.querySelector("#login-msg").textContent.length > 0);
  await page.fill("#login-secret", secret);
  await page.click("#login-btn");
  await page.waitForSelector("#queue tbody tr", { state: "visible" });
  await page.screenshot({ path: `${shots}/desk-queue.png` });
  const first = page.locator("#queue tbody tr").first();
  const txn = await first.getAttribute("data-txn");
  await first.click();
  await page.waitForFunction((id) => document.querySelector("#c-txn").textContent === id, txn);
  await page.waitForSelector("#c-features tr", { state: "visible", timeout: 60000 });
  await page.click("#btn-claim");
  await page.waitForFunction(() => /claim: done/.test(document.querySelector("#action-msg").textContent));
  await page.check("#list-card");
  await page.waitForFunction((id) => /claimed/.test(document.querySelector(`#queue tr[data-txn="${id}"]`).textContent), txn);
  await page.waitForSelector("#c-history tbody tr", { state: "visible" });
  // tall enough to show the whole case (features and the card's history) in one picture
  await page.setViewportSize({ width: 1366, height: 1300 });
  await page.screenshot({ path: `${shots}/desk-case.png` });
  await page.setViewportSize({ width: 1366, height: 768 });
  await page.click("#btn-fraud");
  await page.waitForFunction(() => /resolve fraud: done/.test(document.querySelector("#action-msg").textContent));
  const msg = await page.textContent("#action-msg");
  await page.waitForFunction(() => /resolved: fraud/.test(document.querySelector("#c-state").textContent));
  console.log(JSON.stringify({ txn_id: txn, message: msg }));
} finally {
  await browser.close();
}
