// The admin page: active rooms, creating, deleting and describing them, and
// a room's page (#/rooms/<name>): its participants with their tracks (mute,
// remove, ban, record), the bans in force there, its recordings and streams
// (recordings.ts), its agents (agents.ts), and its live timeline.
//
// The list follows the timeline (WatchEvents): an event that changes a room
// (started, finished, created, deleted, someone joined or left, ...)
// refreshes it within a moment. A slow poll stays as a fallback, and while
// the event stream is down (or refused: it needs events:read) the list is
// polled every few seconds as before.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { client, describe, failureText, type Failure } from "./api";
import { $, clock, dateTime, h, input, when } from "./dom";
import { EventFollower, type FollowState } from "./events";
import {
  type Ban,
  type BanParticipantResponse,
  ParticipantKind,
  ParticipantState,
  TrackSource,
  TrackType,
  type Participant,
  type Room,
  type Track,
} from "./gen/roomcontrol/v1/room_control_pb";
import * as agents from "./agents";
import * as recordings from "./recordings";
import * as timeline from "./timeline";

/** Polling while the event stream is not live. */
const REFRESH_MS = 3000;
/** Polling while it is: only a fallback. */
const FALLBACK_MS = 15_000;
/** Events arriving together cause one refresh, at most one a second. */
const EVENT_DEBOUNCE_MS = 250;
const EVENT_MIN_GAP_MS = 1000;

/** A room's timeline events that change its bans list. */
const BAN_EVENT_TYPES = ["participant_banned", "participant_unbanned"];

/** How long a ban from a participant's row holds, in seconds; 0: until lifted. */
const BAN_DURATIONS: [string, number][] = [
  ["15 min", 15 * 60],
  ["1 h", 60 * 60],
  ["1 day", 24 * 60 * 60],
  ["until lifted", 0],
];
const DEFAULT_BAN_SECONDS = 60 * 60;

/**
 * The timeline events that change what the rooms list (or a room's page)
 * shows: rooms appearing and going, participant and publisher counts,
 * metadata.
 */
export const LIST_EVENT_TYPES = [
  "room_started",
  "room_finished",
  "participant_joined",
  "participant_left",
  "participant_connection_aborted",
  "room_created",
  "room_deleted",
  "room_metadata_updated",
  "track_published",
  "track_unpublished",
];

let running = false;
let timer: ReturnType<typeof setTimeout> | undefined;
let inFlight = false;
let again = false;
/** Why the next refresh runs: "start", "poll", "action", "event:<type>", ... */
let pendingReason = "start";

let listFollower: EventFollower | null = null;
let listState: FollowState = { kind: "connecting", resuming: false };
let eventTimer: ReturnType<typeof setTimeout> | undefined;
let eventReason = "";
let lastEventRefresh = 0;

let rooms: Room[] = [];
let roomsUpdatedAt: Date | null = null;
let roomsUpdatedBy = "";
let roomsKey = "";
let selected: string | null = null;
/** Whether the selected room was in the last list (for "no longer active"). */
let selectedActive = false;
let participantsKey = "";
/** The names of the selected room's tracks by sid, for its timeline. */
const trackNames = new Map<string, string>();
let metadataDirty = false;
/** The open ban form (one at a time), kept across re-renders of the participants. */
let banForm: { identity: string; form: HTMLFormElement } | null = null;
let bansKey = "";
/** Answers of an older ListBans (another room, an earlier call) are dropped. */
let bansSeq = 0;
/** Reloads the bans when the first one ends (no event says a ban expired). */
let bansTimer: ReturnType<typeof setTimeout> | undefined;
/** Whether the error banner shows a failed refresh (cleared by the next good one). */
let bannerFromRefresh = false;

