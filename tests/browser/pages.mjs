// The play page and the dashboard in a real headless Chromium, against a
// running shard. server/tests/browser.rs starts the shard (and players who
// walk, for the dashboard) and runs this with:
//   GAME_URL=http://127.0.0.1:PORT OPS_URL=http://127.0.0.1:PORT OPS_TOKEN=… ARTIFACTS=dir node pages.mjs
// It exits non-zero with the reason when a check fails, and leaves
// screenshots in ARTIFACTS.
import { strict as assert } from "node:assert";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const { GAME_URL, OPS_URL, OPS_TOKEN } = process.env;
const ARTIFACTS = process.env.ARTIFACTS || "artifacts";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
assert.ok(GAME_URL && OPS_URL && OPS_TOKEN, "set GAME_URL, OPS_URL and OPS_TOKEN");
mkdirSync(ARTIFACTS, { recursive: true });

// Without the background-networking flags Chromium keeps trying to reach
// Google's services, which this machine's closed network refuses.
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

/** Poll `check` (which returns a value or throws/returns falsy) until it holds. */
async function eventually(what, check, timeoutMs = 15000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (${last.message})` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function watchErrors(page, name) {
  const errors = [];
  page.on("pageerror", (e) => errors.push(`${name}: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") errors.push(`${name} console: ${m.text()}`); });
  return errors;
}

async function dashboard() {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const errors = watchErrors(page, "dashboard");
  await page.goto(`${OPS_URL}/dashboard`);
  // Live numbers without a token: players from /api/status, and the chart
  // series grow once a second.
  const players = await eventually("players shown", async () => {
    const text = await page.textContent("#v-players");
    return /^\d+/.test(text) && Number(text.match(/^\d+/)[0]) >= 3 && text;
  });
  const ticks = async () => page.evaluate(() => window.dashboard.status.worlds[0].tick);
  const firstTick = await ticks();
  await eventually("the tick number moves", async () => (await ticks()) > firstTick + 10);
  await eventually("ready shown", async () => (await page.textContent("#health")) === "ready");
  // The map needs the admin token: without it, no positions.
  assert.equal(await page.evaluate(() => window.dashboard.players.length), 0);
  await page.fill("#token", OPS_TOKEN);
  await page.click("#auth button");
  await eventually("areas on the map", async () => page.evaluate(() => window.dashboard.areas.length > 0));
  const before = await eventually("players on the map", async () => {
    const dots = await page.evaluate(() => window.dashboard.players.map((p) => ({ id: p.id, lon: p.lon, lat: p.lat })));
    return dots.length >= 3 && dots;
  });
  await eventually("a dot moves on the map", async () => {
    const now = await page.evaluate(() => window.dashboard.players.map((p) => ({ id: p.id, lon: p.lon, lat: p.lat })));
    return now.some((p) => {
      const was = before.find((b) => b.id === p.id);
      return was && (was.lon !== p.lon || was.lat !== p.lat);
    });
  });
  // The dots are drawn: the map canvas has white pixels where players are.
  const drawn = await page.evaluate(() => {
    const canvas = document.getElementById("map");
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let white = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] > 240 && data[i + 1] > 240 && data[i + 2] > 240) white++;
    return white;
  });
  assert.ok(drawn > 10, `player dots drawn on the map (${drawn} white pixels)`);
  await page.waitForTimeout(1500); // let the charts draw a few samples
  await page.screenshot({ path: join(ARTIFACTS, "dashboard.png"), fullPage: true });
  assert.deepEqual(errors, []);
  console.log(`dashboard: ${players}, map dots move, screenshot saved`);
  await page.close();
}

