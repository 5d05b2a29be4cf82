// Call a Ratchet runner from JavaScript/TypeScript with the MCP SDK (npm @modelcontextprotocol/sdk).
// Usage: node client.mjs http://127.0.0.1:8701/mcp   (RATCHET_API_TOKEN is sent when set)
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ResourceUpdatedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";

const url = new URL(process.argv[2] ?? "http://127.0.0.1:8701/mcp");
const token = process.env.RATCHET_API_TOKEN;
const transport = new StreamableHTTPClientTransport(url, {
  requestInit: token ? { headers: { Authorization: `Bearer ${token}` } } : {},
});
const client = new Client({ name: "my-app", version: "1.0.0" });
await client.connect(transport);

// A runner tool: the reply is in structuredContent.
const result = await client.callTool({
  name: "answer",
  arguments: { question: "How long do I have to return an item?", conversation_id: "ts-1" },
});
console.log(JSON.stringify({ answer: result.structuredContent }));

// The version being served, and a notification whenever a promotion changes it.
const read = async () => JSON.parse((await client.readResource({ uri: "version://current" })).contents[0].text);
console.log(JSON.stringify({ version: (await read()).version }));
const updated = new Promise((resolve) =>
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => resolve(n.params.uri)));
await client.subscribeResource({ uri: "version://current" });
console.log(JSON.stringify({ subscribed: "version://current" }));  // now promote (e.g. `ratchet send promote`)
console.log(JSON.stringify({ updated: await updated, version: (await read()).version }));
await client.close();
