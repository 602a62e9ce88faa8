"""scripts/check-openapi's run: RoomControl beside the LiveKit stand-in,
its REST routes' OpenAPI document validated, then fuzzed by schemathesis.

Started by scripts/check-openapi with the tools' Python; uses the standard
library only and calls the tools as programs. Arguments: the roomcontrol
binary, the livekit-standin binary, the tools' bin directory, the output
directory. Extra arguments after `--` go to schemathesis.
"""

import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

# How long a process may take to say it listens.
START_TIMEOUT_S = 30


def clean_env():
    """The environment minus anything that would configure RoomControl or
    LiveKit from outside the check."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ROOMCONTROL_", "LIVEKIT_")) and key not in ("PORT", "RUST_LOG")
    }


def first_line(process, stream, match, name, log):
    """The first line of `stream` that `match` turns into a value; every line
    also goes to `log`."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        log.write(line)
        log.flush()
        value = match(line)
        if value is not None:
            return value
    process.kill()
    sys.exit(f"check-openapi: {name} did not start (see {log.name})")


def drain(stream, log):
    """Copies the rest of a process's output to its log, in the background."""
    import threading

    def copy():
        for line in stream:
            log.write(line)
        log.flush()

    threading.Thread(target=copy, daemon=True).start()


def listen_address(line):
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry.get("address") or entry.get("fields", {}).get("address")


def main():
    roomcontrol_bin, standin_bin, tools_bin, out_dir = (Path(arg).resolve() for arg in sys.argv[1:5])
    schemathesis_args = sys.argv[6:] if len(sys.argv) > 5 and sys.argv[5] == "--" else []
    out_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    try:
        with tempfile.TemporaryDirectory(prefix="roomcontrol-openapi-") as work:
            standin_log = open(out_dir / "livekit-standin.log", "w")
            standin = subprocess.Popen(
                [standin_bin, "--listen", "127.0.0.1:0", "--seed-rooms", "1", "--seed-tracks"],
                cwd=work,
                env=clean_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            processes.append(standin)
            standin_url = first_line(
                standin,
                standin.stdout,
                lambda line: line.split()[-1] if line.startswith("listening on http://") else None,
                "livekit-standin",
                standin_log,
            )
            drain(standin.stdout, standin_log)

            # Authentication on: one API key with every scope, so the
            # document declares its bearer scheme and 401s, and schemathesis
            # checks that a call without the key is refused.
            key = "rck_" + secrets.token_hex(16)
            config = Path(work) / "roomcontrol.toml"
            config.write_text(
                "[[auth.api_keys]]\n"
                'name = "openapi-check"\n'
                f'hash = "sha256:{hashlib.sha256(key.encode()).hexdigest()}"\n'
                'scopes = ["rooms:read", "rooms:write", "participants:moderate", "tokens:create"]\n'
            )
            roomcontrol_log = open(out_dir / "roomcontrol.log", "w")
            env = clean_env() | {
                "PORT": "0",
                "ROOMCONTROL_CONFIG": str(config),
                "ROOMCONTROL_ADMIN__ENABLED": "false",
                "ROOMCONTROL_LOG__FORMAT": "json",
                "LIVEKIT_URL": standin_url,
                "LIVEKIT_API_KEY": "devkey",
                "LIVEKIT_API_SECRET": "secret",
            }
            roomcontrol = subprocess.Popen(
                [roomcontrol_bin],
                cwd=work,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            processes.append(roomcontrol)
            address = first_line(roomcontrol, roomcontrol.stderr, listen_address, "roomcontrol", roomcontrol_log)
            drain(roomcontrol.stderr, roomcontrol_log)
            base = f"http://{address}"

            document = out_dir / "openapi.json"
            with urllib.request.urlopen(f"{base}/livekit/openapi.json", timeout=10) as response:
                document.write_bytes(response.read())
            print(f"== openapi-spec-validator {document}", flush=True)
            subprocess.run([tools_bin / "openapi-spec-validator", "--schema", "3.1", document], check=True)

            print(f"== schemathesis against {base} (RoomControl and the LiveKit stand-in)", flush=True)
            run = subprocess.run(
                [
                    tools_bin / "schemathesis",
                    "run",
                    f"{base}/livekit/openapi.json",
                    "--checks",
                    "all",
                    # Both assume a resource lives until it is deleted;
                    # LiveKit closes a room by itself once its empty timeout
                    # passes (schemathesis creates rooms with timeouts of 1 s),
                    # and answers an empty participant list for a room that
                    # does not exist, as the NestJS app did.
                    "--exclude-checks",
                    "use_after_free,ensure_resource_availability",
                    # The same cases every run, so a failure is reproducible.
                    "--seed",
                    os.environ.get("CHECK_OPENAPI_SEED", "20261128"),
                    "--header",
                    f"Authorization: Bearer {key}",
                    "--workers",
                    "1",
                    "--no-color",
                    "--report",
                    "junit",
                    "--report-dir",
                    str(out_dir),
                    *schemathesis_args,
                ],
                cwd=out_dir,
            )
            if run.returncode != 0:
                sys.exit(f"check-openapi: schemathesis found problems (logs in {out_dir})")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
