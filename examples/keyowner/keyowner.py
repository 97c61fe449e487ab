#!/usr/bin/env python3
"""keyowner: a clustered application that uses muster's agent for its membership.

It has no clustering code of its own. It follows its agent's event stream
(GET $MUSTER_AGENT_URL/cluster/events, server-sent events), keeps the set of Up
members from it, and answers which member owns a key by rendezvous hashing over
that set: every pod that has seen the same events names the same owner, without
talking to the others. It also keeps a counter in $DATA_DIR, which outlives the pod
when that folder is a persistent volume.

Only Python's standard library is used. HTTP routes (on $LISTEN_ADDR:$PORT):

  GET  /owner/{key}   {"key", "owner", "members"}: the Up member that owns key
                      (503 while no Up member is known)
  GET  /members       this application's view: Up members, every member's status,
                      the leader, the last event id, and whether it is in sync
  GET  /counter       {"value"}: the counter
  POST /counter       adds one to the counter (written to disk before answering)
  GET  /ready         200 once this pod is an Up member in the application's view

Environment:
  MUSTER_AGENT_URL   the agent's management API (the operator sets it), required
  MUSTER_POD_IP      the address to listen on (the operator sets it); default 0.0.0.0
  PORT               default 8080
  DATA_DIR           where the counter is kept; default /data
"""

import hashlib
import http.client
import http.server
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

# Membership states that own keys. A member that is leaving keeps its keys until it
# is gone from the Up set, so owners change once per member, not twice.
OWNING = {"Up"}
# Bounds: concurrent HTTP requests, request body, SSE line and event sizes.
MAX_REQUESTS = 64
MAX_BODY = 4096
MAX_LINE = 64 * 1024
MAX_EVENT = 256 * 1024
# The agent sends a keep-alive comment every 15 s: a silent stream is a dead one.
STREAM_TIMEOUT = 45.0


def log(message, **fields):
    extra = " ".join(f"{k}={v}" for k, v in fields.items())
    print(f"keyowner: {message} {extra}".rstrip(), flush=True)


class Membership:
    """The cluster as the agent's events describe it. Members are keyed by address
    and uid: a restarted pod keeps its address but is a new member, and the removal
    of its old incarnation must not remove the new one."""

    def __init__(self):
        self.lock = threading.Lock()
        self.members = {}  # (address, uid) -> status
        self.leader = None
        self.last_event_id = None
        self.synced = False  # the current state has been received since a (re)sync
        self.events = 0

    def apply(self, name, event_id, data):
        with self.lock:
            self.events += 1
            if name == "Resync":
                # What follows is the current state: start from nothing.
                self.members.clear()
                self.leader = None
                self.synced = False
                if event_id is not None:
                    self.last_event_id = event_id
                return
            if event_id is not None:
                self.last_event_id = event_id
            if name == "LeaderChanged":
                self.leader = data.get("leader")
                return
            member = data.get("member")
            uid = data.get("uid")
            if not isinstance(member, str) or uid is None:
                return
            key = (member, str(uid))
            status = {
                "MemberJoined": "Joining",
                "MemberWeaklyUp": "WeaklyUp",
                "MemberUp": "Up",
                "MemberLeft": "Leaving",
                "MemberExited": "Exiting",
                "MemberDowned": "Down",
            }.get(name)
            if name == "MemberRemoved":
                self.members.pop(key, None)
            elif status is not None:
                self.members[key] = status
            # UnreachableMember / ReachableMember: ownership does not follow
            # reachability (the resolver decides who is out), so nothing changes.

    def mark_synced(self):
        with self.lock:
            self.synced = True

    def up(self):
        with self.lock:
            return sorted({a for (a, _), s in self.members.items() if s in OWNING})

    def view(self):
        with self.lock:
            return {
                "up": sorted({a for (a, _), s in self.members.items() if s in OWNING}),
                "members": [
                    {"address": a, "uid": u, "status": s}
                    for (a, u), s in sorted(self.members.items())
                ],
                "leader": self.leader,
                "lastEventId": self.last_event_id,
                "synced": self.synced,
                "events": self.events,
            }


def owner(key, members):
    """Rendezvous (highest random weight) hashing: the member with the highest
    hash of (member, key) owns key. Adding or removing a member moves only the keys
    that member gains or loses."""
    best = None
    for m in members:
        score = hashlib.sha256(f"{m}\0{key}".encode()).digest()
        if best is None or (score, m) > best:
            best = (score, m)
    return best[1] if best else None


def follow_events(host, port, membership, stop):
    """Follows the agent's event stream for ever, reconnecting with Last-Event-ID
    (after an agent restart the id belongs to an earlier run, and the agent answers
    with Resync and its current state). The agent sends an id only where a stream may
    be resumed: not inside the snapshot it starts with, so a stream cut off there
    resumes from the earlier id and gets the whole snapshot again."""
    agent_url = f"http://{host}:{port}"
    backoff = 0.2
    while not stop.is_set():
        conn = http.client.HTTPConnection(host, port, timeout=STREAM_TIMEOUT)
        try:
            headers = {"Accept": "text/event-stream"}
            if membership.last_event_id:
                headers["Last-Event-ID"] = membership.last_event_id
            conn.request("GET", "/cluster/events", headers=headers)
            resp = conn.getresponse()
            if resp.status != 200:
                raise OSError(f"/cluster/events answered {resp.status}: {resp.read(512)!r}")
            log("following the agent's events", agent=agent_url, resume=membership.last_event_id)
            backoff = 0.2
            read_stream(resp, membership)
            log("the agent closed the event stream; reconnecting")
        except (OSError, http.client.HTTPException, ValueError) as e:
            log("event stream failed; reconnecting", error=repr(e), retry_in=f"{backoff:.1f}s")
            stop.wait(backoff)
            backoff = min(backoff * 2, 5.0)
        finally:
            conn.close()


