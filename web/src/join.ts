// The join page, the seed app's test client: pick or name a room, get a join
// token from CreateToken, and join the call with camera and microphone
// through livekit-client, showing everyone's video and who is speaking.

import { timestampDate } from "@bufbuild/protobuf/wkt";
import type {
  LocalTrackPublication,
  Participant,
  RemoteParticipant,
  RemoteTrack,
  RemoteTrackPublication,
  Room,
  TrackPublication,
} from "livekit-client";
import { client, describe, failureText, type Failure } from "./api";
import { $, clock, dateTime, h, input } from "./dom";
import type { CreateTokenResponse } from "./gen/roomcontrol/v1/room_control_pb";

let token: CreateTokenResponse | null = null;
let room: Room | null = null;
let joining = false;
const tiles = new Map<string, HTMLElement>();

export function init(): void {
  $("#get-token").addEventListener("click", () => void getToken());
  $("#join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    void joinCall();
  });
  $("#leave").addEventListener("click", () => void room?.disconnect());
  $("#toggle-mic").addEventListener("click", () => void toggle("microphone"));
  $("#toggle-camera").addEventListener("click", () => void toggle("camera"));
  $("#start-audio").addEventListener("click", () => void room?.startAudio());
  window.addEventListener("pagehide", () => void room?.disconnect());
}

export function start(): void {
  void loadRoomNames();
}

export function stop(): void {
  // A call goes on while the rooms page is shown; Leave ends it.
}

export function credentialsChanged(): void {
  if (!$("#page-join").hidden) void loadRoomNames();
}

async function loadRoomNames(): Promise<void> {
  const note = $("#join-rooms-note");
  try {
    const answer = await client.listRooms({});
    const names = answer.rooms.map((r) => r.name).sort();
    $("#join-rooms").replaceChildren(...names.map((name) => h("option", { value: name })));
    note.textContent =
      (names.length ? `Active rooms: ${names.join(", ")}. ` : "No active rooms yet. ") +
      "A name that is not listed starts a new room when you join.";
  } catch (error) {
    // A self-service caller may not list rooms; typing a name still works.
    note.textContent = `Could not list the rooms (${failureText(describe("", error))}); type the room's name.`;
  }
}

// --- messages -----------------------------------------------------------

function showError(failure: Failure): void {
  const banner = $("#join-error");
  banner.replaceChildren(
    h("strong", {}, `${failure.action}. `),
    h("span", { class: "error-text" }, failureText(failure)),
    failure.hint ? h("span", { class: "hint" }, ` ${failure.hint}`) : "",
    h("button", { type: "button", class: "link dismiss", "aria-label": "dismiss", onclick: clearError }, "×"),
  );
  banner.hidden = false;
}

function clearError(): void {
  $("#join-error").hidden = true;
  $("#join-error").replaceChildren();
}

function setCallState(text: string): void {
  $("#call-state").textContent = text;
}

// --- the token ----------------------------------------------------------

function wanted(): { room: string; identity: string } | null {
  const form = $("#join-form") as HTMLFormElement;
  if (!form.reportValidity()) return null;
  return { room: input("#join-room").value.trim(), identity: input("#join-identity").value.trim() };
}

async function getToken(): Promise<CreateTokenResponse | null> {
  const want = wanted();
  if (!want) return null;
  clearError();
  const button = $("#get-token") as HTMLButtonElement;
  button.disabled = true;
  try {
    token = await client.createToken({ room: want.room, identity: want.identity, name: want.identity });
    showToken(token);
    return token;
  } catch (error) {
    showError(describe(`Could not get a token for ${want.identity} in ${want.room}`, error));
    return null;
  } finally {
    button.disabled = false;
  }
}

function showToken(t: CreateTokenResponse): void {
  $("#token-identity").textContent = t.identity;
  $("#token-room").textContent = t.room;
  $("#token-server-url").textContent = t.serverUrl;
  $("#token-expires").textContent = t.expiresAt ? dateTime(timestampDate(t.expiresAt)) : "—";
  ($("#token") as HTMLTextAreaElement).value = t.token;
  $("#token-info").hidden = false;
}

