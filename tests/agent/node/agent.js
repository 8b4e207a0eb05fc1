// A Node.js agent of rivalis-fleet, written from protos/ and docs/matchmaking.md only: it
// loads protos/rivalis/fleet/v3/agent.proto at run time (protobufjs), speaks the agent wire
// protocol over `ws`, computes the canonical snapshot hash itself, and verifies seat tickets
// with node:crypto as docs/matchmaking.md §4 says.
//
// Usage: FLEET_AGENT_KEY=... node agent.js <orchestrator ws url> <config.json>
// config: {"name", "endpointUrl", "labels", "roomTypes", "rooms": [{"id", "type",
//          "connections", "metadata"?, "maxConnections"?, "locked"?}], "tickets": [{"room",
//          "ticket"}]}
// Prints one JSON object per line: {"event": "ticket" | "hello" | "state" | "create" |
// "destroy" | "closed", ...}. Exits when stdin ends (closing with 1000, a clean leave) or
// when the orchestrator closes the socket.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const protobuf = require("protobufjs");
const WebSocket = require("ws");

const PROTO = path.resolve(__dirname, "..", "..", "..", "protos", "rivalis", "fleet", "v3", "agent.proto");
const PROTOCOL_MAJOR = 3;
const SUBPROTOCOL = "rivalis-fleet.v1";
const TICKET_LABEL = "rivalis-fleet seat ticket v1";
const B64URL = /^[A-Za-z0-9_-]+$/;

function emit(event) {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

// --- canonical JSON (SPEC §2, docs/matchmaking.md §1) --------------------------------

function byCodePoint(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i += 1) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

// No whitespace, keys sorted by code point at every depth, integral numbers as integers,
// NaN/±inf as null. (Numbers here are integers or plain decimals; exponent forms differ
// between JavaScript and Python and are not used.)
function canonical(value) {
  if (value === null || typeof value === "boolean" || typeof value === "string") {
    return JSON.stringify(value);
  }
  if (typeof value === "number") return Number.isFinite(value) ? JSON.stringify(value) : "null";
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  const keys = Object.keys(value).sort(byCodePoint);
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
}

function objectText(value) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error("not a JSON object");
  }
  const text = canonical(value);
  return text === "{}" ? "" : text;
}

function hash64(text) {
  return crypto.createHash("sha256").update(text, "utf8").digest("hex").slice(0, 16);
}

// --- seat tickets (docs/matchmaking.md §4) -------------------------------------------

class TicketError extends Error {}

function ticketKey(agentKey) {
  return crypto.createHmac("sha256", Buffer.from(agentKey, "utf8")).update(TICKET_LABEL).digest();
}

function isCount(value) {
  return Number.isInteger(value) && value >= 0;
}

function readClaims(parts) {
  if (parts.length !== 3 || parts[0] !== "v1" || !B64URL.test(parts[1]) || !B64URL.test(parts[2])) {
    throw new TicketError("malformed ticket");
  }
  let claims;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(Buffer.from(parts[1], "base64url"));
    claims = JSON.parse(text);
  } catch {
    throw new TicketError("malformed ticket");
  }
  const ok =
    claims !== null &&
    typeof claims === "object" &&
    !Array.isArray(claims) &&
    claims.v === 1 &&
    typeof claims.id === "string" &&
    claims.id.length > 0 &&
    typeof claims.room === "string" &&
    claims.room.length > 0 &&
    isCount(claims.seats) &&
    isCount(claims.exp);
  if (!ok) throw new TicketError("malformed ticket");
  return claims;
}

// The checks in the documented order; each failure changes nothing.
function acceptTicket(key, accepted, roomId, ticket) {
  const parts = typeof ticket === "string" ? ticket.split(".") : [];
  const claims = readClaims(parts);
  const signature = Buffer.from(parts[2], "base64url");
  const expected = crypto.createHmac("sha256", key).update(`${parts[0]}.${parts[1]}`, "ascii").digest();
  if (signature.length !== expected.length || !crypto.timingSafeEqual(signature, expected)) {
    throw new TicketError("bad signature");
  }
  if (claims.room !== roomId) throw new TicketError("ticket for another room");
  if (claims.exp <= Date.now()) throw new TicketError("expired ticket");
  if (accepted.has(claims.id)) throw new TicketError("ticket already used");
  accepted.set(claims.id, claims.exp);
  return { id: claims.id, room_id: roomId, seats: claims.seats, expires_at: claims.exp };
}

// --- the agent ---------------------------------------------------------------------

class NodeAgent {
  constructor(config, key) {
    const root = new protobuf.Root().loadSync(PROTO, { keepCase: true });
    this.Frame = root.lookupType("rivalis.fleet.v3.Frame");
    this.config = config;
    this.processUid = `p_${crypto.randomBytes(12).toString("hex")}`;
    this.status = "active";
    this.seq = 0;
    this.rooms = new Map();
    this.accepted = new Map(); // reservation id -> expiry (ms)
    this.key = ticketKey(key);
    for (const room of config.rooms || []) this.addRoom(room, "local");
  }

  addRoom(room, origin) {
    this.rooms.set(room.id, {
      id: room.id,
      type: room.type,
      connections: room.connections || 0,
      origin,
      metadata: room.metadata ? objectText(room.metadata) : "",
      maxConnections: room.maxConnections ?? null,
      locked: room.locked === true,
    });
  }

  presentTickets() {
    (this.config.tickets || []).forEach(({ room, ticket }, index) => {
      try {
        const reservation = acceptTicket(this.key, this.accepted, room, ticket);
        emit({ event: "ticket", index, ok: true, reservation });
      } catch (error) {
        if (!(error instanceof TicketError)) throw error;
        emit({ event: "ticket", index, ok: false, reason: error.message });
      }
    });
  }

