// A Node.js client of rivalis.fleet.v1.FleetControl, loading the repo's .proto at run time.
//
// Usage: FLEET_ADMIN_KEY=... node client.js <host:port> <room type> <room id>
// Prints one JSON object: the results of GetStats, CreateRoom, ReserveSeats,
// ReleaseSeats, DestroyRoom, GetStats
// again, and the status + fleet-cause of a call without a key.
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTO_ROOT = path.resolve(__dirname, "..", "..", "..", "protos");
const DEADLINE_MS = 10_000;

function loadService() {
  const definition = protoLoader.loadSync("rivalis/fleet/v1/control.proto", {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: Number,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).rivalis.fleet.v1.FleetControl;
}

function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + DEADLINE_MS);
    client[method](request, metadata, { deadline }, (error, response) => {
      if (error) reject(error);
      else resolve(response);
    });
  });
}

function failure(error) {
  const cause = error.metadata ? error.metadata.get("fleet-cause") : [];
  return { code: grpc.status[error.code], cause: cause.length ? String(cause[0]) : null };
}

async function main() {
  const [address, roomType, roomId] = process.argv.slice(2);
  const key = process.env.FLEET_ADMIN_KEY;
  if (!address || !roomType || !roomId || !key) {
    throw new Error("usage: FLEET_ADMIN_KEY=... node client.js <host:port> <room type> <room id>");
  }
  const FleetControl = loadService();
  const client = new FleetControl(address, grpc.credentials.createInsecure());
  const auth = new grpc.Metadata();
  auth.set("authorization", `Bearer ${key}`);
  try {
    const result = {};
    result.stats = await call(client, "GetStats", {}, auth);
    result.created = await call(
      client,
      "CreateRoom",
      { type: roomType, room_id: roomId, placement: { strategy: "least-loaded" } },
      auth,
    );
    result.seats = await call(
      client,
      "ReserveSeats",
      { type: roomType, seats: 2, ttl_ms: 60000 },
      auth,
    );
    result.released = await call(
      client,
      "ReleaseSeats",
      { reservation_id: result.seats.reservation.id },
      auth,
    );
    result.destroyed = await call(client, "DestroyRoom", { room_id: roomId }, auth);
    result.statsAfter = await call(client, "GetStats", {}, auth);
    try {
      await call(client, "GetStats", {}, new grpc.Metadata());
      result.unauthenticated = null;
    } catch (error) {
      result.unauthenticated = failure(error);
    }
    process.stdout.write(JSON.stringify(result) + "\n");
  } finally {
    client.close();
  }
}

main().catch((error) => {
  process.stderr.write(`client failed: ${error.message}\n`);
  process.exit(1);
});
