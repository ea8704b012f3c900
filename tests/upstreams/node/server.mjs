// A differential-suite upstream: the TypeScript MCP SDK's `McpServer` behind its
// `StreamableHTTPServerTransport`, on express with express's own `json()` body parser, the
// way the SDK's examples deploy it. Stateless (a server and transport per request) with JSON
// responses, so that a plain POST is a whole exchange.
//
// Every HTTP request it receives appends a `kind: "http"` line, and every tool, resource and
// prompt that runs appends one JSON line to the file named by
// PORTCULLIS_EXECUTED_LOG before it answers: what ran (`kind`, `name`), what the request
// asked for (`requested`), the JSON-RPC id as this SDK parsed it (`id`) and the `Mcp-Method`
// / `Mcp-Name` headers it saw. The test compares those lines with what the gateway
// authorized.
//
// Listens on 127.0.0.1, port 0, and prints `listening <port>` once it accepts connections.

import { appendFileSync } from "node:fs";
import express from "express";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

const LOG = process.env.PORTCULLIS_EXECUTED_LOG;
if (!LOG) {
  console.error("PORTCULLIS_EXECUTED_LOG is not set");
  process.exit(2);
}

function record(kind, name, requested, extra) {
  const headers = extra?.requestInfo?.headers ?? {};
  const line = {
    server: "node",
    kind,
    name,
    requested,
    id: extra?.requestId ?? null,
    mcp_method: headers["mcp-method"] ?? null,
    mcp_name: headers["mcp-name"] ?? null,
  };
  appendFileSync(LOG, JSON.stringify(line) + "\n");
}

function build() {
  const server = new McpServer({ name: "portcullis-differential", version: "0" });
  server.registerTool(
    "echo",
    { description: "Echo the given text back", inputSchema: { text: z.string() } },
    async ({ text }, extra) => {
      record("tool", "echo", "echo", extra);
      return { content: [{ type: "text", text }] };
    },
  );
  server.registerTool(
    "admin_reset",
    { description: "Reset everything (admin only)" },
    async (extra) => {
      record("tool", "admin_reset", "admin_reset", extra);
      return { content: [{ type: "text", text: "reset" }] };
    },
  );
  for (const [name, text] of [["public", "public"], ["secret", "secret"]]) {
    const uri = `file:///${name}/x`;
    server.registerResource(name, uri, {}, async (asked, extra) => {
      record("resource", uri, asked.href, extra);
      return { contents: [{ uri: asked.href, text }] };
    });
  }
  server.registerPrompt("greeting", { description: "A harmless prompt" }, async (extra) => {
    record("prompt", "greeting", "greeting", extra);
    return { messages: [{ role: "user", content: { type: "text", text: "hello" } }] };
  });
  server.registerPrompt("admin_prompt", { description: "Admins only" }, async (extra) => {
    record("prompt", "admin_prompt", "admin_prompt", extra);
    return { messages: [{ role: "user", content: { type: "text", text: "the admin prompt" } }] };
  });
  return server;
}

// One `http` line per request received, before any parsing, so the test can tell a refusal
// by the gateway (nothing arrives here) from one by this server.
function reached(method, contentType) {
  appendFileSync(
    LOG,
    JSON.stringify({
      server: "node",
      kind: "http",
      name: method,
      requested: contentType ?? "",
      id: null,
      mcp_method: null,
      mcp_name: null,
    }) + "\n",
  );
}

const app = express();
app.use((req, _res, next) => {
  reached(req.method, req.headers["content-type"]);
  next();
});
app.use(express.json());
app.post("/mcp", async (req, res) => {
  const server = build();
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: undefined,
    enableJsonResponse: true,
  });
  res.on("close", () => {
    transport.close();
    server.close();
  });
  try {
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  } catch (error) {
    if (!res.headersSent) {
      res.status(500).json({ jsonrpc: "2.0", error: { code: -32603, message: String(error) }, id: null });
    }
  }
});

const listener = app.listen(0, "127.0.0.1", () => {
  console.log(`listening ${listener.address().port}`);
});
// A request Node's HTTP parser refuses (a lower-case method, say) never reaches express, yet
// it did reach this server: it is logged as such, then answered as Node would.
// Only parse errors count: a reset of an idle kept-alive connection is no request.
listener.on("clientError", (error, socket) => {
  if (String(error.code).startsWith("HPE_")) {
    reached(`<refused by the HTTP parser: ${error.code}>`, null);
  }
  if (socket.writable) {
    socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
  }
});