def read_stream(resp, membership):
    name, event_id, data, size = None, None, [], 0
    while True:
        # HTTPResponse.readline decodes the chunked transfer encoding.
        line = resp.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE:
            raise ValueError("an event line longer than the limit")
        line = line.decode("utf-8").rstrip("\r\n")
        if line == "":
            if data or name:
                dispatch(membership, name or "message", event_id, "\n".join(data))
            name, event_id, data, size = None, None, [], 0
            continue
        if line.startswith(":"):
            continue  # keep-alive
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        size += len(value)
        if size > MAX_EVENT:
            raise ValueError("an event larger than the limit")
        if field == "event":
            name = value
        elif field == "id":
            event_id = value
        elif field == "data":
            data.append(value)


def dispatch(membership, name, event_id, text):
    if name == "Resync":
        membership.apply(name, event_id, {})
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        log("skipping an event that is not JSON", event=name)
        return
    if isinstance(data, dict):
        membership.apply(name, event_id, data)
    # An event after a (re)sync: the view is being rebuilt from the agent's state.
    membership.mark_synced()


class Counter:
    """A number in a file, replaced atomically and synced before an increment is
    acknowledged."""

    def __init__(self, folder):
        self.lock = threading.Lock()
        self.path = os.path.join(folder, "counter")
        os.makedirs(folder, exist_ok=True)
        try:
            with open(self.path) as f:
                self.value = int(f.read().strip() or "0")
        except FileNotFoundError:
            self.value = 0
        except ValueError:
            sys.exit(f"keyowner: {self.path} does not hold a number; fix or remove it")
        log("counter loaded", path=self.path, value=self.value)

    def increment(self):
        with self.lock:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{self.value + 1}\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self.value += 1
            return self.value


def handler_for(membership, counter):
    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 10  # per request: a slow or idle client is disconnected
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, body):
            data = (json.dumps(body) + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            if path.startswith("/owner/") and len(path) > len("/owner/"):
                key = urllib.parse.unquote(path[len("/owner/"):])
                up = membership.up()
                who = owner(key, up)
                if who is None:
                    self.reply(503, {"error": "no Up member known yet"})
                else:
                    self.reply(200, {"key": key, "owner": who, "members": len(up)})
            elif path == "/members":
                self.reply(200, membership.view())
            elif path == "/counter":
                self.reply(200, {"value": counter.value})
            elif path == "/ready":
                ok = any(f"@{self.server.own_host}:" in a for a in membership.up())
                self.reply(200 if ok else 503, {"ready": ok})
            else:
                self.reply(404, {"error": f"no route {path}"})

        def do_POST(self):
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self.reply(400, {"error": "bad Content-Length"})
                return
            if length > MAX_BODY:
                self.reply(413, {"error": "body too large"})
                return
            self.rfile.read(length)
            if urllib.parse.urlsplit(self.path).path == "/counter":
                self.reply(200, {"value": counter.increment()})
            else:
                self.reply(404, {"error": "no route"})

    return Handler


class BoundedServer(http.server.ThreadingHTTPServer):
    """At most MAX_REQUESTS connections are served at once; more are closed."""

    daemon_threads = True
    slots = threading.BoundedSemaphore(MAX_REQUESTS)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def main():
    agent_url = os.environ.get("MUSTER_AGENT_URL")
    if not agent_url:
        sys.exit("keyowner: MUSTER_AGENT_URL is not set (the muster operator sets it beside its agent)")
    agent_host, agent_port = None, 80
    try:
        url = urllib.parse.urlsplit(agent_url)
        if url.scheme == "http":
            agent_host, agent_port = url.hostname, url.port or 80
    except ValueError:
        pass
    if not agent_host:
        sys.exit(f"keyowner: MUSTER_AGENT_URL must be http://host:port, not {agent_url!r}")
    host = os.environ.get("MUSTER_POD_IP") or "0.0.0.0"
    port = int(os.environ.get("PORT", "8080"))
    counter = Counter(os.environ.get("DATA_DIR", "/data"))
    membership = Membership()
    stop = threading.Event()

    socketserver.TCPServer.allow_reuse_address = True
    if ":" in host:
        BoundedServer.address_family = socket.AF_INET6
    server = BoundedServer((host, port), handler_for(membership, counter))
    server.own_host = host

    def on_term(signum, _frame):
        log("stopping", signal=signum)
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    def follow():
        try:
            follow_events(agent_host, agent_port, membership, stop)
        except BaseException as e:  # a dead follower would serve a stale view for ever
            log("the event follower died; exiting", error=repr(e))
            os._exit(1)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    log("listening", address=f"{host}:{port}")
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
