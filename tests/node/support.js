// Starts what the Node SDK tests drive: the mock upstream of tests/e2e/mock_upstream.py (the
// same mock the Python tests use, run through its command line) and the real llmgate binary
// with a config written to a temporary directory. Loopback only; every wait is bounded.
//
// LLMGATE_BIN overrides the binary (default target/debug/llmgate under the repository root);
// PYTHON overrides the interpreter that runs the mock (default python3).

import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

import OpenAI from 'openai';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const STARTUP_TIMEOUT_MS = 20_000;
export const STOP_TIMEOUT_MS = 10_000;
export const CLIENT_TIMEOUT_MS = 20_000;

// Gateway keys of the config below: one may use everything, one only echo and the alias `quick`.
export const KEY_ALL = 'sk-node-all';
export const KEY_ECHO = 'sk-node-echo';
const UPSTREAM_KEY = 'sk-node-upstream';

// What the client sends to reach the mock upstream (provider `mock`, kind openai).
export const MOCK_MODEL = 'mock/gpt-4o-mini';

// What mock_upstream.py answers (its REPLY_WORDS, TOOL_CALL_ID, TOOL_NAME, TOOL_ARGUMENTS, and
// the openai dialect's usage numbers): kept in step with that file.
export const MOCK = {
  reply: 'Hello from the mock upstream.',
  replyWords: 6,
  promptTokens: 9,
  toolCallId: 'call_mock_weather_1',
  toolName: 'get_weather',
  toolArguments: { location: 'Paris, France', unit: 'celsius' },
  fragmentLen: 7,
};

function binary() {
  const raw = process.env.LLMGATE_BIN || 'target/debug/llmgate';
  const path = isAbsolute(raw) ? raw : join(REPO_ROOT, raw);
  if (!existsSync(path)) {
    throw new Error(`llmgate binary not found at ${path}: run \`cargo build\` or set LLMGATE_BIN`);
  }
  return path;
}

function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
  });
}

const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

// Ends a child: SIGTERM, then SIGKILL if it is still there after STOP_TIMEOUT_MS.
async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((ok) => child.once('exit', ok));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

// Children still running when this process exits (a failed or cancelled test run) are killed.
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function track(child) {
  running.add(child);
  child.once('exit', () => running.delete(child));
  return child;
}

/** The openai-dialect mock upstream: `{ baseURL, stop() }`. */
export async function startMock() {
  const script = join(REPO_ROOT, 'tests', 'e2e', 'mock_upstream.py');
  const child = track(
    spawn(process.env.PYTHON || 'python3', [script, 'openai'], { stdio: ['ignore', 'pipe', 'inherit'] }),
  );
  // Its first line is `openai http://127.0.0.1:PORT/v1 -> /v1/chat/completions`.
  const lines = createInterface({ input: child.stdout });
  let timer;
  try {
    const first = await Promise.race([
      new Promise((ok) => lines.once('line', ok)),
      new Promise((_, fail) => child.once('exit', (code) => fail(new Error(`mock upstream exited (${code})`)))),
      new Promise((_, fail) => {
        timer = setTimeout(() => fail(new Error('mock upstream did not start')), STARTUP_TIMEOUT_MS);
      }),
    ]);
    const [dialect, baseURL] = first.split(' ');
    if (dialect !== 'openai' || !baseURL.startsWith('http://127.0.0.1:')) {
      throw new Error(`unexpected first line from the mock: ${first}`);
    }
    return { baseURL, stop: () => stopChild(child) };
  } catch (err) {
    await stopChild(child);
    throw err;
  } finally {
    clearTimeout(timer);
    lines.close();
  }
}

function config(mockBaseURL) {
  return `\
[server]
listen = "127.0.0.1:0"

[auth]
keys = [
  { name = "node-all", key = "${KEY_ALL}", models = ["*"] },
  { name = "node-echo", key = "${KEY_ECHO}", models = ["echo/*", "quick"] },
]

[providers.echo]
kind = "echo"
models = ["echo"]

[providers.mock]
kind = "openai"
base_url = "${mockBaseURL}"
api_key = "${UPSTREAM_KEY}"
timeout_ms = 10000
models = ["gpt-4o-mini"]

[models.quick]
targets = [{ provider = "echo", model = "quick" }]

[models.smart]
targets = [{ provider = "mock", model = "gpt-4o" }]
`;
}

async function waitReady(child, url, deadline) {
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1_000) });
      await res.arrayBuffer();
      if (res.status === 200) return true;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  return false;
}

/**
 * The gateway in front of the mock: `{ url, baseURL, log(), stop() }`. `stop()` also stops the
 * mock and removes the temporary directory.
 */
export async function startGateway() {
  const bin = binary();
  const mock = await startMock();
  const dir = mkdtempSync(join(tmpdir(), 'llmgate-node-'));
  const configPath = join(dir, 'llmgate.toml');
  const logPath = join(dir, 'llmgate.log');
  writeFileSync(configPath, config(mock.baseURL));
  const log = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');

  // Neither the environment nor a stray config may change what is tested.
  const env = { ...process.env, NO_COLOR: '1', RUST_LOG: process.env.RUST_LOG || 'info' };
  for (const name of ['LLMGATE_CONFIG', 'LLMGATE_LISTEN', 'LLMGATE_LOG_FORMAT']) delete env[name];

  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      // A port found free can be taken before the gateway binds it: then try another.
      const port = await freePort();
      const url = `http://127.0.0.1:${port}`;
      const out = openSync(logPath, 'w');
      const child = track(
        spawn(bin, ['serve', '--config', configPath, '--listen', `127.0.0.1:${port}`], {
          cwd: dir,
          env,
          stdio: ['ignore', out, out],
        }),
      );
      closeSync(out);
      if (await waitReady(child, url, Date.now() + STARTUP_TIMEOUT_MS)) {
        const stop = async () => {
          await stopChild(child);
          await mock.stop();
          rmSync(dir, { recursive: true, force: true });
        };
        return { url, baseURL: `${url}/v1`, log, stop };
      }
      await stopChild(child);
    }
    throw new Error(`llmgate did not become ready; its log:\n${log()}`);
  } catch (err) {
    await mock.stop();
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** An SDK client of the gateway: no retries, a bounded timeout. */
export function client(gateway, apiKey = KEY_ALL, baseURL = gateway.baseURL) {
  return new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: CLIENT_TIMEOUT_MS });
}