export function init(): void {
  $("#create-room-form").addEventListener("submit", (event) => {
    event.preventDefault();
    void createRoom(event.submitter as HTMLButtonElement | null);
  });
  $("#metadata-form").addEventListener("submit", (event) => {
    event.preventDefault();
    void saveMetadata(event.submitter as HTMLButtonElement | null);
  });
  $("#room-metadata").addEventListener("input", () => {
    metadataDirty = true;
  });
  $("#detail-close").addEventListener("click", () => select(null));
  timeline.init(
    (event) => {
      eventArrived(event.type);
      if (BAN_EVENT_TYPES.includes(event.type) && selected) void loadBans(selected);
      recordings.eventArrived(event.type);
      agents.eventArrived(event.type);
    },
    (sid) => trackNames.get(sid),
  );
  recordings.init(act, (sid) => trackNames.get(sid));
  agents.init(act);
  listFollower = new EventFollower({
    action: "Following the rooms' events",
    types: LIST_EVENT_TYPES,
    onEvent: (event) => eventArrived(event.type),
    onState: (state) => {
      const wasLive = listState.kind === "live";
      listState = state;
      if (state.kind === "live" && !wasLive) {
        // Whatever happened while the stream was down or connecting.
        void refresh("events connected");
      } else if (state.kind !== "live" && wasLive) {
        // Back to polling at the fast rate.
        void refresh("events disconnected");
      } else {
        showStatus();
      }
    },
  });
}

export function start(): void {
  running = true;
  listFollower?.start();
  if (selected) {
    timeline.show(selected, listFollower?.cursor);
    void loadBans(selected);
    recordings.show(selected);
    agents.show(selected);
  }
  void refresh("start");
}

export function stop(): void {
  running = false;
  clearTimeout(timer);
  clearTimeout(eventTimer);
  clearTimeout(bansTimer);
  eventTimer = undefined;
  listFollower?.stop();
  timeline.pause();
  recordings.pause();
  agents.pause();
}

export function credentialsChanged(): void {
  if (!running) return;
  listFollower?.restart();
  timeline.credentialsChanged();
  if (selected) void loadBans(selected);
  recordings.reload();
  agents.reload();
  void refresh("new credential");
}

/** The room of the page's URL (#/rooms/<name>), or null for the list alone. */
export function open(name: string | null): void {
  if (name !== selected) select(name, false);
}

// --- refreshing ---------------------------------------------------------

/** An event that changes what is shown: refresh soon, coalescing a burst. */
function eventArrived(type: string): void {
  if (!running) return;
  eventReason = `event ${type}`;
  if (eventTimer !== undefined) return;
  const wait = Math.max(EVENT_DEBOUNCE_MS, lastEventRefresh + EVENT_MIN_GAP_MS - Date.now());
  eventTimer = setTimeout(() => {
    eventTimer = undefined;
    lastEventRefresh = Date.now();
    void refresh(eventReason);
  }, wait);
}

function pollMs(): number {
  return listState.kind === "live" ? FALLBACK_MS : REFRESH_MS;
}

async function refresh(reason: string): Promise<void> {
  clearTimeout(timer);
  if (!running) return;
  if (inFlight) {
    again = true;
    pendingReason = reason;
    return;
  }
  inFlight = true;
  try {
    const ok = await loadRooms(reason);
    if (ok && selected && rooms.some((r) => r.name === selected)) await loadParticipants(selected);
  } finally {
    inFlight = false;
    if (running) {
      if (again) {
        again = false;
        void refresh(pendingReason);
      } else {
        timer = setTimeout(() => void refresh("poll"), pollMs());
      }
    }
  }
}

async function loadRooms(reason: string): Promise<boolean> {
  try {
    const answer = await client.listRooms({});
    rooms = [...answer.rooms].sort((a, b) => a.name.localeCompare(b.name));
    roomsUpdatedAt = new Date();
    roomsUpdatedBy = reason;
  } catch (error) {
    showError(describe("Could not list the rooms", error), true);
    $("#rooms-table").classList.add("stale");
    roomsFailedAt = new Date();
    showStatus();
    return false;
  }
  roomsFailedAt = null;
  if (bannerFromRefresh) clearError();
  $("#rooms-table").classList.remove("stale");
  $("#rooms-table").dataset.updatedBy = reason;
  showStatus();
  const active = selected !== null && rooms.some((r) => r.name === selected);
  if (selected && selectedActive && !active) notice(`Room ${selected} is no longer active.`, true);
  selectedActive = active;
  renderRooms();
  if (selected) renderFacts();
  return true;
}

