#!/usr/bin/env python3
"""Writes the hand-made seed inputs in corpus/<target>/ (committed).

Each seed is a small valid input in the shape its target reads, so the
fuzzers start from requests, frames, credentials and replies that get past
the first check. Run it again after changing a target's input format:
    python3 fuzz/make_seeds.py
"""

import base64
import hashlib
import hmac
import json
import pathlib
import struct

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(tag, value):
    """One protobuf field: bytes/str/message as length-delimited, int/bool as varint."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return varint(tag << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(tag << 3 | 2) + varint(len(value)) + value


def msg(*fields):
    return b"".join(field(tag, value) for tag, value in fields)


def entry(key, value):
    """A map<string, string> entry."""
    return msg((1, key), (2, value))


# The 13 RoomControl requests, in RPCS order.
PERMISSION = msg((4, 1), (4, 2), (1, True), (2, True))
REQUESTS = [
    ("create_room", msg((1, "demo"), (2, 300), (3, 20), (4, 10), (5, '{"topic":"standup"}'))),
    ("list_rooms", msg((1, "demo"), (1, "lobby"))),
    ("get_room", msg((1, "demo"))),
    ("delete_room", msg((1, "demo"))),
    ("update_room_metadata", msg((1, "demo"), (2, '{"topic":"retro"}'))),
    ("list_participants", msg((1, "demo"))),
    ("get_participant", msg((1, "demo"), (2, "alice"))),
    ("remove_participant", msg((1, "demo"), (2, "alice"))),
    (
        "update_participant",
        msg((1, "demo"), (2, "alice"), (3, '{"role":"host"}'), (4, "Alice"), (5, entry("team", "blue")), (6, PERMISSION)),
    ),
    ("mute_published_track", msg((1, "demo"), (2, "alice"), (3, "TR_VCbXpRdsFbGz"), (4, True))),
    ("update_subscriptions", msg((1, "demo"), (2, "bob"), (3, "TR_VCbXpRdsFbGz"), (3, "TR_AmkGzX2d7aPq"), (4, True))),
    (
        "send_data",
        msg((1, "demo"), (2, b"hello"), (3, True), (4, "alice"), (5, "chat"), (6, bytes(range(16)))),
    ),
    (
        "create_token",
        msg(
            (1, "demo"),
            (2, "alice"),
            (3, "Alice"),
            (4, '{"role":"guest"}'),
            (5, entry("team", "blue")),
            (6, msg((1, 3600))),
            (7, msg((1, True), (2, True), (3, False), (4, 1), (4, 2), (5, True), (6, False))),
        ),
    ),
]
# Requests that break rules, so the violations path starts covered too.
BROKEN = [
    ("create_room_empty_name", 0, msg((5, "{}"))),
    ("update_participant_nothing", 8, msg((1, "demo"), (2, "alice"))),
    ("send_data_short_nonce", 11, msg((1, "demo"), (6, b"short"))),
    ("create_token_bad_ttl", 12, msg((1, "demo"), (2, "alice"), (6, msg((1, 5), (2, -1 & 0xFFFFFFFFFFFFFFFF))))),
]

CONTENT_TYPES = ["application/grpc-web", "application/grpc-web+proto", "application/grpc-web-text"]


def frame(flags, payload):
    return bytes([flags]) + struct.pack(">I", len(payload)) + payload


# The credentials target's fixture (fuzz_targets/credentials.rs).
API_KEY = "rck_FuzzKeyOne0000000000000000000000"
ISSUER = "https://login.example.com/"
SECRET = b"fuzzing-shared-secret-of-32-bytes"
EXP = 4102444800  # 2100-01-01: the seed stays valid.


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(alg, claims):
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    head = b64url(json.dumps({"typ": "JWT", "alg": alg}).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(SECRET, f"{head}.{body}".encode(), digest).digest()
    return f"{head}.{body}.{b64url(signature)}"


def twirp_error(code, text):
    return json.dumps({"code": code, "msg": text}).encode()


def status_bytes(code):
    """The livekit_replies target's first two bytes for a status other than 200."""
    return struct.pack(">H", 0x8000 | code)


