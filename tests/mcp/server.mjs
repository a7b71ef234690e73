// A small MCP server of test tools, run by tests/mcp.rs as an MCP server that
// Punie's sessions connect to, over stdio (the default) or Streamable HTTP
// (`--http`, on `--port N` or any free port). `--crash-on-start` makes it
// fail before it speaks any protocol;
// `--linger` keeps it running after stdin closes, until a signal stops it;
// `--spawn-child` starts a child that shares its stdout and outlives it
// (appending "child <pid>" to MCP_STARTED_FILE);
// `--unknown-session-400` answers a session it does not know with 400 and
// an error without an id, as some servers do after a restart.
//
// Environment it reads:
//   MCP_STARTED_FILE     stdio mode appends "started <pid>" here on start
//   MCP_WAIT_FILE        the `wait` tool appends "waiting <pid>", then "aborted"
//   MCP_REQUIRE_HEADER   "Name: value"; HTTP mode answers 401 to requests without it
//   PUNIE_TEST_GREETING  echoed by the `whereami` tool

import { spawn } from "node:child_process";
import { appendFileSync } from "node:fs";
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

// A 1×1 opaque red PNG.
const PIXEL_PNG =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";

const text = (t) => ({ type: "text", text: t });

function buildServer() {
  const server = new McpServer({ name: "punie-test-tools", version: "1.0.0" });

  server.registerTool(
    "add",
    { title: "Add", description: "Adds two numbers.", inputSchema: { a: z.number(), b: z.number() } },
    async ({ a, b }) => ({ content: [text(String(a + b))] }),
  );

  server.registerTool(
    "whereami",
    {
      title: "Where am I",
      description: "Tells the server's working directory, PUNIE_TEST_GREETING and the client's name.",
    },
    async () => ({
      content: [
        text(
          `cwd=${process.cwd()} greeting=${process.env.PUNIE_TEST_GREETING ?? "unset"} ` +
            `client=${server.server.getClientVersion()?.name}`,
        ),
      ],
    }),
  );

  server.registerTool(
    "peek",
    {
      title: "Peek",
      description: "Reads nothing, changes nothing: marked read-only.",
      annotations: { readOnlyHint: true },
    },
    async () => ({ content: [text("nothing to see")] }),
  );

  server.registerTool(
    "fail",
    { title: "Fail", description: "Always fails, reporting the failure as a tool error." },
    async () => ({ isError: true, content: [text("the tool failed on purpose")] }),
  );

  server.registerTool(
    "wait",
    { title: "Wait", description: "Never finishes on its own; ends only when the call is cancelled." },
    // Without an inputSchema the SDK passes only `extra` (with the abort signal).
    async (extra) => {
      const file = process.env.MCP_WAIT_FILE;
      if (file) appendFileSync(file, `waiting ${process.pid}\n`);
      // A bare promise holds no handle, so it does not keep the process alive.
      await new Promise((resolve) => {
        if (extra.signal.aborted) resolve();
        else extra.signal.addEventListener("abort", resolve, { once: true });
      });
      if (file) appendFileSync(file, "aborted\n");
      return { content: [text("aborted")] };
    },
  );

  server.registerTool(
    "grow",
    { title: "Grow", description: "Adds the tool `extra`; the SDK tells the client its tools changed." },
    async () => {
      server.registerTool(
        "extra",
        { title: "Extra", description: "There once `grow` was called." },
        async () => ({ content: [text("extra here")] }),
      );
      return { content: [text("grown")] };
    },
  );

  server.registerTool(
    "quit",
    { title: "Quit", description: "Answers, then ends the server's process, as a crash would." },
    async () => {
      setTimeout(() => process.exit(1), 10);
      return { content: [text("bye")] };
    },
  );

  server.registerTool(
    "crash",
    { title: "Crash", description: "Ends the server's process in the middle of the call, unanswered." },
    async () => process.exit(1),
  );

  // After `stall`, the server says its tools changed and never again
  // answers tools/list, as a server stuck on a backend does.
  let stalled = false;
  server.registerTool(
    "stall",
    { title: "Stall", description: "Says the tools changed, then leaves tools/list unanswered." },
    async () => {
      stalled = true;
      server.sendToolListChanged();
      return { content: [text("stalled")] };
    },
  );
  const listTools = server.server._requestHandlers.get("tools/list");
  server.server._requestHandlers.set("tools/list", (request, extra) =>
    stalled ? new Promise(() => {}) : listTools(request, extra),
  );

  server.registerTool(
    "big",
    {
      title: "Big",
      description: "Returns a text of the given number of 'x' characters.",
      inputSchema: { bytes: z.number().int().nonnegative() },
    },
    async ({ bytes }) => ({ content: [text("x".repeat(bytes))] }),
  );

  server.registerTool(
    "picture",
    { title: "Picture", description: "Returns a 1×1 PNG image and a caption." },
    async () => ({
      content: [{ type: "image", data: PIXEL_PNG, mimeType: "image/png" }, text("a picture")],
    }),
  );

  return server;
}

