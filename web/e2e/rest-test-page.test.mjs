// The NestJS app's test page, in a real headless Chromium, against
// RoomControl's REST routes: web/e2e/nestjs-test-client.html (a page in the
// style of the app's public/test-client.html) creates a room with
// POST /livekit/rooms, gets a token with POST /livekit/token, and joins with
// livekit-client, all unchanged from the NestJS app's requests.
//
// Run by scripts/console-e2e (which builds both binaries and installs
// Chromium and web/node_modules). It starts:
//   - livekit-standin on a free port (LiveKit's RoomService only: the join
//     reaches it with the token, but there is no signalling or media);
//   - a static server for the page and livekit-client's UMD bundle, on
//     another origin, as the NestJS app's clients were;
//   - roomcontrol with its defaults (no authentication, loopback only, as the
//     NestJS app had none) and that origin in server.cors.allowed_origins.
// Screenshots: target/e2e-screenshots/rest-*.png; logs: target/e2e-logs/.
//
// Every wait is on a DOM condition or an event, never a sleep.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(repo, process.env.CARGO_TARGET_DIR) : path.join(repo, "target");
const roomcontrolBin = process.env.E2E_ROOMCONTROL_BIN ?? path.join(targetDir, "debug", "roomcontrol");
const standinBin = process.env.E2E_STANDIN_BIN ?? path.join(targetDir, "debug", "livekit-standin");
const chromiumPath = process.env.E2E_CHROMIUM ?? "/usr/bin/chromium";
const livekitClient = path.join(repo, "web", "node_modules", "livekit-client", "dist", "livekit-client.umd.js");
const shots = path.join(targetDir, "e2e-screenshots");
const logs = path.join(targetDir, "e2e-logs");
const WAIT_MS = 20_000;

const children = [];
let work;
let standin;
let standinPort;
let roomcontrolBase;
let pageServer;
let pageOrigin;
let context;
let page;
const pageErrors = [];

function start(name, bin, args, env, cwd) {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run scripts/console-e2e, which builds it`);
  const child = spawn(bin, args, { env, cwd, stdio: ["ignore", "pipe", "pipe"] });
  const log = createWriteStream(path.join(logs, `${name}.log`));
  child.stdout.pipe(log, { end: false });
  child.stderr.pipe(log, { end: false });
  children.push(child);
  child.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  return child;
}

function firstLine(name, child, stream, match) {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: stream });
    const timer = setTimeout(() => reject(new Error(`${name} did not start within 30 s (see ${logs})`)), 30_000);
    lines.on("line", (line) => {
      const value = match(line);
      if (value !== undefined) {
        clearTimeout(timer);
        resolve(value);
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited (${code ?? signal}) before it was ready (see ${logs}/${name}.log)`));
    });
  });
}

function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith("ROOMCONTROL_") || k.startsWith("LIVEKIT_") || k === "PORT" || k === "RUST_LOG") continue;
    env[k] = v;
  }
  return env;
}

/** The claims of an HS256 JWT, after checking its signature with `secret`. */
function verifyJwt(token, secret) {
  const [header, payload, signature] = token.split(".");
  const expected = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  assert.equal(signature, expected, "the token is signed with LiveKit's API secret");
  assert.equal(JSON.parse(Buffer.from(header, "base64url")).alg, "HS256");
  return JSON.parse(Buffer.from(payload, "base64url"));
}