/** The token shown, if it is for the room and name asked and still fresh; else a new one. */
async function tokenForJoin(): Promise<CreateTokenResponse | null> {
  const want = wanted();
  if (!want) return null;
  const fresh = token?.expiresAt && timestampDate(token.expiresAt).getTime() > Date.now() + 60_000;
  if (token && fresh && token.room === want.room && token.identity === want.identity) return token;
  return getToken();
}

// --- the call -----------------------------------------------------------

async function joinCall(): Promise<void> {
  if (room || joining) return;
  joining = true;
  const button = $("#join-call") as HTMLButtonElement;
  button.disabled = true;
  try {
    const t = await tokenForJoin();
    if (!t) return;
    clearError();
    $("#call").hidden = false;
    $("#call-room").textContent = t.room;
    setCallState(`connecting to ${t.serverUrl}…`);
    const lk = await import("livekit-client");
    const r = new lk.Room({ adaptiveStream: true, dynacast: true });
    wire(r, lk);
    try {
      await r.connect(t.serverUrl, t.token);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      showError({
        action: `Could not connect to LiveKit at ${t.serverUrl}`,
        code: "",
        message,
        hint: "Is the LiveKit server running and reachable from this browser at that URL (livekit.public_url)?",
      });
      setCallState(`not connected (${clock(new Date())})`);
      void r.disconnect();
      resetCall();
      return;
    }
    room = r;
    setCallState(`connected as ${t.identity}`);
    renderTile(r.localParticipant);
    for (const p of r.remoteParticipants.values()) renderTile(p);
    try {
      await r.localParticipant.enableCameraAndMicrophone();
    } catch (error) {
      showError({
        action: "Joined, but the camera or microphone could not start",
        code: "",
        message: error instanceof Error ? error.message : String(error),
        hint: "Allow this page to use the camera and microphone, then use the buttons below.",
      });
    }
    updateControls();
  } finally {
    joining = false;
    button.disabled = false;
  }
}

function wire(r: Room, lk: typeof import("livekit-client")): void {
  const { RoomEvent, Track } = lk;
  r.on(RoomEvent.ParticipantConnected, (p: RemoteParticipant) => renderTile(p))
    .on(RoomEvent.ParticipantDisconnected, (p: RemoteParticipant) => removeTile(p.identity))
    .on(RoomEvent.TrackSubscribed, (track: RemoteTrack, _pub: RemoteTrackPublication, p: RemoteParticipant) => {
      if (track.kind === Track.Kind.Video) track.attach(videoOf(p));
      else if (track.kind === Track.Kind.Audio) $("#audio-sink").append(track.attach());
      renderTile(p);
    })
    .on(RoomEvent.TrackUnsubscribed, (track: RemoteTrack, _pub: RemoteTrackPublication, p: RemoteParticipant) => {
      for (const el of track.detach()) if (el.parentElement?.id === "audio-sink") el.remove();
      renderTile(p);
    })
    .on(RoomEvent.LocalTrackPublished, (pub: LocalTrackPublication, p: Participant) => {
      if (pub.track && pub.kind === Track.Kind.Video) pub.track.attach(videoOf(p));
      renderTile(p);
      updateControls();
    })
    .on(RoomEvent.LocalTrackUnpublished, (pub: LocalTrackPublication, p: Participant) => {
      pub.track?.detach();
      renderTile(p);
      updateControls();
    })
    .on(RoomEvent.TrackMuted, (_pub: TrackPublication, p: Participant) => {
      renderTile(p);
      updateControls();
    })
    .on(RoomEvent.TrackUnmuted, (_pub: TrackPublication, p: Participant) => {
      renderTile(p);
      updateControls();
    })
    .on(RoomEvent.ActiveSpeakersChanged, (speakers: Participant[]) => {
      const speaking = new Set(speakers.map((s) => s.identity));
      for (const [identity, tile] of tiles) tile.classList.toggle("speaking", speaking.has(identity));
      $("#speaking").textContent = `Speaking: ${speakers.length ? speakers.map(displayName).join(", ") : "nobody"}`;
    })
    .on(RoomEvent.AudioPlaybackStatusChanged, () => {
      $("#start-audio").hidden = r.canPlaybackAudio;
    })
    .on(RoomEvent.Reconnecting, () => setCallState("connection lost; reconnecting…"))
    .on(RoomEvent.Reconnected, () => setCallState(`connected as ${r.localParticipant.identity}`))
    .on(RoomEvent.Disconnected, (reason?: number) => {
      if (room !== r) return;
      const why = reason === undefined ? "" : ` (${lk.DisconnectReason[reason] ?? reason})`;
      setCallState(`left the call at ${clock(new Date())}${why}`);
      resetCall();
    });
}

