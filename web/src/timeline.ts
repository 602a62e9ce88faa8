// A room's live timeline, on its page: WatchEvents for that one room, newest
// event first. Opening a room follows it from now on (with a snapshot of
// who is in it); a broken stream is resumed after the last cursor seen, so
// nothing is missed or shown twice, and the panel says whether it is live.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import { failureText } from "./api";
import { $, clock, dateTime, h, when } from "./dom";
import { EventFollower, type FollowState } from "./events";
import { EventSource, type Event, type Participant, type Room } from "./gen/roomcontrol/v1/room_control_pb";

/** Rows kept on the page; older ones are dropped from the bottom. */
const MAX_ROWS = 300;
const NO_EVENTS = "No events yet: they appear here as they happen.";

let room: string | null = null;
let follower: EventFollower | null = null;
let followingSince: Date | null = null;
let snapshot: { at: Date; participants: string[] } | null = null;
let shown = 0;
let onActivity: (event: Event) => void = () => {};
let trackName: (sid: string) => string | undefined = () => undefined;
let stateTimer: ReturnType<typeof setInterval> | undefined;

/**
 * `activity` hears every event that may change what the room page shows;
 * `names` gives a track's name for its sid, where the page knows it
 * (RoomControl's own actions name a track by its sid alone).
 */
export function init(activity: (event: Event) => void, names: (sid: string) => string | undefined): void {
  onActivity = activity;
  trackName = names;
}

/**
 * Follows `name`'s timeline (a new room clears the panel), or none.
 * `since`: a cursor the console already reached (the rooms list's, a
 * heartbeat at most a few seconds old), so the events of the last moments
 * are shown too, such as the room_created of a room the console just
 * created; without one the stream starts now, with a snapshot of who is in
 * the room.
 */
export function show(name: string | null, since?: bigint): void {
  if (name === room) {
    follower?.start();
    return;
  }
  follower?.stop();
  follower = null;
  room = name;
  shown = 0;
  followingSince = null;
  snapshot = null;
  $("#timeline-events").replaceChildren();
  renderIntro();
  if (name === null) {
    setState(null);
    return;
  }
  followingSince = new Date();
  follower = new EventFollower({
    action: `Following the timeline of ${name}`,
    rooms: [name],
    since,
    currentState: true,
    onEvent: (event) => {
      if (room !== name) return;
      addRow(event);
      if (/^(room|participant|track|egress|recording|stream|agent)_/.test(event.type)) onActivity(event);
    },
    onSnapshot: (r: Room | undefined, participants: Participant[]) => {
      if (room !== name || r?.name !== name) return;
      snapshot = { at: new Date(), participants: participants.map((p) => p.identity) };
      renderIntro();
    },
    onGap: (failure) => {
      if (room === name) addNote("gap", `Events were missed here: ${failureText(failure)}`);
    },
    onState: (state) => {
      if (room === name) setState(state);
    },
  });
  renderIntro();
  follower.start();
}

/** The page is hidden: the stream stops, its cursor is kept for show(). */
export function pause(): void {
  follower?.stop();
  clearInterval(stateTimer);
}

/** A new credential: a follower that was refused tries again. */
export function credentialsChanged(): void {
  follower?.restart();
}

// --- rendering ----------------------------------------------------------

function setState(state: FollowState | null): void {
  const el = $("#timeline-state");
  clearInterval(stateTimer);
  el.dataset.state = state?.kind ?? "";
  el.title = "";
  if (state?.kind !== "off") $("#timeline-empty").textContent = NO_EVENTS;
  if (state === null) {
    el.textContent = "";
    return;
  }
  switch (state.kind) {
    case "connecting":
      el.textContent = state.resuming ? "reconnecting…" : "connecting…";
      break;
    case "live":
      el.textContent = "● live";
      el.title = `connected at ${dateTime(state.since)}`;
      break;
    case "retrying": {
      const tick = () => {
        const seconds = Math.max(0, Math.ceil((state.retryAt.getTime() - Date.now()) / 1000));
        el.textContent = `disconnected · retrying in ${seconds} s`;
      };
      tick();
      stateTimer = setInterval(tick, 1000);
      el.title = failureText(state.failure);
      break;
    }
    case "off": {
      // Until the credential changes: say why where the events would be.
      const why = `${failureText(state.failure)}${state.failure.hint ? ` (${state.failure.hint})` : ""}`;
      el.textContent = `off (${state.failure.code || "refused"})`;
      el.title = why;
      $("#timeline-empty").textContent = `Cannot follow this room's events: ${why}`;
      break;
    }
  }
}

