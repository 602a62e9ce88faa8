// The History page (#/history): the room sessions RoomControl's history
// holds (ListRoomSessions: filters by room, time range and active, cursor
// paging), their CSV export (every page of the filter, the same columns as
// `roomcontrol history export --format csv`), and the usage chart
// (GetUsage per day in the browser's time zone: participant-minutes as bars,
// peak concurrency as a line, drawn by uPlot). A session's page
// (#/history/<session id>) shows its figures, a bar per participant session
// over the session's time axis with its tracks marked and how it ended
// (plain DOM: uPlot has no Gantt-like bars), and its timeline.

import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import uPlot from "uplot";
import { client, describe, failureText, type Failure } from "./api";
import { csvHeader, csvLines } from "./csv";
import { $, dateTime, h, input, when } from "./dom";
import {
  EndReason,
  type GetRoomSessionResponse,
  ListRoomSessionsRequestSchema,
  type ParticipantSession,
  type RoomSession,
  type UsageFigures,
  UsageBucket,
} from "./gen/roomcontrol/v1/room_control_pb";
import { eventItem } from "./timeline";

const DEFAULT_PAGE_SIZE = 25;
/** How many GetRoomSession calls the export makes at once. */
const EXPORT_PARALLEL = 4;

/** What the test (and a curious developer) can read of the drawn charts. */
declare global {
  interface Window {
    roomcontrolCharts?: {
      usage?: { plot: uPlot; labels: string[]; timeZone: string; request: { from: string; to: string; timeZone: string } };
    };
  }
}

let running = false;
let sessionId: string | null = null;

/** The filter the table shows (and the download exports). */
interface Filter {
  rooms: string[];
  from?: Date;
  to?: Date;
  activeOnly: boolean;
  pageSize: number;
}
let filter: Filter = { rooms: [], activeOnly: false, pageSize: DEFAULT_PAGE_SIZE };
/** The page tokens of the pages seen: [0] is "" (the first page). */
let tokens: string[] = [""];
let pageIndex = 0;
let listSeq = 0;
let sessionSeq = 0;
let usageSeq = 0;
let usagePlot: uPlot | null = null;
let resizeObserver: ResizeObserver | null = null;

export function init(): void {
  $("#history-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    applyFilter();
  });
  $("#history-newer").addEventListener("click", () => {
    if (pageIndex > 0) void loadPage(pageIndex - 1);
  });
  $("#history-older").addEventListener("click", () => {
    if (tokens[pageIndex + 1]) void loadPage(pageIndex + 1);
  });
  $("#history-download").addEventListener("click", (e) => void download(e.currentTarget as HTMLButtonElement));
  $("#usage-days").addEventListener("change", () => void loadUsage());
  $("#history-back").addEventListener("click", () => {
    location.hash = "#/history";
  });
  resizeObserver = new ResizeObserver(() => {
    if (!usagePlot) return;
    const width = chartWidth();
    if (width !== usagePlot.width) usagePlot.setSize({ width, height: usagePlot.height });
  });
  resizeObserver.observe($("#usage-chart"));
}

export function start(): void {
  running = true;
  void reload();
}

export function stop(): void {
  running = false;
}

export function credentialsChanged(): void {
  if (running) void reload();
}

/** The session of the page's URL (#/history/<id>), or null for the list. */
export function open(id: string | null): void {
  if (id === sessionId) return;
  sessionId = id;
  if (running) void reload();
}

function reload(): Promise<unknown> {
  clearError();
  $("#history-list").hidden = sessionId !== null;
  $("#history-session").hidden = sessionId === null;
  document.title = sessionId ? `RoomControl · Session ${sessionId}` : "RoomControl · History";
  if (sessionId) return loadSession(sessionId);
  return Promise.all([loadPage(pageIndex), loadUsage()]);
}

// --- errors -------------------------------------------------------------