// "Name: value" → [lower-case name, value], or null when unset.
function requiredHeader() {
  const spec = process.env.MCP_REQUIRE_HEADER;
  if (!spec) return null;
  const colon = spec.indexOf(":");
  if (colon < 0) throw new Error(`MCP_REQUIRE_HEADER must be "Name: value", got ${spec}`);
  return [spec.slice(0, colon).trim().toLowerCase(), spec.slice(colon + 1).trim()];
}

async function serveHttp() {
  const required = requiredHeader();
  const sessions = new Map(); // session id → transport

  const http = createServer(async (req, res) => {
    const reply = (status, body) => res.writeHead(status, { "content-type": "text/plain" }).end(body);
    try {
      if (new URL(req.url, "http://x").pathname !== "/mcp") return reply(404, "not found\n");
      if (required && req.headers[required[0]] !== required[1]) {
        return reply(401, `missing or wrong header ${required[0]}\n`);
      }
      const id = req.headers["mcp-session-id"];
      let transport;
      if (id !== undefined) {
        transport = sessions.get(id);
        if (!transport && args.includes("--unknown-session-400")) {
          // As some servers answer a session they forgot (after a restart):
          // an error without the request's id.
          res.writeHead(400, { "content-type": "application/json" });
          return res.end(JSON.stringify({
            jsonrpc: "2.0",
            error: { code: -32000, message: "Bad Request: No valid session ID provided" },
            id: null,
          }));
        }
        if (!transport) return reply(404, "unknown session\n");
      } else {
        // Without a session id this must be an initialize request; the
        // transport itself rejects anything else with 400.
        transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (sid) => sessions.set(sid, transport),
          onsessionclosed: (sid) => sessions.delete(sid),
        });
        transport.onclose = () => transport.sessionId && sessions.delete(transport.sessionId);
        await buildServer().connect(transport);
      }
      await transport.handleRequest(req, res);
    } catch (err) {
      console.error(err);
      if (!res.headersSent) reply(500, "internal error\n");
    }
  });

  // `--port N` serves on that port: a server started again where it was.
  const at = args.indexOf("--port");
  const port = at >= 0 ? Number(args[at + 1]) : 0;
  http.listen(port, "127.0.0.1", () => {
    console.log(`mcp listening on http://127.0.0.1:${http.address().port}/mcp`);
  });
}

async function serveStdio() {
  const file = process.env.MCP_STARTED_FILE;
  if (file) appendFileSync(file, `started ${process.pid}\n`);
  if (args.includes("--spawn-child")) {
    const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1 << 30)"], {
      stdio: ["ignore", "inherit", "inherit"],
    });
    if (file) appendFileSync(file, `child ${child.pid}\n`);
  }
  if (args.includes("--linger")) {
    // Like servers that ignore the end of stdin: only a signal stops it.
    setInterval(() => {}, 1 << 30);
  } else {
    // The client closing stdin ends the session, even with calls still pending.
    process.stdin.on("end", () => process.exit(0));
  }
  await buildServer().connect(new StdioServerTransport());
}

const args = process.argv.slice(2);
if (args.includes("--crash-on-start")) {
  process.stderr.write("cannot start: crash requested\n");
  process.exit(3);
}
await (args.includes("--http") ? serveHttp() : serveStdio());
