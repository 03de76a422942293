// models.list() through the openai npm SDK: every name a key may send, and only those.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { KEY_ECHO, client, startGateway } from './support.js';

const TIMEOUT = { timeout: 30_000 };
let gateway;

before(async () => {
  gateway = await startGateway();
});

after(async () => {
  await gateway?.stop();
});

// Every model of every page, as [id, owned_by], sorted by id.
async function listed(sdk) {
  const models = [];
  for await (const model of sdk.models.list()) {
    assert.equal(model.object, 'model');
    assert.ok(Number.isInteger(model.created));
    models.push([model.id, model.owned_by]);
  }
  return models.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

test('models.list(): the aliases and provider/models of the config', TIMEOUT, async () => {
  assert.deepEqual(await listed(client(gateway)), [
    ['echo/echo', 'echo'], // the echo provider's `models`
    ['echo/quick', 'echo'], // target of the alias `quick`
    ['mock/gpt-4o', 'mock'], // target of the alias `smart`
    ['mock/gpt-4o-mini', 'mock'], // the mock provider's `models`
    ['quick', 'llmgate'],
    ['smart', 'llmgate'],
  ]);
});

test('models.list(): a key sees only the models it may use', TIMEOUT, async () => {
  assert.deepEqual(await listed(client(gateway, KEY_ECHO)), [
    ['echo/echo', 'echo'],
    ['echo/quick', 'echo'],
    ['quick', 'llmgate'],
  ]);
});

test('every listed model answers', TIMEOUT, async () => {
  const sdk = client(gateway);
  for (const [id] of await listed(sdk)) {
    const data = await sdk.chat.completions.create({ model: id, messages: [{ role: 'user', content: 'ping' }] });
    assert.equal(data.model, id);
    assert.ok(data.choices[0].message.content, `${id} answered nothing`);
  }
});
