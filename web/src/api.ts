// The grpc-web client for RoomControl, the bearer credential kept in
// sessionStorage, and readable messages for failed calls.

import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { RoomControl } from "./gen/roomcontrol/v1/room_control_pb";

const BEARER_KEY = "roomcontrol.bearer";

/** The credential sent as `authorization: Bearer ...`, or "" for none. */
export function bearer(): string {
  try {
    return sessionStorage.getItem(BEARER_KEY) ?? "";
  } catch {
    return "";
  }
}

/** Keeps the credential for this browser tab's session only ("" forgets it). */
export function setBearer(value: string): void {
  const trimmed = value.trim().replace(/^Bearer\s+/i, "");
  if (trimmed) sessionStorage.setItem(BEARER_KEY, trimmed);
  else sessionStorage.removeItem(BEARER_KEY);
}

const authorization: Interceptor = (next) => async (request) => {
  const credential = bearer();
  if (credential) request.header.set("authorization", `Bearer ${credential}`);
  return next(request);
};

/**
 * RoomControl at the page's own origin: RoomControl serves the console on its
 * main port, next to the grpc-web API (and `npm run dev` proxies the API).
 */
export const apiBaseUrl = window.location.origin;

export const client = createClient(
  RoomControl,
  createGrpcWebTransport({
    baseUrl: apiBaseUrl,
    useBinaryFormat: true,
    interceptors: [authorization],
    defaultTimeoutMs: 15_000,
  }),
);

// gRPC's own names for the codes, as RoomControl's docs and logs write them.
const CODE_NAMES: Record<Code, string> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

export interface Failure {
  /** What was being done, e.g. "Deleting room standup". */
  action: string;
  /** The gRPC code name, e.g. "NOT_FOUND"; "" when the call never got an answer. */
  code: string;
  /** RoomControl's grpc-message, or what went wrong on the way. */
  message: string;
  /** A hint for the person, when there is an obvious next step. */
  hint: string;
}

/** Turns anything a call threw into a readable failure. */
export function describe(action: string, error: unknown): Failure {
  const err = ConnectError.from(error);
  // fetch() itself failed: RoomControl is down or the network is.
  if (err.cause instanceof TypeError && err.code === Code.Unknown) {
    return {
      action,
      code: "",
      message: `RoomControl at ${apiBaseUrl} did not answer (${err.cause.message})`,
      hint: "Is RoomControl running? Reload the page once it is.",
    };
  }
  const code = CODE_NAMES[err.code] ?? `code ${err.code}`;
  let hint = "";
  if (err.code === Code.Unauthenticated) {
    hint = bearer()
      ? "RoomControl refused the bearer token above: check it, or paste a fresh one."
      : "Authentication is on: paste a bearer token or API key above.";
  } else if (err.code === Code.PermissionDenied && errorInfoReason(err) === "BANNED") {
    // The message names the ban, its room, its end and its reason.
    hint = "A ban refuses this identity here, whoever asks: a moderator can lift it under Bans on the room's page.";
  } else if (err.code === Code.PermissionDenied) {
    hint = "The bearer token is valid but lacks the scope or room this needs.";
  } else if (err.code === Code.ResourceExhausted && err.rawMessage.startsWith("rate limit ")) {
    hint = "Too many of these calls in a short time: wait as long as the message says, then try again.";
  } else if (err.code === Code.ResourceExhausted && err.details.some((d) => "type" in d && d.type === "google.rpc.RetryInfo")) {
    // The message names the limit that was hit; RetryInfo says it passes.
    hint = "RoomControl refused the call to stay within a limit: try again shortly.";
  } else if (err.code === Code.FailedPrecondition && err.rawMessage.startsWith("LiveKit has no egress service")) {
    hint = "Recordings and streams need an egress worker beside LiveKit, both on the same Redis; ask whoever runs LiveKit.";
  } else if (err.code === Code.Unavailable && err.rawMessage.startsWith("no LiveKit egress worker")) {
    hint = "LiveKit has egress, but no worker took this one: try again in a moment, or check the egress workers.";
  } else if (err.code === Code.NotFound && / is not live: /.test(err.rawMessage)) {
    hint = "Start the room first (Create a room, or let someone join), then try again.";
  } else if (err.code === Code.DeadlineExceeded && err.rawMessage.startsWith("LiveKit did not answer")) {
    // For recordings, LiveKit itself waits about 20 s for an egress worker.
    hint = "RoomControl stopped waiting for LiveKit: try again, or check LiveKit (and its egress workers, for recordings).";
  }
  return { action, code, message: err.rawMessage || "(no message)", hint };
}

/**
 * The `reason` of RoomControl's google.rpc.ErrorInfo detail (e.g. "BANNED"),
 * or "". The generated client has no google.rpc types, so the detail is read
 * by hand: ErrorInfo's field 1 is its reason.
 */
function errorInfoReason(err: ConnectError): string {
  for (const detail of err.details) {
    if (!("type" in detail) || detail.type !== "google.rpc.ErrorInfo") continue;
    try {
      const reader = new BinaryReader(detail.value);
      while (reader.pos < reader.len) {
        const [field, wireType] = reader.tag();
        if (field === 1 && wireType === WireType.LengthDelimited) return reader.string();
        reader.skip(wireType);
      }
    } catch {
      // not an ErrorInfo after all: no reason
    }
  }
  return "";
}

/** One line: "NOT_FOUND: LiveKit DeleteRoom: requested room does not exist". */
export function failureText(f: Failure): string {
  return f.code ? `${f.code}: ${f.message}` : f.message;
}