let roomsFailedAt: Date | null = null;

/** The line above the list: how fresh it is, and how it is kept fresh. */
function showStatus(): void {
  const status = $("#rooms-status");
  const how =
    listState.kind === "live"
      ? `live updates from events (polling every ${FALLBACK_MS / 1000} s as a fallback)`
      : listState.kind === "off"
        ? `refreshing every ${REFRESH_MS / 1000} s (no live updates: ${listState.failure.code || "refused"})`
        : `refreshing every ${REFRESH_MS / 1000} s (live updates: ${listState.kind === "retrying" ? "reconnecting" : "connecting"}…)`;
  status.dataset.live = String(listState.kind === "live");
  // Why live updates are off or down, in full.
  status.title = listState.kind === "off" || listState.kind === "retrying" ? failureText(listState.failure) : "";
  if (roomsFailedAt) {
    status.textContent = roomsUpdatedAt
      ? `refresh failed at ${clock(roomsFailedAt)}; showing the rooms of ${clock(roomsUpdatedAt)}`
      : `could not list the rooms (${clock(roomsFailedAt)}); retrying every ${pollMs() / 1000} s`;
    return;
  }
  if (!roomsUpdatedAt) return;
  const why = roomsUpdatedBy.startsWith("event ") ? ` on ${roomsUpdatedBy.slice(6)}` : "";
  status.textContent =
    `${rooms.length} ${rooms.length === 1 ? "room" : "rooms"} · updated ${clock(roomsUpdatedAt)}${why} · ${how}`;
}

async function loadParticipants(room: string): Promise<void> {
  try {
    const answer = await client.listParticipants({ room });
    if (room !== selected) return;
    renderParticipants(answer.participants);
  } catch (error) {
    showError(describe(`Could not list the participants of ${room}`, error), true);
  }
}

// --- rendering ----------------------------------------------------------

function created(room: Room): Date | undefined {
  return room.creationTime ? timestampDate(room.creationTime) : undefined;
}

function short(text: string, max = 40): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function renderRooms(): void {
  const key = JSON.stringify([
    selected,
    rooms.map((r) => [r.name, r.sid, r.numParticipants, r.numPublishers, r.metadata, String(r.creationTime?.seconds)]),
  ]);
  if (key === roomsKey) return;
  roomsKey = key;
  $("#rooms-empty").hidden = rooms.length > 0;
  $("#rooms-body").replaceChildren(
    ...rooms.map((room) =>
      h(
        "tr",
        { "data-room": room.name, class: room.name === selected ? "selected" : null },
        h("td", { class: "name" }, h("button", { type: "button", class: "link", onclick: () => select(room.name) }, room.name)),
        h("td", { class: "num", "data-field": "participants" }, room.numParticipants),
        h("td", { class: "num", "data-field": "publishers" }, room.numPublishers),
        h("td", { class: "created", title: dateTime(created(room)) }, when(created(room))),
        h("td", { class: "metadata", title: room.metadata }, room.metadata ? short(room.metadata) : h("span", { class: "muted" }, "—")),
        h(
          "td",
          { class: "actions" },
          h("button", { type: "button", onclick: () => select(room.name) }, "Participants"),
          h(
            "button",
            { type: "button", class: "danger", onclick: (e: Event) => void deleteRoom(room.name, e.currentTarget as HTMLButtonElement) },
            "Delete",
          ),
        ),
      ),
    ),
  );
}

/**
 * Opens a room's page (its details, participants and timeline) beside the
 * list, or closes it. `push`: record it in the URL (#/rooms/<name>), so the
 * page can be linked to and Back returns to the previous one. `since`: the
 * cursor its timeline starts after (see timeline.show).
 */