def main():
    seeds = {name: {} for name in ["rpc_requests", "credentials", "grpc_web_framing", "livekit_replies"]}

    for index, (name, body) in enumerate(REQUESTS):
        seeds["rpc_requests"][name] = bytes([index]) + body
        seeds["grpc_web_framing"][name] = bytes([index]) + frame(0, body)
    for name, index, body in BROKEN:
        seeds["rpc_requests"][name] = bytes([index]) + body
        seeds["grpc_web_framing"][name] = bytes([index]) + frame(0, body)
    create_token = REQUESTS[12][1]
    seeds["grpc_web_framing"]["create_token_proto"] = bytes([12 + 13]) + frame(0, create_token)
    seeds["grpc_web_framing"]["create_token_text"] = bytes([12 + 26]) + base64.b64encode(frame(0, create_token))
    seeds["grpc_web_framing"]["get_room_compressed_flag"] = bytes([2]) + frame(1, REQUESTS[2][1])
    seeds["grpc_web_framing"]["get_room_two_frames"] = bytes([2]) + frame(0, REQUESTS[2][1]) * 2
    seeds["grpc_web_framing"]["get_room_trailers_frame"] = bytes([2]) + frame(0x80, b"grpc-status: 0\r\n")
    seeds["grpc_web_framing"]["empty_body"] = bytes([5])

    claims = {
        "iss": ISSUER,
        "aud": "roomcontrol",
        "sub": "user-123",
        "name": "Alice",
        "exp": EXP,
        "nbf": 1700000000,
        "scope": "rooms:read tokens:create:self",
        "rooms": ["demo", "support-*"],
    }
    seeds["credentials"]["api_key"] = f"Bearer {API_KEY}".encode()
    seeds["credentials"]["jwt_hs256"] = f"Bearer {jwt('HS256', claims)}".encode()
    moderator = dict(claims, aud=["other", "roomcontrol"], scope=["moderator"], realm_access={"roles": ["x"]})
    del moderator["rooms"]
    seeds["credentials"]["jwt_hs512_array_claims"] = f"bearer {jwt('HS512', moderator)}".encode()
    seeds["credentials"]["jwt_bad_signature"] = f"Bearer {jwt('HS256', claims)[:-4]}AAAA".encode()
    seeds["credentials"]["garbage"] = b"\xff\x00Bearer \x01a.b.c"
    seeds["credentials"]["basic"] = b"Basic dXNlcjpwYXNz"

    room = msg((1, "RM_abc123"), (2, "demo"), (3, 300), (14, 20), (4, 10), (5, 1700000000), (8, "{}"), (9, 2))
    track = msg((1, "TR_VCbXpRdsFbGz"), (2, 2), (3, "camera"), (4, True))
    participant = msg((1, "PA_abc123"), (2, "alice"), (3, 2), (4, track), (5, "{}"), (6, 1700000000), (9, "Alice"))
    seeds["livekit_replies"]["list_rooms_ok"] = b"\x00\x00\x00" + msg((1, room), (1, room))
    seeds["livekit_replies"]["mute_ok"] = b"\x00\x00\x01" + msg((1, track))
    seeds["livekit_replies"]["send_data_ok"] = b"\x00\x00\x02"
    seeds["livekit_replies"]["participant_ok"] = b"\x00\x00\x03" + participant
    seeds["livekit_replies"]["room_ok"] = b"\x00\x00\x04" + room
    seeds["livekit_replies"]["not_found"] = status_bytes(404) + b"\x03" + twirp_error("not_found", "participant not found")
    seeds["livekit_replies"]["unauthorized"] = status_bytes(401) + b"\x00" + twirp_error("unauthenticated", "invalid token")
    seeds["livekit_replies"]["unauthorized_plain"] = status_bytes(401) + b"\x00" + b"unauthorized"
    seeds["livekit_replies"]["bad_gateway_html"] = status_bytes(502) + b"\x04" + b"<html>502 Bad Gateway</html>"
    seeds["livekit_replies"]["unknown_code"] = status_bytes(500) + b"\x02" + twirp_error("something_new", "")

    for target, files in seeds.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (directory / name).write_bytes(data)


if __name__ == "__main__":
    main()
