// A room's agents, on its page: dispatching one (LiveKit's
// AgentDispatchService through RoomControl), ListAgentDispatches with each
// dispatch's jobs, and Cancel.
//
// LiveKit keeps a default dispatch with an empty agent name in every room,
// for agent workers registered without a name: it is shown as "(default)"
// and not offered for cancelling (that would keep those agents out of the
// room). A dispatch has no job until a worker registered under its name took
// it; the agent then joins as a participant of kind agent, so the list
// reloads on the room's participant events and on RoomControl's agent
// actions, with a slow poll while a job is awaited.

import { Code, ConnectError } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { client, describe, failureText } from "./api";
import { $, dateTime, h, input, when } from "./dom";
import type { AgentDispatch, AgentJob } from "./gen/roomcontrol/v1/room_control_pb";
import type { Act } from "./recordings";

/** The timeline's events that change a room's dispatches or their jobs. */
export const AGENT_EVENT_TYPES = [
  "agent_dispatched",
  "agent_dispatch_cancelled",
  "agent_redispatched",
  "participant_joined",
  "participant_left",
  "participant_connection_aborted",
  "room_started",
  "room_finished",
];

const EVENT_DEBOUNCE_MS = 250;
/** The poll while a named dispatch awaits its job, or a job is pending. */
const AWAITING_POLL_MS = 10_000;

let act: Act = async () => false;
let room: string | null = null;
let running = false;
let listKey = "";
let seq = 0;
let eventTimer: ReturnType<typeof setTimeout> | undefined;
let pollTimer: ReturnType<typeof setTimeout> | undefined;

export function init(run: Act): void {
  act = run;
  $("#dispatch-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (room) void dispatch(room, (event as SubmitEvent).submitter as HTMLButtonElement | null);
  });
}

/** Shows `name`'s dispatches (a new room clears the list), or none. */
export function show(name: string | null): void {
  if (name !== room) {
    room = name;
    clear();
  }
  running = true;
  if (name) void load(name);
}

export function pause(): void {
  running = false;
  clearTimeout(eventTimer);
  clearTimeout(pollTimer);
  eventTimer = undefined;
}

/** A timeline event of the shown room: reload soon if it may change the dispatches. */
export function eventArrived(type: string): void {
  if (!running || !room || !AGENT_EVENT_TYPES.includes(type) || eventTimer !== undefined) return;
  const name = room;
  eventTimer = setTimeout(() => {
    eventTimer = undefined;
    if (running && room === name) void load(name);
  }, EVENT_DEBOUNCE_MS);
}

export function reload(): void {
  if (running && room) void load(room);
}

function clear(): void {
  seq += 1;
  listKey = "";
  clearTimeout(eventTimer);
  clearTimeout(pollTimer);
  eventTimer = undefined;
  $("#agents-count").textContent = "";
  setState("", "");
  $("#agents-list").hidden = true;
  $("#agents-list").replaceChildren();
}

function setState(kind: string, text: string, hint = ""): void {
  const state = $("#agents-state");
  state.dataset.state = kind;
  state.replaceChildren(text, hint ? h("span", { class: "hint" }, ` ${hint}`) : "");
}

// --- loading ------------------------------------------------------------

/** Whether a job is still to come: a named dispatch without one, or one pending. */
function awaiting(d: AgentDispatch): boolean {
  return (d.agentName !== "" && d.jobs.length === 0) || d.jobs.some((j) => j.status === "pending");
}

async function load(name: string): Promise<void> {
  const mine = ++seq;
  clearTimeout(pollTimer);
  try {
    const answer = await client.listAgentDispatches({ room: name });
    if (name !== room || mine !== seq) return;
    render(name, answer.dispatches);
    if (running && answer.dispatches.some(awaiting)) {
      pollTimer = setTimeout(() => {
        if (running && room === name) void load(name);
      }, AWAITING_POLL_MS);
    }
  } catch (error) {
    if (name !== room || mine !== seq) return;
    listKey = "";
    $("#agents-count").textContent = "";
    $("#agents-list").hidden = true;
    $("#agents-list").replaceChildren();
    if (ConnectError.from(error).code === Code.NotFound) {
      // Not an error here: LiveKit keeps dispatches for live rooms only.
      setState("not-live", "LiveKit lists the dispatches of a live room only; dispatching an agent starts the room.");
      return;
    }
    const failure = describe("Could not list the agent dispatches", error);
    setState("failed", `Cannot list the agent dispatches: ${failureText(failure)}`, failure.hint);
  }
}

// --- rendering ----------------------------------------------------------

function date(ts: AgentDispatch["createdAt"]): Date | undefined {
  return ts ? timestampDate(ts) : undefined;
}

function jobClass(job: AgentJob): string {
  if (job.status === "running") return "badge live-badge";
  if (job.status === "failed") return "badge muted-badge";
  return "badge";
}