/** describe(), with what this page needs when the scope is missing. */
function failure(action: string, error: unknown): Failure {
  const f = describe(action, error);
  if (ConnectError.from(error).code === Code.PermissionDenied) {
    f.hint = "The History page needs a credential with the scope history:read (and shows only the rooms it may touch).";
  }
  return f;
}

function showError(f: Failure): void {
  const banner = $("#history-error");
  banner.replaceChildren(
    h("strong", {}, `${f.action}. `),
    h("span", { class: "error-text" }, failureText(f)),
    f.hint ? h("span", { class: "hint" }, ` ${f.hint}`) : "",
    h("button", { type: "button", class: "link dismiss", "aria-label": "dismiss", onclick: clearError }, "×"),
  );
  banner.hidden = false;
}

function clearError(): void {
  $("#history-error").hidden = true;
  $("#history-error").replaceChildren();
}

// --- formatting ---------------------------------------------------------

function date(ts: Timestamp | undefined): Date | undefined {
  return ts ? timestampDate(ts) : undefined;
}

/** "42 s", "3 min 05 s", "1 h 02 min". */
export function span(totalSeconds: number): string {
  const s = Math.max(0, Math.round(totalSeconds));
  if (s < 60) return `${s} s`;
  const pad = (n: number) => String(n).padStart(2, "0");
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
}

function durationSeconds(d: { seconds: bigint; nanos: number } | undefined): number {
  return d ? Number(d.seconds) + d.nanos / 1e9 : 0;
}

function minutes(m: number): string {
  return m.toLocaleString(undefined, { maximumFractionDigits: 1, minimumFractionDigits: m > 0 && m < 10 ? 1 : 0 });
}

function statusBadge(active: boolean): HTMLElement {
  return h("span", { class: active ? "badge live-badge" : "badge", "data-field": "status" }, active ? "active" : "ended");
}

/** What rests on an inferred event, in words, or "". */
function inferredWhat(s: RoomSession): string {
  const parts = [];
  if (s.startInferred) parts.push("its start (room_started never came)");
  if (s.endInferred) parts.push("its end (room_finished never came)");
  if (s.inferred && parts.length === 0) parts.push("a start, an end, a join or a leave that LiveKit never sent");
  return parts.length ? `Some figures rest on what RoomControl inferred: ${parts.join(", ")}` : "";
}

function inferredBadge(title: string): HTMLElement {
  return h("span", { class: "badge inferred-badge", "data-field": "inferred", title }, "inferred");
}

// --- the sessions table -------------------------------------------------

/** "standup, retro" -> ["standup", "retro"]. */
function roomNames(text: string): string[] {
  return text
    .split(",")
    .map((name) => name.trim())
    .filter(Boolean);
}

/** A datetime-local input's value as a Date in the browser's zone, or undefined. */
function localTime(selector: string): Date | undefined {
  const value = input(selector).value;
  if (!value) return undefined;
  const at = new Date(value);
  return Number.isNaN(at.getTime()) ? undefined : at;
}

function applyFilter(): void {
  const size = Number(input("#history-page-size").value);
  filter = {
    rooms: roomNames(input("#history-rooms").value),
    from: localTime("#history-from"),
    to: localTime("#history-to"),
    activeOnly: input("#history-active").checked,
    pageSize: Number.isInteger(size) && size >= 1 && size <= 1000 ? size : DEFAULT_PAGE_SIZE,
  };
  tokens = [""];
  void loadPage(0);
  // and the usage as of now, so the page shows one moment
  void loadUsage();
}

function request(f: Filter, pageToken: string): MessageInitShape<typeof ListRoomSessionsRequestSchema> {
  return {
    rooms: f.rooms,
    from: f.from ? timestampFromDate(f.from) : undefined,
    to: f.to ? timestampFromDate(f.to) : undefined,
    activeOnly: f.activeOnly,
    pageSize: f.pageSize,
    pageToken,
  };
}

