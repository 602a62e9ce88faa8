// A room's recordings and streams, on its page: starting a room recording
// or an RTMP stream (the form), a participant's or a track's recording (their
// Record buttons, rooms.ts), and ListRecordings for the room with Stop for
// the running ones.
//
// The list follows the room's timeline: LiveKit's egress webhooks
// (egress_started, egress_updated, egress_ended) and RoomControl's own
// actions reload it within a moment, so a recording is seen going STARTING,
// ACTIVE, ENDING, COMPLETE without a poll. A slow poll stays as a fallback
// while one is running (the timeline may be off: it needs events:read).
//
// A stream's RTMP URL holds its stream key: the field is emptied once the
// stream started, and the page only ever shows the URL as RoomControl
// returns it, with the key redacted.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { client, describe, failureText } from "./api";
import { $, dateTime, h, input, when } from "./dom";
import { type Recording, Recording_Kind, Recording_Status } from "./gen/roomcontrol/v1/room_control_pb";

/** The timeline's events that change a room's recordings. */
export const RECORDING_EVENT_TYPES = [
  "egress_started",
  "egress_updated",
  "egress_ended",
  "recording_started",
  "recording_stopped",
  "stream_started",
];

/** Events arriving together cause one reload. */
const EVENT_DEBOUNCE_MS = 250;
/** The fallback poll while a recording runs (its webhooks may not reach the page). */
const RUNNING_POLL_MS = 10_000;

/** Runs an action with its button disabled; the outcome (or failure) goes to the page's banner. */
export type Act = (button: HTMLButtonElement | null, action: string, run: () => Promise<string>) => Promise<boolean>;

let act: Act = async () => false;
let trackName: (sid: string) => string | undefined = () => undefined;
let room: string | null = null;
let running = false;
let listKey = "";
/** Answers of an older ListRecordings (another room, an earlier call) are dropped. */
let seq = 0;
let eventTimer: ReturnType<typeof setTimeout> | undefined;
let pollTimer: ReturnType<typeof setTimeout> | undefined;

/**
 * `run` is the page's way to run an action (its banner and notice);
 * `names` gives a track's name for its sid, where the page knows it.
 */
export function init(run: Act, names: (sid: string) => string | undefined): void {
  act = run;
  trackName = names;
  $("#recording-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const submitter = (event as SubmitEvent).submitter as HTMLButtonElement | null;
    // Enter in the URL field submits with the form's first button: the stream is meant.
    const stream = submitter?.id === "start-stream" || document.activeElement === input("#stream-url");
    const button = stream ? ($("#start-stream") as HTMLButtonElement) : submitter;
    if (room) void (stream ? startStream(room, button) : startRoomRecording(room, button));
  });
}

/** Shows `name`'s recordings (a new room clears the list), or none. */
export function show(name: string | null): void {
  if (name !== room) {
    room = name;
    clear();
  }
  running = true;
  if (name) void load(name);
}

/** The page is hidden: no more reloads. */
export function pause(): void {
  running = false;
  clearTimeout(eventTimer);
  clearTimeout(pollTimer);
  eventTimer = undefined;
}

/** A timeline event of the shown room: reload soon if it is about recordings. */
export function eventArrived(type: string): void {
  if (!running || !room || !RECORDING_EVENT_TYPES.includes(type) || eventTimer !== undefined) return;
  const name = room;
  eventTimer = setTimeout(() => {
    eventTimer = undefined;
    if (running && room === name) void load(name);
  }, EVENT_DEBOUNCE_MS);
}

/** Reloads now (after an action, a new credential). */
export function reload(): void {
  if (running && room) void load(room);
}

function clear(): void {
  seq += 1;
  listKey = "";
  clearTimeout(eventTimer);
  clearTimeout(pollTimer);
  eventTimer = undefined;
  $("#recordings-count").textContent = "";
  $("#recordings-state").textContent = "";
  $("#recordings-state").dataset.state = "";
  $("#recordings-state").title = "";
  $("#recordings-list").hidden = true;
  $("#recordings-list").replaceChildren();
}

// --- loading ------------------------------------------------------------

/**
 * ListRecordings for `name`. A refusal (no recordings:read, a LiveKit
 * without egress) is said in the section, not in the banner: the rest of
 * the page works without recordings.
 */
async function load(name: string): Promise<void> {
  const mine = ++seq;
  clearTimeout(pollTimer);
  try {
    const answer = await client.listRecordings({ room: name });
    if (name !== room || mine !== seq) return;
    render(name, answer.recordings);
    if (running && answer.recordings.some((r) => !hasEnded(r))) {
      pollTimer = setTimeout(() => {
        if (running && room === name) void load(name);
      }, RUNNING_POLL_MS);
    }
  } catch (error) {
    if (name !== room || mine !== seq) return;
    const failure = describe("Could not list the recordings", error);
    listKey = "";
    $("#recordings-count").textContent = "";
    $("#recordings-list").hidden = true;
    $("#recordings-list").replaceChildren();
    const state = $("#recordings-state");
    state.replaceChildren(
      `Cannot list the recordings: ${failureText(failure)}`,
      failure.hint ? h("span", { class: "hint" }, ` ${failure.hint}`) : "",
    );
    state.title = "";
    state.dataset.state = "failed";
  }
}