  acceptedIds() {
    const now = Date.now();
    for (const [id, exp] of this.accepted) if (exp <= now) this.accepted.delete(id);
    return [...this.accepted.keys()].sort(byCodePoint);
  }

  sortedRooms() {
    return [...this.rooms.values()].sort((a, b) => byCodePoint(a.id, b.id));
  }

  snapshotHash(rooms, accepted) {
    const c = this.config;
    const value = {
      name: c.name,
      processUid: this.processUid,
      agentVersion: "node-1.0.0",
      protocolVersion: PROTOCOL_MAJOR,
      endpointUrl: c.endpointUrl,
      labels: c.labels || {},
      capacity: { maxConnections: null, maxRooms: null },
      autoCreate: true,
      roomTypes: [...c.roomTypes].sort(byCodePoint),
      rooms: rooms.map((r) => {
        const entry = { id: r.id, type: r.type, connections: r.connections, origin: r.origin };
        if (r.metadata) entry.metadata = JSON.parse(r.metadata);
        if (r.maxConnections !== null) entry.maxConnections = r.maxConnections;
        if (r.locked) entry.locked = true;
        return entry;
      }),
      status: this.status,
    };
    if (accepted.length > 0) value.acceptedReservations = accepted;
    return hash64(canonical(value));
  }

  state(poll) {
    const rooms = this.sortedRooms();
    const accepted = this.acceptedIds();
    const hash = this.snapshotHash(rooms, accepted);
    this.seq += 1;
    const known = poll.known_hash;
    const full = known === null || known === undefined || known !== hash;
    emit({ event: "state", seq: this.seq, full, hash });
    if (!full) return { req_id: poll.req_id, full: false, seq: this.seq, hash };
    const c = this.config;
    return {
      req_id: poll.req_id,
      full: true,
      seq: this.seq,
      hash,
      name: c.name,
      process_uid: this.processUid,
      agent_version: "node-1.0.0",
      protocol_version: PROTOCOL_MAJOR,
      endpoint_url: c.endpointUrl,
      labels: c.labels || {},
      capacity: {},
      auto_create: true,
      room_types: [...c.roomTypes].sort(byCodePoint),
      rooms: rooms.map((r) => {
        const room = { id: r.id, type: r.type, connections: r.connections, origin: r.origin };
        room.metadata = r.metadata;
        if (r.maxConnections !== null) room.max_connections = r.maxConnections;
        room.locked = r.locked;
        return room;
      }),
      status: this.status,
      accepted_reservations: accepted,
    };
  }

  command(cmd) {
    const ack = { cmd_id: cmd.cmd_id, ok: true };
    if (cmd.op === "create") {
      let options = {};
      try {
        options = cmd.options ? JSON.parse(cmd.options) : {};
        objectText(options);
      } catch {
        return { cmd_id: cmd.cmd_id, ok: false, error: "options must be a JSON object" };
      }
      const id = cmd.room_id || `r_node${this.rooms.size}`;
      if (this.rooms.has(id)) return { cmd_id: cmd.cmd_id, ok: false, exists: true, error: "exists" };
      this.addRoom({ id, type: cmd.room_type, metadata: options }, "fleet");
      emit({ event: "create", room_id: id, room_type: cmd.room_type, options });
      ack.room = { id, type: cmd.room_type };
    } else if (cmd.op === "destroy") {
      ack.already_gone = !this.rooms.delete(cmd.room_id);
      emit({ event: "destroy", room_id: cmd.room_id });
    } else if (cmd.op === "drain" || cmd.op === "undrain") {
      this.status = cmd.op === "drain" ? "draining" : "active";
    } else {
      return { cmd_id: cmd.cmd_id, ok: false, error: `unknown command op ${cmd.op}` };
    }
    return ack;
  }

  encode(body) {
    const payload = this.Frame.encode(this.Frame.create(body)).finish();
    return Buffer.concat([Buffer.from([PROTOCOL_MAJOR, 0]), Buffer.from(payload)]);
  }

  reply(data) {
    if (data.length < 2 || data[0] !== PROTOCOL_MAJOR) return null;
    const frame = this.Frame.decode(data.subarray(2));
    if (frame.hello) {
      if (frame.hello.protocol_version !== PROTOCOL_MAJOR) throw new Error("protocol mismatch");
      this.seq = 0;
      emit({ event: "hello", instance_id: frame.hello.instance_id });
      return null;
    }
    if (frame.poll) return this.encode({ state: this.state(frame.poll) });
    if (frame.cmd) return this.encode({ ack: this.command(frame.cmd) });
    return null;
  }
}

function main() {
  const [url, configPath] = process.argv.slice(2);
  const key = process.env.FLEET_AGENT_KEY;
  if (!url || !configPath || !key) {
    throw new Error("usage: FLEET_AGENT_KEY=... node agent.js <ws url> <config.json>");
  }
  const agent = new NodeAgent(JSON.parse(fs.readFileSync(configPath, "utf8")), key);
  agent.presentTickets();
  const ws = new WebSocket(url, [SUBPROTOCOL, key]);
  ws.binaryType = "nodebuffer";
  ws.on("message", (data) => {
    const out = agent.reply(data);
    if (out !== null) ws.send(out);
  });
  ws.on("close", (code) => {
    emit({ event: "closed", code });
    process.exit(0);
  });
  ws.on("error", (error) => {
    process.stderr.write(`${error.message}\n`);
    process.exit(1);
  });
  process.stdin.resume();
  process.stdin.on("end", () => ws.close(1000));
}

main();