before(async () => {
  for (const dir of [shots, logs]) mkdirSync(dir, { recursive: true });
  assert.ok(existsSync(chromiumPath), `${chromiumPath} is missing: scripts/console-e2e installs Debian's chromium`);
  assert.ok(existsSync(livekitClient), `${livekitClient} is missing: run npm ci in web/ (scripts/console does)`);
  work = mkdtempSync(path.join(tmpdir(), "roomcontrol-rest-e2e-"));

  standin = start("rest-livekit-standin", standinBin, ["--listen", "127.0.0.1:0"], cleanEnv(), work);
  const standinUrl = await firstLine("livekit-standin", standin, standin.stdout, (line) =>
    line.match(/^listening on (http:\/\/\S+)$/)?.[1],
  );
  standinPort = new URL(standinUrl).port;

  // The page and livekit-client, from an origin of their own.
  const files = {
    "/test-client.html": ["text/html; charset=utf-8", readFileSync(path.join(here, "nestjs-test-client.html"))],
    "/livekit-client.umd.js": ["text/javascript; charset=utf-8", readFileSync(livekitClient)],
  };
  pageServer = createServer((request, response) => {
    const file = files[new URL(request.url, "http://x").pathname];
    if (!file) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": file[0] }).end(file[1]);
  });
  await new Promise((resolve) => pageServer.listen(0, "127.0.0.1", resolve));
  pageOrigin = `http://127.0.0.1:${pageServer.address().port}`;

  const rc = start("rest-roomcontrol", roomcontrolBin, [], {
    ...cleanEnv(),
    PORT: "0",
    ROOMCONTROL_ADMIN__PORT: "0",
    ROOMCONTROL_LOG__FORMAT: "json",
    ROOMCONTROL_SERVER__CORS__ALLOWED_ORIGINS: JSON.stringify([pageOrigin]),
    LIVEKIT_URL: standinUrl,
    LIVEKIT_API_KEY: "devkey",
    LIVEKIT_API_SECRET: "secret",
  }, work);
  const address = await firstLine("roomcontrol", rc, rc.stderr, (line) => {
    try {
      const entry = JSON.parse(line);
      return entry.address ?? entry.fields?.address;
    } catch {
      return undefined;
    }
  });
  roomcontrolBase = `http://${address}`;

  context = await chromium.launchPersistentContext(path.join(work, "chromium-profile"), {
    executablePath: chromiumPath,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
    ],
    viewport: { width: 1280, height: 900 },
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(WAIT_MS);
  page.on("pageerror", (error) => pageErrors.push(error));
}, { timeout: 120_000 });

after(async () => {
  await context?.close().catch(() => {});
  pageServer?.close();
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
  }
  await Promise.all(children.map((c) => c.exited));
  if (work) rmSync(work, { recursive: true, force: true });
});

test("the NestJS app's test page creates a room, gets a token and joins through RoomControl's REST routes", { timeout: 180_000 }, async () => {
  const apiPort = new URL(roomcontrolBase).port;
  await page.goto(`${pageOrigin}/test-client.html?apiPort=${apiPort}&livekitPort=${standinPort}`);
  await page.waitForFunction(() => typeof window.LivekitClient !== "undefined");

  // The join: livekit-client opens LiveKit's signalling WebSocket with the token.
  const joined = new Promise((resolve) => {
    page.on("websocket", (socket) => {
      const url = new URL(socket.url());
      if (url.port === standinPort && url.pathname.startsWith("/rtc")) resolve(url);
    });
  });

  await page.locator("#roomName").fill("e2e-rest-room");
  await page.locator("#participantName").fill("alice");
  await page.getByRole("button", { name: "Get Token & Connect" }).click();

  // POST /livekit/token answered { token }, which the page put in its field.
  await page.waitForFunction(() => document.getElementById("token").value.length > 0);
  const token = await page.locator("#token").inputValue();
  const claims = verifyJwt(token, "secret");
  assert.equal(claims.sub, "alice");
  assert.equal(claims.name, "alice");
  assert.equal(claims.iss, "devkey");
  assert.equal(claims.video.room, "e2e-rest-room");
  assert.equal(claims.video.roomJoin, true);
  await page.screenshot({ path: path.join(shots, "rest-1-token.png"), fullPage: true });

  // POST /livekit/rooms created the room (asked the way a backend would).
  const rooms = await (await fetch(`${roomcontrolBase}/livekit/rooms`)).json();
  assert.ok(rooms.some((room) => room.name === "e2e-rest-room"), JSON.stringify(rooms));

  // livekit-client took the token to LiveKit.
  const url = await joined;
  assert.equal(url.searchParams.get("access_token"), token);

  // The stand-in has no signalling (it answers LiveKit's RoomService only),
  // so the join cannot complete; stopped, it refuses the retries at once and
  // the page says the connection failed.
  standin.kill("SIGTERM");
  await standin.exited;
  await page.locator("#status", { hasText: "Error:" }).waitFor({ timeout: 60_000 });
  await page.screenshot({ path: path.join(shots, "rest-2-join-no-media-server.png"), fullPage: true });
  assert.deepEqual(pageErrors.map(String), []);
});