// --- rendering ----------------------------------------------------------

function hasEnded(r: Recording): boolean {
  return r.status >= Recording_Status.COMPLETE;
}

/** Stop is offered while LiveKit has not begun to end it. */
function stoppable(r: Recording): boolean {
  return r.status === Recording_Status.STARTING || r.status === Recording_Status.ACTIVE;
}

function label(name: string | undefined): string {
  return (name ?? "unknown").toLowerCase().replaceAll("_", " ");
}

/** "room", "participant alice", "track camera", "stream". */
function kindText(r: Recording): string {
  switch (r.kind) {
    case Recording_Kind.PARTICIPANT:
      return `participant ${r.identity}`;
    case Recording_Kind.TRACK:
      return `track ${trackName(r.trackSid) ?? r.trackSid}`;
    default:
      return label(Recording_Kind[r.kind]);
  }
}

function statusClass(r: Recording): string {
  switch (r.status) {
    case Recording_Status.ACTIVE:
      return "badge live-badge";
    case Recording_Status.FAILED:
    case Recording_Status.ABORTED:
    case Recording_Status.LIMIT_REACHED:
      return "badge muted-badge";
    default:
      return "badge";
  }
}

function date(ts: Recording["startedAt"]): Date | undefined {
  return ts ? timestampDate(ts) : undefined;
}