async function loadPage(index: number): Promise<void> {
  const seq = ++listSeq;
  $("#history-status").textContent = "loading…";
  try {
    const answer = await client.listRoomSessions(request(filter, tokens[index]));
    if (seq !== listSeq) return;
    pageIndex = index;
    tokens = tokens.slice(0, index + 1);
    if (answer.nextPageToken) tokens.push(answer.nextPageToken);
    renderSessions(answer.sessions, answer.historyCursor);
    $("#sessions-table").classList.remove("stale");
  } catch (error) {
    if (seq !== listSeq) return;
    showError(failure("Could not list the room sessions", error));
    $("#sessions-table").classList.add("stale");
    $("#history-status").textContent = "";
  }
}

function renderSessions(sessions: RoomSession[], cursor: bigint): void {
  const first = pageIndex * filter.pageSize;
  $("#history-status").textContent = sessions.length
    ? `sessions ${first + 1}–${first + sessions.length}, newest first · history up to event ${cursor}`
    : `no sessions · history up to event ${cursor}`;
  $("#history-empty").hidden = sessions.length > 0;
  ($("#history-newer") as HTMLButtonElement).disabled = pageIndex === 0;
  ($("#history-older") as HTMLButtonElement).disabled = !tokens[pageIndex + 1];
  $("#history-page").textContent = `page ${pageIndex + 1}`;
  $("#sessions-body").replaceChildren(
    ...sessions.map((s) => {
      const start = date(s.startedAt);
      const end = date(s.endedAt);
      const open = () => {
        location.hash = `#/history/${encodeURIComponent(s.sessionId)}`;
      };
      return h(
        "tr",
        { "data-session-id": s.sessionId, "data-active": String(s.active) },
        h(
          "td",
          { class: "name", "data-field": "room" },
          h("button", { type: "button", class: "link", title: `open session ${s.sessionId}`, onclick: open }, s.room),
        ),
        h("td", {}, statusBadge(s.active)),
        h("td", { class: "created", "data-field": "start", title: dateTime(start) }, when(start)),
        h("td", { class: "created", "data-field": "end", title: dateTime(end) }, s.active ? h("span", { class: "muted" }, "—") : when(end)),
        h("td", { class: "num", "data-field": "duration" }, span(durationSeconds(s.duration))),
        h("td", { class: "num", "data-field": "peak" }, s.peakParticipants),
        h("td", { class: "num", "data-field": "unique" }, s.uniqueIdentities),
        h("td", { class: "num", "data-field": "minutes", title: `${s.participantMinutes} min` }, minutes(s.participantMinutes)),
        h("td", { "data-field": "markers" }, s.inferred ? inferredBadge(inferredWhat(s)) : null),
      );
    }),
  );
}

// --- the download -------------------------------------------------------

/** Every session of the filter (all its pages), with its participant sessions, as CSV. */
async function exportCsv(f: Filter, progress: (done: number) => void): Promise<{ csv: string; sessions: number }> {
  const sessions: RoomSession[] = [];
  let token = "";
  do {
    // The table's pages, every one of them (a session's details, one call
    // each, cost more than the list's pages).
    const answer = await client.listRoomSessions(request(f, token));
    sessions.push(...answer.sessions);
    token = answer.nextPageToken;
  } while (token);
  const details: GetRoomSessionResponse[] = new Array(sessions.length);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < sessions.length) {
      const i = next++;
      details[i] = await client.getRoomSession({ sessionId: sessions[i].sessionId });
      progress(++done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(EXPORT_PARALLEL, sessions.length) }, worker));
  let csv = csvHeader();
  sessions.forEach((s, i) => {
    csv += csvLines(details[i].session ?? s, details[i].participants);
  });
  return { csv, sessions: sessions.length };
}

function stamp(at: Date | undefined, fallback: string): string {
  return at ? at.toISOString().slice(0, 16).replaceAll(":", "") + "Z" : fallback;
}

