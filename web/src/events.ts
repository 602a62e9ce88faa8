// Following RoomControl's timeline live (WatchEvents) through stream ends,
// errors and reconnects. The follower keeps the last cursor it saw (from an
// event, a heartbeat, the snapshot's end or the server's resume_cursor) and
// resumes after it, so across a reconnect no event is missed and none is
// delivered twice.

import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import { client, describe, type Failure } from "./api";
import type { Event, Participant, Room } from "./gen/roomcontrol/v1/room_control_pb";

/** What the person is told about a follower's stream. */
export type FollowState =
  | { kind: "connecting"; resuming: boolean }
  | { kind: "live"; since: Date }
  /** The stream ended or failed; the next try is at `retryAt`. */
  | { kind: "retrying"; failure: Failure; retryAt: Date }
  /** Refused for good (credential, scope, an old server): waits for restart(). */
  | { kind: "off"; failure: Failure };

export interface FollowOptions {
  /** What the follower is for, in failure messages: "Watching room-1's events". */
  action: string;
  /** Only events of these rooms; empty: every room the credential may touch. */
  rooms?: string[];
  /** Only events of these types; empty: every type. */
  types?: string[];
  /** Start after this cursor (replaying what was stored since); unset: from now on. */
  since?: bigint;
  /**
   * On a first connection (no cursor yet), ask for the rooms live now
   * (include_current_state): the snapshot ends with a cursor at once, so a
   * stream that breaks before its first heartbeat still resumes exactly.
   */
  currentState?: boolean;
  onEvent(event: Event): void;
  onState(state: FollowState): void;
  onSnapshot?(room: Room | undefined, participants: Participant[]): void;
  /** The cursor was older than the retention: events in between are lost. */
  onGap?(failure: Failure): void;
}

/** The first wait after a failure; doubles up to MAX_BACKOFF_MS. */
const FIRST_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30_000;
/**
 * A stream that delivers nothing (not even a heartbeat, every 5 s by
 * default: events.heartbeat_interval) for this long is taken as dead and
 * replaced.
 */
const SILENCE_MS = 45_000;

/** Codes that retrying with the same request cannot fix. */
const FINAL = new Set<Code>([
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.InvalidArgument,
  Code.Unimplemented,
]);

export class EventFollower {
  /** Every matching event up to here was delivered. */
  cursor: bigint | undefined;
  private readonly options: FollowOptions;
  /** Bumped by start(), stop() and restart(): an older loop stops. */
  private generation = 0;
  private abort: AbortController | null = null;

  constructor(options: FollowOptions) {
    this.options = options;
    this.cursor = options.since;
  }

  get running(): boolean {
    return this.abort !== null;
  }

  /** Starts following (resuming after the cursor kept, if any). */
  start(): void {
    if (this.abort) return;
    const generation = ++this.generation;
    this.abort = new AbortController();
    void this.loop(generation, this.abort.signal);
  }

  /** Stops; the cursor is kept, so start() resumes where this left off. */
  stop(): void {
    this.generation++;
    this.abort?.abort();
    this.abort = null;
  }

  /** A new stream now (new credentials, or a retry the person asked for). */
  restart(): void {
    this.stop();
    this.start();
  }