/** "8 s", "1 min 05 s", "2 h 03 min". */
export function span(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const pad = (n: number) => String(n).padStart(2, "0");
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${pad(Math.floor((s % 3600) / 60))} min`;
}

/** "812 B", "4.1 KiB", "3.4 MiB", "1.2 GiB". */
export function bytes(n: bigint): string {
  const value = Number(n);
  if (value < 1024) return `${value} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = value / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function durationMs(d: Recording["duration"]): number {
  return d ? Number(d.seconds) * 1000 + d.nanos / 1e6 : 0;
}

/** "started 10:02:03 · ended 10:04:10 · 2 min 07 s", "started 10:02:03 · recording". */
function times(r: Recording): string {
  const started = date(r.startedAt);
  const ended = date(r.endedAt);
  const parts = [started ? `started ${when(started)}` : "not started yet"];
  if (ended) parts.push(`ended ${when(ended)}`);
  const length = durationMs(r.duration) || (started && ended ? ended.getTime() - started.getTime() : 0);
  if (length > 0) parts.push(span(length));
  else if (!hasEnded(r) && started) parts.push(r.kind === Recording_Kind.STREAM ? "streaming" : "recording");
  return parts.join(" · ");
}

function render(name: string, recordings: Recording[]): void {
  const state = $("#recordings-state");
  state.dataset.state = "";
  state.title = "";
  state.textContent = recordings.length ? "" : "No recordings or streams of this room yet.";
  const live = recordings.filter((r) => !hasEnded(r)).length;
  $("#recordings-count").textContent = recordings.length
    ? `(${recordings.length}${live ? `, ${live} running` : ""})`
    : "";
  $("#recordings-list").hidden = recordings.length === 0;
  const key = JSON.stringify(recordings, (_, v) => (typeof v === "bigint" ? String(v) : v));
  if (key === listKey) return;
  listKey = key;
  // One item a recording: what, its status, Stop; when and how long; its
  // files or streams; why it failed.
  $("#recordings-list").replaceChildren(
    ...recordings.map((r) => {
      const status = Recording_Status[r.status] ?? "UNSPECIFIED";
      const by = r.startedBy;
      return h(
        "li",
        { class: "item recording", "data-recording-id": r.id, "data-status": status, "data-kind": Recording_Kind[r.kind] },
        h(
          "div",
          { class: "item-head" },
          h("strong", { "data-field": "kind" }, kindText(r)),
          h("span", { class: statusClass(r), "data-field": "status" }, label(status)),
          r.endInferred
            ? h(
                "span",
                {
                  class: "badge inferred-badge",
                  "data-field": "end-inferred",
                  title:
                    "LiveKit never reported the end: RoomControl found the egress gone and closed it as failed (LiveKit may still list it as active)",
                },
                "inferred end",
              )
            : null,
          stoppable(r)
            ? h(
                "button",
                { type: "button", class: "danger", onclick: (e: Event) => void stop(name, r, e.currentTarget as HTMLButtonElement) },
                "Stop",
              )
            : null,
        ),
        h(
          "p",
          { class: "muted", "data-field": "times", title: `started ${dateTime(date(r.startedAt))}, ended ${dateTime(date(r.endedAt))}` },
          times(r),
        ),
        ...r.files.map((f) =>
          h(
            "p",
            { class: "output", "data-field": "file", title: f.filename },
            h("span", { class: "muted" }, "file "),
            h("code", { "data-field": "location" }, f.location || f.filename),
            f.size > 0n ? h("span", { class: "muted", "data-field": "size" }, ` · ${bytes(f.size)}`) : null,
          ),
        ),
        ...r.streams.map((s) =>
          h(
            "p",
            { class: "output", "data-field": "stream" },
            h("span", { class: "muted" }, "to "),
            // RoomControl's URL: the stream key is "{redacted}".
            h("code", { "data-field": "url" }, s.url),
            s.status ? h("span", { class: "muted" }, ` · ${s.status}`) : null,
            s.error ? h("span", { class: "error-line" }, ` · ${s.error}`) : null,
          ),
        ),
        r.error ? h("p", { class: "error-line", "data-field": "error" }, r.error) : null,
        h(
          "p",
          { class: "muted small" },
          h("span", { "data-field": "id" }, r.id),
          " · ",
          h("span", { "data-field": "by", title: by?.rpc ?? "" }, by ? `by ${by.caller}` : "started outside RoomControl"),
        ),
      );
    }),
  );
}

// --- actions ------------------------------------------------------------

/** A file name from what the person names it by (identity, track), as StartRoomRecording accepts it. */
function fileName(text: string): string {
  return text.replace(/[^A-Za-z0-9._-]+/g, "-").replace(/^[.-]+/, "").slice(0, 128);
}

function media(): { audioOnly: boolean; videoOnly: boolean } {
  const value = ($("#recording-media") as HTMLSelectElement).value;
  return { audioOnly: value === "audio", videoOnly: value === "video" };
}

/** "Recording EG_... of room standup started (starting)." */
function started(what: string, r: Recording): string {
  return `${what} started: ${r.id}, ${label(Recording_Status[r.status])}.`;
}

async function startRoomRecording(name: string, button: HTMLButtonElement | null): Promise<void> {
  const file = input("#recording-file").value.trim();
  await act(button, `Could not start recording ${name}`, async () => {
    const r = await client.startRoomRecording({
      room: name,
      layout: ($("#recording-layout") as HTMLSelectElement).value,
      ...media(),
      fileName: file,
    });
    input("#recording-file").value = "";
    return started(`Recording of room ${name}`, r);
  });
  reload();
}

async function startStream(name: string, button: HTMLButtonElement | null): Promise<void> {
  const url = input("#stream-url");
  if (!url.value.trim()) {
    url.setCustomValidity("An rtmp:// or rtmps:// URL, with its stream key");
    url.reportValidity();
    url.addEventListener("input", () => url.setCustomValidity(""), { once: true });
    return;
  }
  await act(button, `Could not start streaming ${name}`, async () => {
    const r = await client.startStream({
      room: name,
      urls: [url.value.trim()],
      layout: ($("#recording-layout") as HTMLSelectElement).value,
      ...media(),
    });
    // The key is a secret: out of the field, and only RoomControl's redacted URL is shown.
    url.value = "";
    const to = r.streams.map((s) => s.url).join(", ");
    return `Stream of room ${name} started${to ? ` to ${to}` : ""}: ${r.id}, ${label(Recording_Status[r.status])}.`;
  });
  reload();
}

/** From a participant's row: its camera and microphone, composed. */
export async function recordParticipant(name: string, identity: string, button: HTMLButtonElement): Promise<void> {
  await act(button, `Could not start recording ${identity}`, async () => {
    const r = await client.startParticipantRecording({ room: name, identity, fileName: fileName(identity) });
    return started(`Recording of ${identity}`, r);
  });
  reload();
}

/** From a track's row: that track as it is. */
export async function recordTrack(
  name: string,
  identity: string,
  sid: string,
  trackLabel: string,
  button: HTMLButtonElement,
): Promise<void> {
  await act(button, `Could not start recording ${trackLabel} of ${identity}`, async () => {
    const r = await client.startTrackRecording({ room: name, trackSid: sid, fileName: fileName(`${identity}-${trackLabel}`) });
    return started(`Recording of ${trackLabel} of ${identity}`, r);
  });
  reload();
}

async function stop(name: string, r: Recording, button: HTMLButtonElement): Promise<void> {
  await act(button, `Could not stop ${r.id}`, async () => {
    const answer = await client.stopRecording({ recordingId: r.id });
    const what = r.kind === Recording_Kind.STREAM ? "Stream" : "Recording";
    return `${what} ${r.id} (${kindText(answer)}) of ${name} stopped: ${label(Recording_Status[answer.status])}.`;
  });
  reload();
}