function resetCall(): void {
  room = null;
  for (const el of $("#audio-sink").querySelectorAll("audio")) el.remove();
  for (const identity of [...tiles.keys()]) removeTile(identity);
  $("#speaking").textContent = "Speaking: nobody";
  updateControls();
}

function displayName(p: Participant): string {
  const name = p.name || p.identity;
  return room && p.identity === room.localParticipant.identity ? `${name} (you)` : name;
}

function tile(p: Participant): HTMLElement {
  let el = tiles.get(p.identity);
  if (!el) {
    const local = room !== null && p.identity === room.localParticipant.identity;
    el = h(
      "figure",
      { class: local ? "tile local" : "tile", "data-identity": p.identity },
      h("video", { autoplay: true, playsinline: true, muted: local }),
      h("div", { class: "placeholder" }, (p.name || p.identity).slice(0, 2).toUpperCase()),
      h("figcaption", {}),
    );
    // muted must be a property for autoplay of the local preview
    (el.querySelector("video") as HTMLVideoElement).muted = local;
    tiles.set(p.identity, el);
    if (local) $("#tiles").prepend(el);
    else $("#tiles").append(el);
  }
  return el;
}

function videoOf(p: Participant): HTMLVideoElement {
  return tile(p).querySelector("video") as HTMLVideoElement;
}

function renderTile(p: Participant): void {
  const el = tile(p);
  const camera = p.isCameraEnabled;
  el.classList.toggle("no-video", !camera);
  const mic = p.isMicrophoneEnabled ? "" : " · microphone off";
  ($("figcaption", el) as HTMLElement).textContent = `${displayName(p)}${mic}`;
  el.classList.toggle("speaking", p.isSpeaking);
}

function removeTile(identity: string): void {
  const el = tiles.get(identity);
  if (!el) return;
  (el.querySelector("video") as HTMLVideoElement).srcObject = null;
  el.remove();
  tiles.delete(identity);
}

function updateControls(): void {
  const inCall = room !== null;
  $(".call-controls").hidden = !inCall;
  $("#speaking").hidden = !inCall;
  const local = room?.localParticipant;
  $("#toggle-mic").textContent = local?.isMicrophoneEnabled ? "Mute microphone" : "Unmute microphone";
  $("#toggle-camera").textContent = local?.isCameraEnabled ? "Stop camera" : "Start camera";
  ($("#join-call") as HTMLButtonElement).hidden = inCall;
  if (!inCall) $("#start-audio").hidden = true;
}

async function toggle(device: "microphone" | "camera"): Promise<void> {
  const local = room?.localParticipant;
  if (!local) return;
  try {
    if (device === "microphone") await local.setMicrophoneEnabled(!local.isMicrophoneEnabled);
    else await local.setCameraEnabled(!local.isCameraEnabled);
  } catch (error) {
    showError({
      action: `Could not switch the ${device}`,
      code: "",
      message: error instanceof Error ? error.message : String(error),
      hint: "",
    });
  }
  if (room) renderTile(room.localParticipant);
  updateControls();
}