  private async loop(generation: number, stopped: AbortSignal): Promise<void> {
    const current = () => generation === this.generation;
    let backoff = FIRST_BACKOFF_MS;
    let firstTry = true;
    while (current()) {
      this.options.onState({ kind: "connecting", resuming: this.cursor !== undefined });
      let failure: Failure;
      let delivered = false;
      const call = new AbortController();
      const onStop = () => call.abort();
      stopped.addEventListener("abort", onStop);
      let silence: ReturnType<typeof setTimeout> | undefined;
      let silent = false;
      const resetSilence = () => {
        clearTimeout(silence);
        silence = setTimeout(() => {
          silent = true;
          call.abort();
        }, SILENCE_MS);
      };
      try {
        resetSilence();
        const stream = client.watchEvents(
          {
            rooms: this.options.rooms ?? [],
            types: this.options.types ?? [],
            sinceCursor: this.cursor,
            // Only on the very first try: a snapshot asks LiveKit, which
            // may be what is down.
            includeCurrentState: Boolean(this.options.currentState) && this.cursor === undefined && firstTry,
          },
          {
            signal: call.signal,
            // A stream has no deadline (the transport's default is for unary calls).
            timeoutMs: 0,
            onHeader: () => {
              if (current()) this.options.onState({ kind: "live", since: new Date() });
            },
          },
        );
        for await (const reply of stream) {
          if (!current()) return;
          resetSilence();
          delivered = true;
          const message = reply.message;
          switch (message.case) {
            case "event": {
              const event = message.value;
              if (this.cursor !== undefined && event.cursor <= this.cursor) break;
              this.cursor = event.cursor;
              this.options.onEvent(event);
              break;
            }
            case "heartbeat":
              this.advance(message.value.cursor);
              break;
            case "snapshot":
              this.options.onSnapshot?.(message.value.room, message.value.participants);
              break;
            case "snapshotEnd":
              this.advance(message.value.cursor);
              break;
          }
        }
        failure = { action: this.options.action, code: "", message: "the stream ended", hint: "" };
      } catch (error) {
        if (!current()) return;
        const err = ConnectError.from(error);
        if (silent) {
          failure = {
            action: this.options.action,
            code: "",
            message: `nothing received for ${SILENCE_MS / 1000} s (not even a heartbeat)`,
            hint: "",
          };
        } else {
          failure = describe(this.options.action, err);
          // "Reload the page" does not apply: the follower tries again itself.
          if (!FINAL.has(err.code)) failure.hint = "";
          const info = errorInfo(err);
          const resume = info.get("resume_cursor");
          if (resume !== undefined && /^\d+$/.test(resume)) this.advance(BigInt(resume));
          if (err.code === Code.OutOfRange) {
            // Pruned past our cursor: start afresh from now on.
            this.cursor = undefined;
            this.options.onGap?.(failure);
          } else if (FINAL.has(err.code)) {
            this.options.onState({ kind: "off", failure });
            this.abort = null;
            return;
          }
        }
      } finally {
        clearTimeout(silence);
        stopped.removeEventListener("abort", onStop);
        call.abort();
      }
      if (!current()) return;
      firstTry = false;
      // A stream that worked for a while is retried at once (after a
      // moment); one that keeps failing waits longer each time.
      if (delivered) backoff = FIRST_BACKOFF_MS;
      const wait = Math.round(backoff * (0.8 + Math.random() * 0.4));
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      this.options.onState({ kind: "retrying", failure, retryAt: new Date(Date.now() + wait) });
      await sleep(wait, stopped);
    }
  }

  private advance(cursor: bigint): void {
    if (this.cursor === undefined || cursor > this.cursor) this.cursor = cursor;
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done);
  });
}

/**
 * The metadata of a google.rpc.ErrorInfo detail (RoomControl's
 * resume_cursor, oldest_cursor), decoded by hand: the console has no
 * generated code for google/rpc.
 */
export function errorInfo(err: ConnectError): Map<string, string> {
  const metadata = new Map<string, string>();
  for (const detail of err.details) {
    if (!("type" in detail) || detail.type !== "google.rpc.ErrorInfo") continue;
    try {
      const reader = new BinaryReader(detail.value);
      while (reader.pos < reader.len) {
        const [field, wireType] = reader.tag();
        if (field !== 3 || wireType !== WireType.LengthDelimited) {
          reader.skip(wireType, field);
          continue;
        }
        // map<string, string> metadata = 3: entries of key = 1, value = 2
        const entry = new BinaryReader(reader.bytes());
        let key = "";
        let value = "";
        while (entry.pos < entry.len) {
          const [f, w] = entry.tag();
          if (f === 1 && w === WireType.LengthDelimited) key = entry.string();
          else if (f === 2 && w === WireType.LengthDelimited) value = entry.string();
          else entry.skip(w, f);
        }
        metadata.set(key, value);
      }
    } catch {
      // a detail that does not decode says nothing
    }
  }
  return metadata;
}
