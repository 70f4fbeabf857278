// The official openai Node SDK against the gateway, nothing changed but the base URL: a chat answer, a
// stream with usage, a tool call (whole, streamed and assembled by index, and through the SDK's own
// stream helper) and a refused parameter. Prints what it saw as one JSON object on stdout; the
// assertions are in scripts/e2e/test_node_sdk.py. Env: R1_BASE_URL, R1_TOKEN.
"use strict";

const { OpenAI } = require("openai");

const client = new OpenAI({ baseURL: process.env.R1_BASE_URL, apiKey: process.env.R1_TOKEN, maxRetries: 0 });
const model = "deepseek-r1";
const simple = [{ role: "user", content: "What is the capital of France?" }];
const weather = [{ role: "user", content: "What is the weather in Paris?" }];
const tools = [
  {
    type: "function",
    function: {
      name: "get_weather",
      description: "The current weather in a city.",
      parameters: {
        type: "object",
        properties: { city: { type: "string" }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
        required: ["city", "unit"],
      },
    },
  },
];

const route = (response) => ({
  route: response.headers.get("x-r1-route"),
  reason: response.headers.get("x-r1-route-reason"),
  pool_model: response.headers.get("x-r1-model"),
});

async function chat() {
  const { data, response } = await client.chat.completions
    .create({ model, messages: simple, temperature: 0, max_tokens: 24 })
    .withResponse();
  return {
    ...route(response),
    model: data.model,
    content: data.choices[0].message.content,
    finish_reason: data.choices[0].finish_reason,
    completion_tokens: data.usage.completion_tokens,
  };
}

async function stream() {
  const { data, response } = await client.chat.completions
    .create({
      model,
      messages: simple,
      temperature: 0,
      max_tokens: 24,
      stream: true,
      stream_options: { include_usage: true },
    })
    .withResponse();
  const seen = {
    ...route(response),
    ids: new Set(),
    models: new Set(),
    content: "",
    roles: [],
    finish_reasons: [],
    usage: null,
    chunks: 0,
  };
  for await (const chunk of data) {
    seen.chunks += 1;
    seen.ids.add(chunk.id);
    seen.models.add(chunk.model);
    for (const choice of chunk.choices) {
      if (choice.delta.role) seen.roles.push(choice.delta.role);
      seen.content += choice.delta.content ?? "";
      if (choice.finish_reason) seen.finish_reasons.push(choice.finish_reason);
    }
    if (chunk.usage) seen.usage = chunk.usage;
  }
  return { ...seen, ids: [...seen.ids], models: [...seen.models] };
}

async function toolCall() {
  const { data, response } = await client.chat.completions.create({ model, messages: weather, tools }).withResponse();
  const message = data.choices[0].message;
  return { ...route(response), finish_reason: data.choices[0].finish_reason, tool_calls: message.tool_calls };
}

async function streamedToolCall() {
  const calls = {};
  let finish = null;
  const events = await client.chat.completions.create({ model, messages: weather, tools, stream: true });
  for await (const chunk of events) {
    for (const choice of chunk.choices) {
      for (const fragment of choice.delta.tool_calls ?? []) {
        const call = (calls[fragment.index] ??= { id: null, name: "", arguments: "" });
        call.id = fragment.id ?? call.id;
        call.name += fragment.function?.name ?? "";
        call.arguments += fragment.function?.arguments ?? "";
      }
      finish = choice.finish_reason ?? finish;
    }
  }
  return { calls, finish_reason: finish };
}

async function streamHelper() {
  // The SDK assembles the streamed fragments itself.
  const runner = client.chat.completions.stream({ model, messages: weather, tools });
  const final = await runner.finalChatCompletion();
  return { tool_calls: final.choices[0].message.tool_calls, finish_reason: final.choices[0].finish_reason };
}

async function refused() {
  try {
    await client.chat.completions.create({ model, messages: simple, temperature: 5 });
    return { refused: false };
  } catch (error) {
    return {
      refused: error instanceof OpenAI.BadRequestError,
      status: error.status,
      param: error.param,
      code: error.code,
    };
  }
}

async function main() {
  const report = {
    chat: await chat(),
    stream: await stream(),
    tool_call: await toolCall(),
    streamed_tool_call: await streamedToolCall(),
    stream_helper: await streamHelper(),
    refused: await refused(),
  };
  process.stdout.write(JSON.stringify(report) + "\n");
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