async function download(button: HTMLButtonElement): Promise<void> {
  button.disabled = true;
  const state = $("#history-download-state");
  state.textContent = "exporting…";
  clearError();
  try {
    const { csv, sessions } = await exportCsv(filter, (done) => {
      state.textContent = `exporting… ${done} sessions`;
    });
    const name = `roomcontrol-sessions-${stamp(filter.from, "start")}-${stamp(filter.to, "now")}.csv`;
    const url = URL.createObjectURL(new Blob([csv], { type: "text/csv;charset=utf-8" }));
    const link = h("a", { href: url, download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    state.textContent = `${name}: ${sessions} ${sessions === 1 ? "session" : "sessions"}`;
  } catch (error) {
    showError(failure("Could not export the room sessions", error));
    state.textContent = "";
  } finally {
    button.disabled = false;
  }
}

// --- the usage chart ----------------------------------------------------

/** Midnight `daysAgo` days before today, on the browser's clock. */
function midnight(daysAgo: number): Date {
  const now = new Date();
  return new Date(now.getFullYear(), now.getMonth(), now.getDate() - daysAgo);
}

function chartWidth(): number {
  return Math.max(320, $("#usage-chart").clientWidth);
}

async function loadUsage(): Promise<void> {
  const seq = ++usageSeq;
  const days = Number(($("#usage-days") as HTMLSelectElement).value) || 14;
  const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const from = midnight(days - 1);
  const to = midnight(-1);
  $("#usage-state").textContent = "loading…";
  // When the figures were asked for: open sessions count up to then.
  $("#usage-chart").dataset.requested = String(Date.now());
  try {
    const answer = await client.getUsage({
      from: timestampFromDate(from),
      to: timestampFromDate(to),
      bucket: UsageBucket.DAY,
      timeZone,
    });
    if (seq !== usageSeq) return;
    drawUsage(answer.buckets, answer.timeZone, { from: from.toISOString(), to: to.toISOString(), timeZone });
  } catch (error) {
    if (seq !== usageSeq) return;
    showError(failure("Could not get the usage", error));
    $("#usage-state").textContent = "";
    usagePlot?.destroy();
    usagePlot = null;
    $("#usage-chart").replaceChildren(h("p", { class: "muted" }, "No chart: GetUsage failed (see above)."));
  }
}

function drawUsage(
  buckets: UsageFigures[],
  timeZone: string,
  request: { from: string; to: string; timeZone: string },
): void {
  const labels = buckets.map((b) => b.label);
  const total = buckets.reduce((sum, b) => sum + b.participantMinutes, 0);
  const peak = buckets.reduce((max, b) => Math.max(max, b.peakConcurrency), 0);
  const sessions = buckets.reduce((sum, b) => sum + b.sessions, 0);
  $("#usage-state").textContent =
    `${minutes(total)} participant-minutes, ${sessions} ${sessions === 1 ? "session" : "sessions"}, ` +
    `peak ${peak} at once · days in ${timeZone}`;
  const chart = $("#usage-chart");
  chart.dataset.labels = JSON.stringify(labels);
  const data: uPlot.AlignedData = [
    buckets.map((_, i) => i),
    buckets.map((b) => b.participantMinutes),
    buckets.map((b) => b.peakConcurrency),
  ];
  usagePlot?.destroy();
  const style = getComputedStyle(document.documentElement);
  const accent = style.getPropertyValue("--accent").trim() || "#2457a6";
  const muted = style.getPropertyValue("--muted").trim() || "#646970";
  const axis = { stroke: muted, grid: { stroke: "#e7e8e9", width: 1 }, ticks: { stroke: "#d0d7de", width: 1 } };
  // "2026-11-28" -> "28 Nov", in the zone's calendar (the label is its date).
  const dayLabel = (label: string) => {
    const [y, m, d] = label.split("-").map(Number);
    if (!y || !m || !d) return label;
    return new Date(Date.UTC(y, m - 1, d)).toLocaleDateString(undefined, { day: "numeric", month: "short", timeZone: "UTC" });
  };
  const opts: uPlot.Options = {
    width: chartWidth(),
    height: 260,
    cursor: { drag: { x: false, y: false }, points: { size: 7 } },
    scales: {
      x: { time: false, range: () => [-0.5, Math.max(0, buckets.length - 1) + 0.5] },
      minutes: { range: (_u, _min, max) => [0, Math.max(1, max) * 1.1] },
      people: { range: (_u, _min, max) => [0, Math.max(2, Math.ceil(max * 1.2))] },
    },
    axes: [
      {
        ...axis,
        grid: { show: false },
        splits: () => labels.map((_, i) => i).filter((i) => labels.length <= 16 || i % Math.ceil(labels.length / 16) === 0),
        values: (_u, splits) => splits.map((i) => dayLabel(labels[i] ?? "")),
      },
      { ...axis, scale: "minutes", label: "participant-minutes", labelSize: 20, size: 56 },
      {
        ...axis,
        scale: "people",
        side: 1,
        label: "peak concurrency",
        labelSize: 20,
        size: 48,
        grid: { show: false },
        incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
        values: (_u, splits) => splits.map((v) => (Number.isInteger(v) ? String(v) : "")),
      },
    ],
    series: [
      { label: "day", value: (_u, i) => (i === null || labels[i] === undefined ? "—" : labels[i]) },
      {
        label: "participant-minutes",
        scale: "minutes",
        stroke: accent,
        fill: "rgba(36, 87, 166, 0.55)",
        width: 1,
        paths: uPlot.paths.bars!({ size: [0.6, 64], align: 0 }),
        points: { show: false },
        value: (_u, v) => (v === null ? "—" : minutes(v)),
      },
      {
        label: "peak concurrency",
        scale: "people",
        stroke: "#c26a00",
        width: 2,
        points: { show: true, size: 6, fill: "#c26a00" },
        value: (_u, v) => (v === null ? "—" : String(v)),
      },
    ],
  };
  // The legend shows the last day while the pointer is elsewhere.
  const lastDay = (u: uPlot) => {
    if (buckets.length && u.cursor.idx == null) u.setLegend({ idx: buckets.length - 1 }, false);
  };
  opts.hooks = { ready: [lastDay], setCursor: [lastDay] };
  chart.replaceChildren();
  usagePlot = new uPlot(opts, data, chart);
  window.roomcontrolCharts = { ...window.roomcontrolCharts, usage: { plot: usagePlot, labels, timeZone, request } };
  chart.dataset.drawn = String(Date.now());
}

// --- a session's page ---------------------------------------------------

async function loadSession(id: string): Promise<void> {
  const seq = ++sessionSeq;
  $("#session-title").textContent = id;
  $("#session-state").textContent = "loading…";
  $("#session-body").hidden = true;
  try {
    const answer = await client.getRoomSession({ sessionId: id });
    if (seq !== sessionSeq || id !== sessionId) return;
    renderSession(answer);
  } catch (error) {
    if (seq !== sessionSeq) return;
    showError(failure(`Could not get session ${id}`, error));
    $("#session-state").textContent = "";
  }
}

function renderSession(answer: GetRoomSessionResponse): void {
  const s = answer.session;
  if (!s) return;
  const start = date(s.startedAt);
  const end = date(s.endedAt);
  $("#session-title").textContent = s.room;
  $("#session-state").replaceChildren(statusBadge(s.active), " ", h("span", { class: "muted" }, s.sessionId));
  document.title = `RoomControl · Session of ${s.room}`;
  const actions = Object.entries(s.actions)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([type, n]) => `${type} ×${n}`)
    .join(", ");
  const facts: [string, string | HTMLElement][] = [
    ["Room", s.room],
    ["Session id", s.sessionId],
    ["Started", `${dateTime(start)}${s.startInferred ? " (inferred)" : ""}`],
    ["Ended", s.active ? "still active" : `${dateTime(end)}${s.endInferred ? " (inferred)" : ""}`],
    ["Duration", span(durationSeconds(s.duration)) + (s.active ? " so far" : "")],
    ["Participant sessions", String(s.participantSessions)],
    ["Peak participants", String(s.peakParticipants)],
    ["Unique identities", String(s.uniqueIdentities)],
    ["Participant-minutes", minutes(s.participantMinutes)],
    ["RoomControl's actions", actions || "none"],
  ];
  if (s.inferred) facts.push(["Inferred", inferredWhat(s)]);
  $("#session-facts").replaceChildren(
    ...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-fact": k }, v)]),
  );
  renderBars(s, answer.participants);
  const names = new Map<string, string>();
  for (const p of answer.participants) for (const t of p.tracks) if (t.name) names.set(t.sid, t.name);
  $("#session-events").replaceChildren(...answer.timeline.map((event) => eventItem(event, (sid) => names.get(sid))));
  $("#session-events-empty").hidden = answer.timeline.length > 0;
  $("#session-events-note").textContent = answer.timelineTruncated
    ? "The first 1000 events: ListEvents pages through the rest."
    : answer.timeline.length
      ? `${answer.timeline.length} events, oldest first.`
      : "";
  $("#session-body").hidden = false;
}

const SOURCE_SHORT: Record<string, string> = {
  camera: "cam",
  microphone: "mic",
  screen_share: "screen",
  screen_share_audio: "screen audio",
};

/**
 * A participant's tracks as chips at their publish time; chips published
 * close together (a camera and a microphone at the same second) sit side
 * by side rather than on top of each other.
 */
function marks(p: ParticipantSession, pct: (t: number) => string): HTMLElement[] {
  const placed: { at: number; shift: number }[] = [];
  const out: HTMLElement[] = [];
  const tracks = p.tracks
    .map((t) => ({ t, at: date(t.publishedAt)?.getTime() }))
    .filter((x): x is { t: (typeof p.tracks)[number]; at: number } => x.at !== undefined)
    .sort((x, y) => x.at - y.at);
  for (const { t, at } of tracks) {
    const near = placed.filter((q) => Math.abs(parseFloat(pct(q.at)) - parseFloat(pct(at))) < 6);
    const shift = near.length ? Math.max(...near.map((q) => q.shift)) + 1 : 0;
    placed.push({ at, shift });
    const off = t.unpublishedAt ? `, unpublished ${dateTime(timestampDate(t.unpublishedAt))}` : ", never unpublished";
    out.push(
      h(
        "span",
        {
          class: `gantt-mark ${t.type}`,
          style: `left:${pct(at)};margin-left:${shift * 3.6}rem`,
          "data-track-sid": t.sid,
          "data-source": t.source,
          "data-published-at": new Date(at).toISOString(),
          title: `${t.name || t.sid} (${t.source} ${t.type}): published ${dateTime(new Date(at))}${off}`,
        },
        SOURCE_SHORT[t.source] ?? t.type,
      ),
    );
  }
  return out;
}

/** How a participant session ended, in words. */
function endText(p: ParticipantSession): string {
  switch (p.endReason) {
    case EndReason.LEFT:
      return "left";
    case EndReason.REMOVED:
      return p.removedBy ? `removed by ${p.removedBy}` : "removed";
    case EndReason.CONNECTION_ABORTED:
      return "connection aborted";
    case EndReason.ROOM_DELETED:
      return "room deleted";
    case EndReason.INFERRED:
      return "left (inferred)";
    default:
      return p.active ? "still connected" : "—";
  }
}

/** Ticks for an axis from `a` to `b` (ms): about five, at round steps. */
function ticks(a: number, b: number): number[] {
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);
  const step = steps.find((s) => (b - a) / s <= 6) ?? Math.ceil((b - a) / 6 / 86_400_000) * 86_400_000;
  const out = [];
  for (let t = Math.ceil(a / step) * step; t <= b; t += step) out.push(t);
  return out;
}