function render(name: string, dispatches: AgentDispatch[]): void {
  const named = dispatches.filter((d) => d.agentName !== "").length;
  setState("", dispatches.length ? "" : "No agent dispatches in this room.");
  $("#agents-count").textContent = named ? `(${named})` : "";
  $("#agents-list").hidden = dispatches.length === 0;
  // LiveKit lists them in no order: the newest first, the default one last.
  const createdMs = (d: AgentDispatch) => date(d.createdAt)?.getTime() ?? 0;
  const ordered = [...dispatches].sort(
    (a, b) => Number(a.agentName === "") - Number(b.agentName === "") || createdMs(b) - createdMs(a) || a.id.localeCompare(b.id),
  );
  const key = JSON.stringify(ordered, (_, v) => (typeof v === "bigint" ? String(v) : v));
  if (key === listKey) return;
  listKey = key;
  $("#agents-list").replaceChildren(
    ...ordered.map((d) => {
      const isDefault = d.agentName === "";
      const created = date(d.createdAt);
      return h(
        "li",
        { class: "item dispatch", "data-dispatch-id": d.id, "data-agent-name": d.agentName, "data-default": String(isDefault) },
        h(
          "div",
          { class: "item-head" },
          isDefault
            ? h(
                "strong",
                {
                  class: "muted",
                  "data-field": "agent",
                  title: "LiveKit's default dispatch, in every room: for agent workers registered without a name",
                },
                "(default)",
              )
            : h("strong", { "data-field": "agent" }, d.agentName),
          d.redispatchOnFailure
            ? h(
                "span",
                {
                  class: "badge",
                  "data-field": "redispatch",
                  title: "RoomControl dispatches it again when its agent leaves the room unexpectedly",
                },
                "redispatch on failure",
              )
            : null,
          d.redispatchOf
            ? h("span", { class: "muted", "data-field": "redispatch-of", title: "the dispatch this one replaces" }, `redispatch of ${d.redispatchOf}`)
            : null,
          isDefault
            ? null
            : h(
                "button",
                { type: "button", class: "danger", onclick: (e: Event) => void cancel(name, d, e.currentTarget as HTMLButtonElement) },
                "Cancel",
              ),
        ),
        d.jobs.length === 0
          ? h(
              "p",
              { class: "muted", "data-field": "no-job" },
              isDefault ? "No job: no unnamed agent worker took it." : "No job yet: no agent worker registered under this name has taken it.",
            )
          : h(
              "ul",
              { class: "jobs" },
              ...d.jobs.map((job) =>
                h(
                  "li",
                  { class: "job", "data-job-id": job.id, "data-status": job.status },
                  h("span", { class: jobClass(job), "data-field": "job-status" }, job.status || "unknown"),
                  job.participantIdentity
                    ? h("strong", { "data-field": "job-identity", title: `job ${job.id}` }, job.participantIdentity)
                    : h("span", { class: "muted", title: `job ${job.id}` }, "not joined yet"),
                  job.startedAt
                    ? h("span", { class: "muted", title: dateTime(timestampDate(job.startedAt)) }, `since ${when(timestampDate(job.startedAt))}`)
                    : null,
                  job.error ? h("span", { class: "error-line" }, job.error) : null,
                ),
              ),
            ),
        d.metadata ? h("p", { class: "muted", "data-field": "metadata" }, `metadata: ${d.metadata}`) : null,
        h(
          "p",
          { class: "muted small" },
          h("span", { "data-field": "id" }, d.id),
          created ? ` · created ${when(created)}` : "",
        ),
      );
    }),
  );
}

// --- actions ------------------------------------------------------------

async function dispatch(name: string, button: HTMLButtonElement | null): Promise<void> {
  const agentName = input("#dispatch-name").value.trim();
  const redispatch = input("#dispatch-redispatch").checked;
  const ok = await act(button, `Could not dispatch ${agentName} to ${name}`, async () => {
    const d = await client.dispatchAgent({
      room: name,
      agentName,
      metadata: input("#dispatch-metadata").value,
      redispatchOnFailure: redispatch,
    });
    return `Agent ${agentName} dispatched to ${name} (${d.id}${redispatch ? ", redispatched on failure" : ""}): it joins once a worker takes the job.`;
  });
  if (ok) (input("#dispatch-name").form as HTMLFormElement).reset();
  reload();
}

async function cancel(name: string, d: AgentDispatch, button: HTMLButtonElement): Promise<void> {
  if (!confirm(`Cancel the dispatch of ${d.agentName} in ${name}? Its agent leaves the room.`)) return;
  await act(button, `Could not cancel the dispatch of ${d.agentName}`, async () => {
    await client.cancelAgentDispatch({ room: name, dispatchId: d.id });
    return `Dispatch of ${d.agentName} in ${name} cancelled (${d.id}).`;
  });
  reload();
}