/** The line under the list: since when, and who was there then. */
function renderIntro(): void {
  const intro = $("#timeline-intro");
  if (!room || !followingSince) {
    intro.textContent = "";
    return;
  }
  let text = `Following since ${clock(followingSince)}`;
  if (snapshot) {
    const n = snapshot.participants.length;
    text +=
      n === 0
        ? "; nobody was in the room then."
        : `, when ${n === 1 ? "1 participant was" : `${n} participants were`} in the room (${snapshot.participants.join(", ")}).`;
  } else {
    text += ".";
  }
  text += " Earlier events are not shown.";
  intro.textContent = text;
  $("#timeline-empty").hidden = shown > 0;
}

function date(ts: Event["occurredAt"]): Date | undefined {
  return ts ? timestampDate(ts) : undefined;
}

/**
 * The recording an event is about, with its status where the event has one:
 * "EG_abc · active" for an egress webhook (protojson leaves out STARTING,
 * the zero value), "EG_abc · failed" for an egress_ended RoomControl
 * inferred, "EG_abc" for RoomControl's own recording actions.
 */
function recordingText(event: Event): string {
  const detail = event.detail ?? {};
  const info = detail.egressInfo;
  const status = (name: string) => name.replace(/^(EGRESS|STATUS)_/, "").toLowerCase().replaceAll("_", " ");
  if (info && typeof info === "object" && !Array.isArray(info)) {
    const id = typeof info.egressId === "string" ? info.egressId : "";
    return [id, status(typeof info.status === "string" ? info.status : "EGRESS_STARTING")].filter(Boolean).join(" · ");
  }
  if (typeof detail.recordingId !== "string") return "";
  return typeof detail.status === "string" ? `${detail.recordingId} · ${status(detail.status)}` : detail.recordingId;
}

/** The agent an agent_* event is about: its name ("(default)" for LiveKit's unnamed one). */
function agentText(event: Event): string {
  const name = event.type.startsWith("agent_") ? event.detail?.agentName : undefined;
  return typeof name === "string" ? name || "(default)" : "";
}

/** "camera (video)", "screen (video · screen_share)", or the sid alone. */
function trackText(event: Event, names: (sid: string) => string | undefined): string {
  const t = event.track;
  if (!t) return "";
  const name = t.name || names(t.sid) || t.sid;
  const kind = [t.type, t.source !== name && t.source !== "unknown" ? t.source : ""].filter(Boolean).join(" · ");
  return kind ? `${name} (${kind})` : name;
}

/**
 * One event as a list item: its time, type, inferred badge, participant,
 * track and who asked. Also the history's session page (history.ts), with
 * `names` from the session's published tracks.
 */
export function eventItem(event: Event, names: (sid: string) => string | undefined = trackName): HTMLLIElement {
  const occurred = date(event.occurredAt);
  const received = date(event.receivedAt);
  const fromLiveKit = event.source === EventSource.LIVEKIT;
  const p = event.participant;
  const participantTitle = p ? [p.name && `name ${p.name}`, p.sid, p.kind].filter(Boolean).join(" · ") : "";
  const actor = event.actor ? `${event.actor.caller} · ${event.actor.rpc}` : "";
  return h(
    "li",
    {
      class: "event",
      "data-type": event.type,
      "data-cursor": String(event.cursor),
      "data-id": event.id,
      "data-source": fromLiveKit ? "livekit" : "roomcontrol",
      "data-inferred": String(event.inferred),
    },
    h(
      "time",
      {
        "data-field": "time",
        datetime: occurred?.toISOString() ?? "",
        title: `happened ${dateTime(occurred)}, stored ${dateTime(received)} (cursor ${event.cursor})`,
      },
      when(occurred),
    ),
    h(
      "div",
      { class: "what" },
      h("span", { class: "type", "data-field": "type" }, event.type),
      event.inferred
        ? h(
            "span",
            {
              class: "badge inferred-badge",
              "data-field": "inferred",
              title: "LiveKit's webhook never came: RoomControl inferred this from LiveKit's room list",
            },
            "inferred",
          )
        : null,
      p?.identity ? h("span", { class: "who", "data-field": "participant", title: participantTitle }, p.identity) : null,
      event.track ? h("span", { class: "which", "data-field": "track", title: event.track.sid }, trackText(event, names)) : null,
      recordingText(event) ? h("span", { class: "which", "data-field": "recording" }, recordingText(event)) : null,
      agentText(event)
        ? h("span", { class: "which", "data-field": "agent", title: String(event.detail?.dispatchId ?? "") }, agentText(event))
        : null,
      h(
        "span",
        { class: "by muted", "data-field": "actor" },
        fromLiveKit ? "from LiveKit" : actor ? `by ${actor}` : event.inferred ? "by RoomControl" : "",
      ),
    ),
  );
}

function addRow(event: Event): void {
  const row = eventItem(event);
  const list = $("#timeline-events");
  list.prepend(row);
  shown += 1;
  while (list.children.length > MAX_ROWS) list.lastElementChild?.remove();
  $("#timeline-empty").hidden = true;
}

function addNote(kind: string, text: string): void {
  $("#timeline-events").prepend(h("li", { class: `note ${kind}`, "data-type": kind }, text));
}
