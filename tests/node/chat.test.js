// The official openai npm SDK against the real gateway: completions, streams and tool calls,
// through the offline echo provider and the mock upstream (provider `mock`, kind openai).

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { MOCK, MOCK_MODEL, client, startGateway } from './support.js';

const TIMEOUT = { timeout: 30_000 };
let gateway;
let sdk;

before(async () => {
  gateway = await startGateway();
  sdk = client(gateway);
});

after(async () => {
  await gateway?.stop();
});

const words = (text) => text.split(/\s+/).filter(Boolean).length;

test('non-stream completion: content, usage, the model sent, x-request-id', TIMEOUT, async () => {
  const system = 'Answer briefly please';
  const user = 'hello from the node sdk';
  const { data, response, request_id } = await sdk.chat.completions
    .create({
      model: 'echo/node',
      messages: [
        { role: 'system', content: system },
        { role: 'user', content: user },
      ],
    })
    .withResponse();

  assert.equal(response.status, 200);
  assert.equal(response.headers.get('x-llmgate-provider'), 'echo');
  assert.ok(request_id, 'the SDK found no x-request-id');
  assert.equal(request_id, response.headers.get('x-request-id'));

  assert.equal(data.object, 'chat.completion');
  assert.equal(data.model, 'echo/node');
  assert.ok(Number.isInteger(data.created) && data.created > 0);
  assert.equal(data.choices.length, 1);
  assert.equal(data.choices[0].message.role, 'assistant');
  assert.equal(data.choices[0].message.content, user);
  assert.equal(data.choices[0].finish_reason, 'stop');
  assert.deepEqual(
    { ...data.usage },
    {
      prompt_tokens: words(system) + words(user),
      completion_tokens: words(user),
      total_tokens: words(system) + 2 * words(user),
    },
  );
});

test('a request id the client sends comes back', TIMEOUT, async () => {
  const id = `node-${Date.now()}-${Math.random().toString(16).slice(2)}`;
  const { request_id } = await sdk.chat.completions
    .create({ model: 'echo/x', messages: [{ role: 'user', content: 'hi' }] }, { headers: { 'X-Request-ID': id } })
    .withResponse();
  assert.equal(request_id, id);
});

test('non-stream completion through the mock upstream', TIMEOUT, async () => {
  const data = await sdk.chat.completions.create({
    model: MOCK_MODEL,
    messages: [{ role: 'user', content: 'hi upstream' }],
  });
  assert.equal(data.model, MOCK_MODEL);
  assert.equal(data.choices[0].message.content, MOCK.reply);
  assert.equal(data.usage.prompt_tokens, MOCK.promptTokens);
  assert.equal(data.usage.completion_tokens, MOCK.replyWords);
});

// Streams `model` with include_usage and checks the chunk sequence; returns the chunks.
async function streamWithUsage(model, content, expected) {
  const stream = await sdk.chat.completions.create({
    model,
    messages: [{ role: 'user', content }],
    stream: true,
    stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk); // must end on its own

  assert.ok(chunks.length >= 3, `only ${chunks.length} chunks`);
  assert.equal(new Set(chunks.map((c) => c.id)).size, 1, 'chunks do not share one id');
  for (const c of chunks) {
    assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(c.model, model);
  }
  const deltas = chunks.flatMap((c) => c.choices.map((ch) => ch.delta));
  assert.equal(deltas[0].role, 'assistant');
  assert.equal(deltas.map((d) => d.content ?? '').join(''), expected);
  assert.ok(deltas.filter((d) => d.content).length > 1, 'the content came in one piece, not streamed');
  const finishes = chunks.flatMap((c) => c.choices.map((ch) => ch.finish_reason));
  assert.equal(finishes.at(-1), 'stop');
  assert.ok(finishes.slice(0, -1).every((f) => f === null), `finish_reason before the end: ${finishes}`);

  // Exactly one chunk has usage: the last, with no choices.
  const withUsage = chunks.flatMap((c, i) => (c.usage ? [i] : []));
  assert.deepEqual(withUsage, [chunks.length - 1]);
  assert.equal(chunks.filter((c) => c.choices.length === 0).length, 1);
  assert.deepEqual(chunks.at(-1).choices, []);
  return chunks;
}

test('stream with include_usage (echo)', TIMEOUT, async () => {
  const text = 'count these five words';
  const chunks = await streamWithUsage('echo/stream', text, text);
  const { usage } = chunks.at(-1);
  assert.equal(usage.prompt_tokens, words(text));
  assert.equal(usage.completion_tokens, words(text));
  assert.equal(usage.total_tokens, 2 * words(text));
});

test('stream with include_usage (mock upstream)', TIMEOUT, async () => {
  const chunks = await streamWithUsage(MOCK_MODEL, 'stream please', MOCK.reply);
  const { usage } = chunks.at(-1);
  assert.equal(usage.prompt_tokens, MOCK.promptTokens);
  assert.equal(usage.completion_tokens, MOCK.replyWords);
});

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: MOCK.toolName,
    description: 'Get the current weather in a location',
    parameters: {
      type: 'object',
      properties: {
        location: { type: 'string' },
        unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
      },
      required: ['location', 'unit'],
    },
  },
};

test('a streamed tool call is reassembled by the SDK', TIMEOUT, async () => {
  // The mock upstream calls every tool offered, streaming the arguments in fragments.
  const stream = sdk.chat.completions.stream({
    model: MOCK_MODEL,
    messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
    tools: [WEATHER_TOOL],
    stream_options: { include_usage: true },
  });
  const fragments = [];
  stream.on('tool_calls.function.arguments.delta', (event) => fragments.push(event.arguments_delta));
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const completion = await stream.finalChatCompletion();

  // On the wire: deltas with an index, and the arguments in several pieces.
  const toolDeltas = chunks.flatMap((c) => c.choices.flatMap((ch) => ch.delta.tool_calls ?? []));
  assert.ok(toolDeltas.length > 2, `only ${toolDeltas.length} tool-call deltas`);
  assert.ok(toolDeltas.every((d) => d.index === 0), 'a tool-call delta without index 0');
  // (the first delta, with the name, has empty arguments)
  const expectedJSON = JSON.stringify(MOCK.toolArguments);
  const pieces = fragments.filter(Boolean);
  assert.equal(pieces.length, Math.ceil(expectedJSON.length / MOCK.fragmentLen));
  assert.equal(pieces.join(''), expectedJSON);

  // What the SDK put together.
  assert.equal(completion.model, MOCK_MODEL);
  const choice = completion.choices[0];
  assert.equal(choice.finish_reason, 'tool_calls');
  assert.equal(choice.message.tool_calls.length, 1);
  const [call] = choice.message.tool_calls;
  assert.equal(call.id, MOCK.toolCallId);
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, MOCK.toolName);
  assert.deepEqual(JSON.parse(call.function.arguments), MOCK.toolArguments);
  assert.equal(chunks.at(-1).usage?.prompt_tokens, MOCK.promptTokens);
});

test('the Nugen path works with the same SDK', TIMEOUT, async () => {
  // The SDK appends /chat/completions: /api/v3/inference/chat/completions.
  const nugen = client(gateway, undefined, `${gateway.url}/api/v3/inference`);
  const data = await nugen.chat.completions.create({
    model: 'echo/nugen',
    messages: [{ role: 'user', content: 'via the nugen path' }],
  });
  assert.equal(data.model, 'echo/nugen');
  assert.equal(data.choices[0].message.content, 'via the nugen path');
});