function renderBars(s: RoomSession, participants: ParticipantSession[]): void {
  const now = Date.now();
  const startMs = date(s.startedAt)?.getTime() ?? now;
  const joins = participants.map((p) => date(p.joinedAt)?.getTime()).filter((t): t is number => t !== undefined);
  const a = Math.min(startMs, ...joins);
  const lefts = participants.map((p) => (p.leftAt ? timestampDate(p.leftAt).getTime() : now));
  const b = Math.max(s.active ? now : (date(s.endedAt)?.getTime() ?? now), ...lefts, a + 1000);
  const pct = (t: number) => `${(((t - a) / (b - a)) * 100).toFixed(3)}%`;
  const container = $("#session-bars");
  container.dataset.from = new Date(a).toISOString();
  container.dataset.to = new Date(b).toISOString();
  $("#session-bars-empty").hidden = participants.length > 0;
  const clockOf = (t: number) => {
    const d = new Date(t);
    const pad = (n: number) => String(n).padStart(2, "0");
    return `${pad(d.getHours())}:${pad(d.getMinutes())}${b - a < 600_000 ? `:${pad(d.getSeconds())}` : ""}`;
  };
  const tickTimes = ticks(a, b);
  const axis = h(
    "div",
    { class: "gantt-row gantt-axis", "aria-hidden": "true" },
    h("div", { class: "gantt-label" }),
    h("div", { class: "gantt-track" }, ...tickTimes.map((t) => h("span", { class: "gantt-tick", style: `left:${pct(t)}` }, clockOf(t)))),
    h("div", { class: "gantt-end" }),
  );
  /** Faint lines under a bar at the axis's ticks. */
  const grid = () => tickTimes.map((t) => h("span", { class: "gantt-grid", style: `left:${pct(t)}` }));
  const rows = participants.map((p) => {
    const joined = date(p.joinedAt)?.getTime() ?? a;
    const left = p.leftAt ? timestampDate(p.leftAt).getTime() : now;
    const reason = endText(p);
    const title =
      `${p.identity}${p.name && p.name !== p.identity ? ` (${p.name})` : ""} · ${p.participantSid}` +
      `\njoined ${dateTime(new Date(joined))}, ${p.active ? "still connected" : `left ${dateTime(new Date(left))}`}` +
      ` · ${span(durationSeconds(p.duration))} · ${reason}${p.inferred ? " · inferred" : ""}`;
    return h(
      "div",
      {
        class: "gantt-row",
        "data-participant-sid": p.participantSid,
        "data-identity": p.identity,
        "data-end-reason": EndReason[p.endReason] ?? String(p.endReason),
        "data-active": String(p.active),
      },
      h(
        "div",
        { class: "gantt-label", title: `${p.participantSid}${p.kind ? ` · ${p.kind}` : ""}` },
        h("strong", { "data-field": "identity" }, p.identity),
        p.name && p.name !== p.identity ? h("span", { class: "muted" }, ` ${p.name}`) : null,
      ),
      h(
        "div",
        { class: "gantt-track" },
        ...grid(),
        h(
          "div",
          {
            class: `gantt-bar${p.active ? " open" : ""}${p.inferred ? " inferred" : ""}`,
            style: `left:${pct(joined)};width:calc(${pct(left)} - ${pct(joined)})`,
            title,
          },
        ),
        ...marks(p, pct),
      ),
      h(
        "div",
        { class: "gantt-end", "data-field": "end-reason" },
        h("span", {}, reason),
        p.inferred ? inferredBadge("Its join or its end was inferred: LiveKit's webhook never came") : null,
        h("span", { class: "muted", "data-field": "duration" }, ` · ${span(durationSeconds(p.duration))}`),
      ),
    );
  });
  container.replaceChildren(axis, ...rows);
}
