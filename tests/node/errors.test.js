// The gateway's errors reach the openai npm SDK as its own error classes, with status, code,
// param and type from the OpenAI envelope (interface.md, "Errors").

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import OpenAI from 'openai';

import { KEY_ECHO, MOCK_MODEL, client, startGateway } from './support.js';

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

const hi = [{ role: 'user', content: 'hi' }];

// Awaits `promise`, which must reject with an instance of `cls`; returns the error.
async function rejection(promise, cls) {
  let caught;
  await assert.rejects(promise, (err) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof cls, `expected ${cls.name}, got ${caught?.constructor?.name}: ${caught}`);
  assert.ok(caught instanceof OpenAI.APIError);
  return caught;
}

test('unknown model: NotFoundError 404 model_not_found', TIMEOUT, async () => {
  const err = await rejection(sdk.chat.completions.create({ model: 'nope', messages: hi }), OpenAI.NotFoundError);
  assert.equal(err.status, 404);
  assert.equal(err.code, 'model_not_found');
  assert.match(err.message, /nope/);
  assert.ok(err.requestID, 'the error has no x-request-id');
  assert.match(err.headers.get('content-type'), /^application\/json/);
});

test('unknown model on a stream: NotFoundError before any chunk', TIMEOUT, async () => {
  const err = await rejection(
    sdk.chat.completions.create({ model: 'nope', messages: hi, stream: true }),
    OpenAI.NotFoundError,
  );
  assert.equal(err.code, 'model_not_found');
});

test('wrong gateway key: AuthenticationError 401 invalid_api_key', TIMEOUT, async () => {
  const bad = client(gateway, 'sk-wrong');
  const err = await rejection(bad.chat.completions.create({ model: 'echo/x', messages: hi }), OpenAI.AuthenticationError);
  assert.equal(err.status, 401);
  assert.equal(err.code, 'invalid_api_key');
});

test('a model the key may not use: PermissionDeniedError 403 model_not_allowed', TIMEOUT, async () => {
  const echoOnly = client(gateway, KEY_ECHO);
  const err = await rejection(
    echoOnly.chat.completions.create({ model: MOCK_MODEL, messages: hi }),
    OpenAI.PermissionDeniedError,
  );
  assert.equal(err.status, 403);
  assert.equal(err.code, 'model_not_allowed');
  // the same key may use echo
  const ok = await echoOnly.chat.completions.create({ model: 'echo/x', messages: hi });
  assert.equal(ok.choices[0].message.content, 'hi');
});

test('a value out of range: BadRequestError 400 invalid_value naming the field', TIMEOUT, async () => {
  const err = await rejection(
    sdk.chat.completions.create({ model: 'echo/x', messages: hi, temperature: 5 }),
    OpenAI.BadRequestError,
  );
  assert.equal(err.status, 400);
  assert.equal(err.code, 'invalid_value');
  assert.equal(err.param, 'temperature');
  assert.equal(err.type, 'invalid_request_error');
});

test('a missing field: BadRequestError 400 missing_required_parameter with its path', TIMEOUT, async () => {
  const err = await rejection(
    sdk.chat.completions.create({ model: 'echo/x', messages: [...hi, { role: 'user' }] }),
    OpenAI.BadRequestError,
  );
  assert.equal(err.code, 'missing_required_parameter');
  assert.equal(err.param, 'messages[1].content');
});

test('a validation error on the Nugen path: UnprocessableEntityError 422', TIMEOUT, async () => {
  const nugen = client(gateway, undefined, `${gateway.url}/api/v3/inference`);
  const err = await rejection(
    nugen.chat.completions.create({ model: 'echo/x', messages: [{ role: 'bogus', content: 'hi' }] }),
    OpenAI.UnprocessableEntityError,
  );
  assert.equal(err.status, 422);
  // Nugen's `{"detail": [...]}`, not OpenAI's envelope: the SDK finds no code in it (the body
  // itself is checked by tests/e2e/test_openai_sdk.py).
  assert.equal(err.code, undefined);
  assert.ok(err.requestID);
});