function select(name: string | null, push = true, since = listFollower?.cursor): void {
  if (name !== selected) {
    selected = name;
    selectedActive = name !== null && rooms.some((r) => r.name === name);
    participantsKey = "";
    metadataDirty = false;
    clearParticipants();
    clearBans();
    if (push) {
      const hash = name === null ? "#/rooms" : `#/rooms/${encodeURIComponent(name)}`;
      if (location.hash !== hash) location.hash = hash;
    }
    document.title = name === null ? "RoomControl · Rooms" : `RoomControl · Room ${name}`;
  }
  $("#room-detail").hidden = name === null;
  roomsKey = "";
  renderRooms();
  if (running) {
    timeline.show(name, since);
    recordings.show(name);
    agents.show(name);
  }
  if (name === null) return;
  $("#detail-name").textContent = name;
  const room = rooms.find((r) => r.name === name);
  if (!metadataDirty) ($("#room-metadata") as HTMLTextAreaElement).value = room?.metadata ?? "";
  renderFacts();
  if (room) void loadParticipants(name);
  if (running) void loadBans(name);
}

function clearParticipants(): void {
  participantsKey = "";
  banForm = null;
  trackNames.clear();
  $("#participants").replaceChildren();
  $("#participants-count").textContent = "";
  $("#participants-empty").hidden = true;
}

