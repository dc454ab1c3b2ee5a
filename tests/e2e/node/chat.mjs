// Drives the gateway with the official openai Node.js client and prints what it saw as
// one JSON object; tests/e2e/test_gateway_api.py runs it and checks the result.
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.GATEWAY_URL,
  apiKey: process.env.API_KEY,
  maxRetries: 0,
});
const user = "node-user";
const parts = [
  { type: "text", text: "My cat is called Miso." },
  { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } },
];
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      parameters: { type: "object", properties: { city: { type: "string" } } },
    },
  },
];
const out = {};

const plain = await client.chat.completions
  .create({
    model: "recorder",
    messages: [{ role: "user", content: parts }],
    user,
    n: 2,
    seed: 7,
    stop: ["\n\n"],
    logprobs: true,
    top_logprobs: 2,
    response_format: { type: "json_object" },
    vendor_extra: { keep: "me" },
  })
  .withResponse();
out.plain = {
  contents: plain.data.choices.map((c) => c.message.content),
  memory: plain.response.headers.get("x-bionic-memory"),
  usage: plain.data.usage,
};

let text = "";
let usage = null;
const stream = await client.chat.completions.create({
  model: "recorder",
  messages: [{ role: "user", content: "Where does my cat sleep?" }],
  user,
  stream: true,
  stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  if (chunk.choices.length) text += chunk.choices[0].delta.content ?? "";
  if (chunk.usage) usage = chunk.usage;
}
out.stream = { text, usage };

const called = await client.chat.completions.create({
  model: "tools",
  messages: [{ role: "user", content: "Weather in Hangzhou?" }],
  user,
  tools,
  tool_choice: "auto",
});
out.tools = called.choices[0].message.tool_calls;

const calls = [];
for await (const chunk of await client.chat.completions.create({
  model: "tools",
  messages: [{ role: "user", content: "Weather in Hangzhou?" }],
  user,
  tools,
  stream: true,
})) {
  for (const call of chunk.choices[0]?.delta?.tool_calls ?? []) calls.push(call);
}
out.stream_tools = calls;

try {
  await client.chat.completions.create({
    model: "fail-429",
    messages: [{ role: "user", content: "hi" }],
    user,
  });
  out.error = null;
} catch (err) {
  out.error = {
    status: err.status,
    retry_after: err.headers?.get("retry-after") ?? null,
    body: err.error,
  };
}

process.stdout.write(JSON.stringify(out));