async function play() {
  // Two accounts the harness made and placed 200 m apart (out of each
  // other's 150 m view): they log in, walk toward each other, and meet.
  const names = [process.env.PLAYER_A, process.env.PLAYER_B];
  const password = process.env.PASSWORD;
  assert.ok(names[0] && names[1] && password, "set PLAYER_A, PLAYER_B and PASSWORD");
  const contexts = await Promise.all(names.map(() => browser.newContext({ viewport: { width: 1100, height: 760 } })));
  const pages = await Promise.all(contexts.map((c) => c.newPage()));
  const errors = pages.map((p, i) => watchErrors(p, names[i]));
  for (const [i, page] of pages.entries()) {
    await page.goto(`${GAME_URL}/`);
    await page.fill("#username", names[i]);
    await page.fill("#password", password);
    await page.click("#do-login");
    await eventually(`${names[i]} playing`, async () => (await page.textContent("#status")).startsWith("Playing"));
  }
  const position = (page) => page.evaluate(() => ({ ...window.meridian.position }));
  const apart = async () => {
    const [a, b] = await Promise.all(pages.map(position));
    const k = Math.cos((a.lat * Math.PI) / 180);
    return Math.hypot((b.lon - a.lon) * 111194.93 * k, (b.lat - a.lat) * 111194.93);
  };
  const sees = (i) => pages[i].$(`#players li[data-name="${names[1 - i]}"]`);
  await pages[0].waitForTimeout(1000);
  const startDistance = await apart();
  assert.ok(startDistance > 180, `they start out of view: ${startDistance.toFixed(1)} m`);
  assert.equal(await sees(0), null, "not in view at the start");
  assert.equal(await sees(1), null, "not in view at the start");
  await pages[0].screenshot({ path: join(ARTIFACTS, "play-apart.png") });
  // Each holds the arrow key toward the other until both see each other.
  const [pa, pb] = await Promise.all(pages.map(position));
  const keys = pa.lon < pb.lon ? ["ArrowRight", "ArrowLeft"] : ["ArrowLeft", "ArrowRight"];
  for (const [i, page] of pages.entries()) await page.keyboard.down(keys[i]);
  await eventually("each sees the other", async () => (await sees(0)) && (await sees(1)), 30000);
  for (const [i, page] of pages.entries()) await page.keyboard.up(keys[i]);
  const endDistance = await apart();
  assert.ok(endDistance < 150, `they met: ${endDistance.toFixed(1)} m apart`);
  for (const [i, page] of pages.entries()) {
    const events = await page.evaluate(() => window.meridian.events);
    assert.ok(!events.some((e) => e.startsWith("Correction")), `${names[i]} was never corrected: ${events}`);
  }
  // Chat reaches the other player.
  await pages[0].fill("#chat-text", "hello from the browser");
  await pages[0].press("#chat-text", "Enter");
  await eventually("chat arrives", async () => pages[1].evaluate(() => window.meridian.chat.some((c) => c.text === "hello from the browser")));
  for (const [i, page] of pages.entries()) await page.screenshot({ path: join(ARTIFACTS, `play-${i + 1}.png`) });
  assert.deepEqual(errors.flat(), []);
  console.log(`play: ${names.join(" and ")} walked from ${startDistance.toFixed(1)} m to ${endDistance.toFixed(1)} m apart and see each other; screenshots saved`);

  // A newcomer registers on the page for team blue, walks to the flag and
  // captures it: the score, the flag's colour and the log show it.
  const page = await contexts[0].browser().newPage({ viewport: { width: 1100, height: 760 } });
  const pageErrors = watchErrors(page, "newcomer");
  const newcomer = `new${Date.now().toString(36)}`;
  await page.goto(`${GAME_URL}/`);
  await page.fill("#username", newcomer);
  await page.fill("#password", "a long enough password");
  // A display name with quotes and markup, shown as text wherever it appears.
  const shown = `Blue O'Neil <b>${newcomer}</b>`;
  await page.fill("#display-name", shown);
  await page.selectOption("#team", "blue");
  await page.click("#do-register");
  await eventually("the newcomer plays", async () => (await page.textContent("#status")).startsWith("Playing"));
  await eventually("teams listed", async () => (await page.$$("#scores li")).length === 2);
  assert.equal(await page.evaluate(() => window.meridian.team), "blue");
  const flag = await eventually("the flag is known", () => page.evaluate(() => [...window.meridian.flags.values()].find((f) => f.name === "Lighthouse")));
  assert.equal(flag.owner, null);
  // Walk to it with the arrow keys, a fifth of a second at a time.
  await eventually("at the flag", async () => {
    const p = await page.evaluate(() => ({ ...window.meridian.position }));
    const dx = (flag.position.lon - p.lon) * 111194.93 * Math.cos((p.lat * Math.PI) / 180);
    const dy = (flag.position.lat - p.lat) * 111194.93;
    if (Math.hypot(dx, dy) < 6) return true;
    const key = Math.abs(dy) > Math.abs(dx) ? (dy > 0 ? "ArrowUp" : "ArrowDown") : (dx > 0 ? "ArrowRight" : "ArrowLeft");
    await page.keyboard.down(key);
    await page.waitForTimeout(200);
    await page.keyboard.up(key);
    return false;
  }, 30000);
  await eventually("capture under way", () => page.evaluate(() => window.meridian.captures.size > 0 || [...window.meridian.flags.values()].some((f) => f.owner === "blue")));
  await eventually("the flag is blue's", () => page.evaluate(() => [...window.meridian.flags.values()].find((f) => f.name === "Lighthouse").owner === "blue"));
  assert.equal(await page.getAttribute('#scores li[data-team="blue"]', "data-score"), "1");
  const events = await page.evaluate(() => window.meridian.events);
  assert.ok(events.some((e) => e.includes(`${shown} captured Lighthouse for blue`)), `the capture is logged under the display name: ${events}`);
  assert.equal(await page.$("#log b"), null, "the name's markup is shown as text, not parsed");
  // The flag is drawn in blue's colour (#3e63dd) on the canvas.
  const bluePixels = await page.evaluate(() => {
    const c = document.getElementById("map");
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i] === 0x3e && data[i + 1] === 0x63 && data[i + 2] === 0xdd) n++;
    return n;
  });
  assert.ok(bluePixels > 20, `the flag drawn in blue (${bluePixels} pixels)`);
  await page.screenshot({ path: join(ARTIFACTS, "play-capture.png") });
  assert.deepEqual(pageErrors, []);
  console.log(`play: ${newcomer} of team blue captured the flag (${bluePixels} blue pixels)`);
  await page.close();
  await Promise.all(contexts.map((c) => c.close()));
}

try {
  await dashboard();
  await play();
} finally {
  await browser.close();
}