function renderFacts(): void {
  const room = rooms.find((r) => r.name === selected);
  // A room LiveKit does not list (it ended, or has not started): its page
  // stays, with its timeline, to see what happens to it.
  $("#detail-inactive").hidden = room !== undefined || roomsUpdatedAt === null;
  $("#metadata-form").hidden = room === undefined;
  $("#participants-section").hidden = room === undefined;
  $("#detail-facts").hidden = room === undefined;
  if (!room) {
    $("#detail-facts").replaceChildren();
    clearParticipants();
    return;
  }
  const seconds = (s: number, fallback: string) => (s ? `${s} s` : fallback);
  const facts: [string, string][] = [
    ["Sid", room.sid],
    ["Created", dateTime(created(room))],
    ["Max participants", room.maxParticipants ? String(room.maxParticipants) : "no limit"],
    ["Empty timeout", seconds(room.emptyTimeout, "server default")],
    ["Departure timeout", seconds(room.departureTimeout, "server default")],
    ["Recording", room.activeRecording ? "yes" : "no"],
  ];
  $("#detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  const textarea = $("#room-metadata") as HTMLTextAreaElement;
  if (!metadataDirty && document.activeElement !== textarea) textarea.value = room.metadata;
}

function label(name: string | undefined): string {
  return (name ?? "unknown").toLowerCase().replaceAll("_", " ");
}

function describeTrack(track: Track): string {
  const parts = [label(TrackType[track.type]), label(TrackSource[track.source])];
  if (track.width && track.height) parts.push(`${track.width}×${track.height}`);
  if (track.simulcast) parts.push("simulcast");
  if (track.mimeType) parts.push(track.mimeType);
  return parts.join(" · ");
}

function renderParticipants(participants: Participant[]): void {
  const key = JSON.stringify(
    participants.map((p) => [
      p.sid,
      p.identity,
      p.name,
      p.state,
      p.metadata,
      p.tracks.map((t) => [t.sid, t.name, t.muted, t.type, t.source]),
    ]),
  );
  if (key === participantsKey) return;
  participantsKey = key;
  for (const p of participants) for (const t of p.tracks) if (t.name) trackNames.set(t.sid, t.name);
  const room = selected!;
  if (banForm && !participants.some((p) => p.identity === banForm?.identity)) banForm = null;
  $("#participants-count").textContent = `(${participants.length})`;
  $("#participants-empty").hidden = participants.length > 0;
  $("#participants").replaceChildren(
    ...participants.map((p) => {
      const joined = p.joinedAt ? dateTime(timestampDate(p.joinedAt)) : "—";
      const kind = p.kind === ParticipantKind.STANDARD ? "" : label(ParticipantKind[p.kind]);
      return h(
        "article",
        { class: "participant", "data-identity": p.identity },
        h(
          "header",
          {},
          h("strong", { class: "identity" }, p.identity),
          p.name && p.name !== p.identity ? h("span", {}, ` (${p.name})`) : null,
          h("span", { class: "badge" }, label(ParticipantState[p.state])),
          kind ? h("span", { class: "badge" }, kind) : null,
          h("span", { class: "muted" }, ` joined ${joined} · ${p.sid}`),
          h(
            "span",
            { class: "participant-actions" },
            h(
              "button",
              {
                type: "button",
                title: "Record its camera and microphone, composed into one file (Recordings below)",
                onclick: (e: Event) => void recordings.recordParticipant(room, p.identity, e.currentTarget as HTMLButtonElement),
              },
              "Record",
            ),
            h(
              "button",
              {
                type: "button",
                class: "danger",
                "aria-expanded": String(banForm?.identity === p.identity),
                title: "Remove and refuse new tokens: asks for a reason and how long",
                onclick: (e: Event) => toggleBanForm(room, p.identity, e.currentTarget as HTMLButtonElement),
              },
              "Ban",
            ),
            h(
              "button",
              {
                type: "button",
                class: "danger",
                onclick: (e: Event) => void removeParticipant(room, p.identity, e.currentTarget as HTMLButtonElement),
              },
              "Remove",
            ),
          ),
        ),
        banForm?.identity === p.identity ? banForm.form : null,
        p.metadata ? h("p", { class: "muted" }, `metadata: ${short(p.metadata, 120)}`) : null,
        p.tracks.length === 0
          ? h("p", { class: "muted" }, "No published tracks.")
          : h(
              "ul",
              { class: "tracks" },
              ...p.tracks.map((t) =>
                h(
                  "li",
                  { class: "track", "data-track-sid": t.sid, "data-track-name": t.name, "data-muted": String(t.muted) },
                  h("strong", {}, t.name || t.sid),
                  h("span", { class: "muted" }, ` ${describeTrack(t)} · ${t.sid} `),
                  h(
                    "span",
                    { class: "track-actions" },
                    h("span", { class: t.muted ? "badge muted-badge" : "badge live-badge" }, t.muted ? "muted" : "live"),
                    h(
                      "button",
                      {
                        type: "button",
                        onclick: (e: Event) => void mute(room, p.identity, t, !t.muted, e.currentTarget as HTMLButtonElement),
                      },
                      t.muted ? "Unmute" : "Mute",
                    ),
                    h(
                      "button",
                      {
                        type: "button",
                        title: "Record this track as it is (Recordings below)",
                        onclick: (e: Event) =>
                          void recordings.recordTrack(room, p.identity, t.sid, t.name || t.sid, e.currentTarget as HTMLButtonElement),
                      },
                      "Record",
                    ),
                  ),
                ),
              ),
            ),
      );
    }),
  );
}

// --- bans ---------------------------------------------------------------

/**
 * The bans that apply to `room` (its name, a pattern matching it, every
 * room). A refusal (no participants:ban) is said in the section, not in the
 * banner: the rest of the page works without that scope.
 */
async function loadBans(room: string): Promise<void> {
  const seq = ++bansSeq;
  try {
    const answer = await client.listBans({ room });
    if (room !== selected || seq !== bansSeq) return;
    renderBans(room, answer.bans);
  } catch (error) {
    if (room !== selected || seq !== bansSeq) return;
    const failure = describe("Could not list the bans", error);
    bansKey = "";
    $("#bans-count").textContent = "";
    $("#bans-list").hidden = true;
    $("#bans-list").replaceChildren();
    const state = $("#bans-state");
    state.textContent = `Cannot list the bans: ${failureText(failure)}`;
    state.title = failure.hint;
    state.dataset.state = "failed";
  }
}

function clearBans(): void {
  bansSeq += 1;
  bansKey = "";
  clearTimeout(bansTimer);
  $("#bans-count").textContent = "";
  $("#bans-state").textContent = "";
  $("#bans-state").dataset.state = "";
  $("#bans-list").hidden = true;
  $("#bans-list").replaceChildren();
}

function banEnd(ban: Ban): Date | undefined {
  return ban.expiresAt ? timestampDate(ban.expiresAt) : undefined;
}

/** "until lifted", "until 14:05:00", "until 2026-11-30 09:00". */
function until(ban: Ban): string {
  const end = banEnd(ban);
  return end ? `until ${when(end)}` : "until lifted";
}

function renderBans(room: string, all: Ban[]): void {
  const now = Date.now();
  const bans = all.filter((b) => (banEnd(b)?.getTime() ?? Infinity) > now);
  // When the first one ends, ask again (the server drops it then).
  clearTimeout(bansTimer);
  const ends = bans.map((b) => banEnd(b)?.getTime() ?? Infinity).filter(Number.isFinite);
  if (ends.length) {
    const wait = Math.min(Math.min(...ends) - now + 1000, 2 ** 31 - 1);
    bansTimer = setTimeout(() => {
      if (running && selected === room) void loadBans(room);
    }, wait);
  }
  const state = $("#bans-state");
  state.dataset.state = "";
  state.title = "";
  state.textContent = bans.length ? "" : "No bans in force here.";
  $("#bans-count").textContent = bans.length ? `(${bans.length})` : "";
  $("#bans-list").hidden = bans.length === 0;
  const key = JSON.stringify(bans.map((b) => [b.id, b.room, b.identity, b.reason, String(b.expiresAt?.seconds)]));
  if (key === bansKey) return;
  bansKey = key;
  // One item a ban: who, where, until when, Unban; then why and who banned.
  $("#bans-list").replaceChildren(
    ...bans.map((ban) => {
      const created = ban.createdAt ? timestampDate(ban.createdAt) : undefined;
      const by = ban.createdBy;
      return h(
        "li",
        { class: "ban", "data-ban-id": ban.id, "data-identity": ban.identity },
        h(
          "div",
          { class: "ban-head" },
          h("strong", { class: "identity", "data-field": "identity" }, ban.identity),
          h(
            "span",
            {
              class: "badge",
              "data-field": "room",
              title: ban.room === room ? `room ${room}` : "a pattern, or every room (*), that covers this room",
            },
            ban.room,
          ),
          h("span", { class: "muted", "data-field": "until", title: banEnd(ban) ? dateTime(banEnd(ban)) : null }, until(ban)),
          h(
            "button",
            { type: "button", onclick: (e: Event) => void unban(room, ban, e.currentTarget as HTMLButtonElement) },
            "Unban",
          ),
        ),
        h(
          "p",
          {},
          ban.reason
            ? h("span", { "data-field": "reason" }, ban.reason)
            : h("span", { class: "muted", "data-field": "reason" }, "no reason given"),
          h("span", { class: "muted" }, " · by "),
          h("span", { class: "muted", "data-field": "by", title: `${by?.rpc ?? ""} at ${dateTime(created)} · ${ban.id}` }, by?.caller ?? "—"),
        ),
      );
    }),
  );
}

/** The inline form under a participant's header: a reason, how long, confirm. */
function makeBanForm(room: string, identity: string): HTMLFormElement {
  const reason = h("input", {
    name: "reason",
    maxlength: 512,
    placeholder: "shown to them when refused",
    autocomplete: "off",
  });
  const duration = h(
    "select",
    { name: "duration" },
    ...BAN_DURATIONS.map(([text, seconds]) => h("option", { value: seconds, selected: seconds === DEFAULT_BAN_SECONDS }, text)),
  );
  const form = h(
    "form",
    { class: "ban-form", "data-identity": identity },
    h("label", {}, "Reason ", reason),
    h("label", {}, "For ", duration),
    h("button", { type: "submit" }, "Confirm ban"),
    h("button", { type: "button", onclick: closeBanForm }, "Cancel"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const button = (event as SubmitEvent).submitter as HTMLButtonElement | null;
    void banParticipant(room, identity, reason.value.trim(), Number(duration.value), button);
  });
  return form;
}

function toggleBanForm(room: string, identity: string, button: HTMLButtonElement): void {
  const wasOpen = banForm?.identity === identity;
  closeBanForm();
  if (wasOpen) return;
  banForm = { identity, form: makeBanForm(room, identity) };
  button.closest("header")?.after(banForm.form);
  button.setAttribute("aria-expanded", "true");
  banForm.form.querySelector("input")?.focus();
}

function closeBanForm(): void {
  if (!banForm) return;
  const article = banForm.form.closest("article");
  article?.querySelector("header button[aria-expanded]")?.setAttribute("aria-expanded", "false");
  banForm.form.remove();
  banForm = null;
}

/** "participant-2 banned from room-2 for 1 h (until 14:05:00): removed from room-2." */
function banOutcome(identity: string, seconds: number, answer: BanParticipantResponse): string {
  const ban = answer.ban;
  const length = BAN_DURATIONS.find(([, s]) => s === seconds)?.[0] ?? `${seconds} s`;
  const how = seconds ? `for ${length} (${ban ? until(ban) : ""})` : "until lifted";
  let text = `${identity} banned from ${ban?.room ?? "?"} ${how}`;
  text += answer.removedFrom.length ? `: removed from ${answer.removedFrom.join(", ")}.` : ": it was in no live room.";
  if (answer.failedRooms.length) {
    const where = answer.failedRooms.includes("*")
      ? "the live rooms (LiveKit could not list them)"
      : answer.failedRooms.join(", ");
    text += ` Could not remove it from ${where}: the ban holds (no new token; removed when it joins);`;
    text += " use Remove to end its session now.";
  }
  return text;
}

// --- messages -----------------------------------------------------------

function showError(failure: Failure, fromRefresh = false): void {
  const banner = $("#rooms-error");
  banner.replaceChildren(
    h("strong", {}, `${failure.action}. `),
    h("span", { class: "error-text" }, failureText(failure)),
    failure.hint ? h("span", { class: "hint" }, ` ${failure.hint}`) : "",
    h("button", { type: "button", class: "link dismiss", "aria-label": "dismiss", onclick: clearError }, "×"),
  );
  banner.hidden = false;
  bannerFromRefresh = fromRefresh;
  $("#rooms-notice").hidden = true;
}

function clearError(): void {
  $("#rooms-error").hidden = true;
  $("#rooms-error").replaceChildren();
  bannerFromRefresh = false;
}

/**
 * Shows `text` in the notice line. `keep`: after what it shows already, so
 * an action's outcome is not replaced by its consequence (a removal or a ban
 * closes the room a moment later: "Room ... is no longer active").
 */
function notice(text: string, keep = false): void {
  const el = $("#rooms-notice");
  el.textContent = keep && !el.hidden && el.textContent ? `${el.textContent} ${text}` : text;
  el.hidden = false;
}

/** Runs one action with its button disabled; failures go to the banner. */
async function act(button: HTMLButtonElement | null, action: string, run: () => Promise<string>): Promise<boolean> {
  if (button) button.disabled = true;
  clearError();
  $("#rooms-notice").hidden = true;
  try {
    notice(await run());
    return true;
  } catch (error) {
    showError(describe(action, error));
    return false;
  } finally {
    if (button) button.disabled = false;
    void refresh("action");
  }
}

// --- actions ------------------------------------------------------------

function optionalNumber(selector: string): number {
  const value = input(selector).value.trim();
  return value === "" ? 0 : Number(value);
}

async function createRoom(button: HTMLButtonElement | null): Promise<void> {
  const name = input("#create-name").value.trim();
  // The room's page, opened once it exists, starts its timeline from here:
  // it shows the room_created (and LiveKit's room_started) of this call.
  const before = listFollower?.cursor;
  // Agent names, separated by commas or spaces: dispatched with the room.
  const agentNames = input("#create-agents").value.split(/[\s,]+/).filter(Boolean);
  const ok = await act(button, `Could not create room ${name}`, async () => {
    const room = await client.createRoom({
      name,
      maxParticipants: optionalNumber("#create-max"),
      emptyTimeout: optionalNumber("#create-empty-timeout"),
      metadata: input("#create-metadata").value,
      agents: agentNames.map((agentName) => ({ agentName })),
    });
    rooms = [...rooms.filter((r) => r.name !== room.name), room].sort((a, b) => a.name.localeCompare(b.name));
    const withAgents = agentNames.length ? `, with ${agentNames.length === 1 ? "agent" : "agents"} ${agentNames.join(", ")}` : "";
    return `Room ${room.name} is ready (${room.sid})${withAgents}.`;
  });
  if (ok) {
    (input("#create-name").form as HTMLFormElement).reset();
    select(name, true, before);
  }
}

async function deleteRoom(name: string, button: HTMLButtonElement): Promise<void> {
  if (!confirm(`Delete room ${name}? Everyone in it is disconnected.`)) return;
  await act(button, `Could not delete room ${name}`, async () => {
    await client.deleteRoom({ name });
    rooms = rooms.filter((r) => r.name !== name);
    if (selected === name) select(null);
    return `Room ${name} deleted.`;
  });
}

async function saveMetadata(button: HTMLButtonElement | null): Promise<void> {
  const room = selected;
  if (!room) return;
  const metadata = ($("#room-metadata") as HTMLTextAreaElement).value;
  await act(button, `Could not update the metadata of ${room}`, async () => {
    const updated = await client.updateRoomMetadata({ room, metadata });
    metadataDirty = false;
    rooms = rooms.map((r) => (r.name === room ? updated : r));
    return `Metadata of ${room} saved.`;
  });
}

async function mute(room: string, identity: string, track: Track, muted: boolean, button: HTMLButtonElement): Promise<void> {
  const what = `${track.name || track.sid} of ${identity}`;
  await act(button, `Could not ${muted ? "mute" : "unmute"} ${what}`, async () => {
    const answer = await client.mutePublishedTrack({ room, identity, trackSid: track.sid, muted });
    participantsKey = "";
    return `${answer.muted ? "Muted" : "Unmuted"} ${what}.`;
  });
}

async function removeParticipant(room: string, identity: string, button: HTMLButtonElement): Promise<void> {
  if (!confirm(`Remove ${identity} from ${room}? (Not a ban: a valid token can rejoin.)`)) return;
  await act(button, `Could not remove ${identity}`, async () => {
    await client.removeParticipant({ room, identity });
    participantsKey = "";
    return `${identity} removed from ${room}.`;
  });
}

async function banParticipant(
  room: string,
  identity: string,
  reason: string,
  seconds: number,
  button: HTMLButtonElement | null,
): Promise<void> {
  await act(button, `Could not ban ${identity} from ${room}`, async () => {
    const answer = await client.banParticipant({
      room,
      identity,
      reason,
      duration: seconds ? { seconds: BigInt(seconds) } : undefined,
    });
    closeBanForm();
    participantsKey = "";
    return banOutcome(identity, seconds, answer);
  });
  if (selected === room) void loadBans(room);
}

async function unban(room: string, ban: Ban, button: HTMLButtonElement): Promise<void> {
  await act(button, `Could not lift the ban of ${ban.identity}`, async () => {
    await client.unbanParticipant({ banId: ban.id });
    return `Ban of ${ban.identity} from ${ban.room} lifted (${ban.id}).`;
  });
  // Also after a NOT_FOUND: it was lifted or expired meanwhile.
  if (selected === room) void loadBans(room);
}
