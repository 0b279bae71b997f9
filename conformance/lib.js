'use strict';
// Shared plumbing of the conformance scenarios: environment, JSON-lines reporting, hard
// timeouts, a WebSocket class that records frames and can simulate an outage, and the
// server API for publishing. Every scenario prints one JSON object per line and ends with
// {"event":"ok"} (exit 0) or {"event":"fail","message":...} (exit 1).

const { Centrifuge, UnauthorizedError } = require('centrifuge');
const WebSocket = require('ws');

const T0 = Date.now();

function log(event, fields) {
  // stdout is a pipe here, and pipe writes are synchronous on Linux: nothing is lost on exit.
  process.stdout.write(JSON.stringify({ t: Date.now() - T0, event, ...fields }) + '\n');
}

function fail(message, fields) {
  log('fail', { message, ...fields });
  process.exit(1);
}

function ok(fields) {
  log('ok', fields);
  process.exit(0);
}

function check(condition, message, fields) {
  if (!condition) {
    fail(message, fields);
  }
}

function env(name, fallback) {
  const value = process.env[name];
  if (value === undefined || value === '') {
    if (fallback !== undefined) {
      return fallback;
    }
    fail(`environment variable ${name} is not set`);
  }
  return value;
}


process.on('unhandledRejection', (err) => fail(`unhandled rejection: ${err && err.stack || err}`));
process.on('uncaughtException', (err) => fail(`uncaught exception: ${err && err.stack || err}`));

const WS_URL = env('TIDINGS_WS_URL');
const HTTP_URL = env('TIDINGS_HTTP_URL');
const API_KEY = env('TIDINGS_API_KEY');
const SCALE = Number(env('TIDINGS_TEST_TIME_SCALE', '1'));

function scaled(ms) {
  return ms * SCALE;
}

/** Fails the scenario after `ms` (scaled) whatever it is waiting for. */
function hardTimeout(ms) {
  const limit = scaled(ms);
  setTimeout(() => fail(`hard timeout: scenario still running after ${limit} ms`), limit).unref();
}

/** Named tokens minted by the Python side, e.g. tokens.main. */
const tokens = JSON.parse(env('TIDINGS_TOKENS'));

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves once predicate() is true; fails the scenario after `ms` milliseconds. */
async function waitFor(predicate, ms, what) {
  const deadline = Date.now() + scaled(ms);
  while (!predicate()) {
    if (Date.now() > deadline) {
      fail(`timed out after ${scaled(ms)} ms waiting for ${what}`);
    }
    await sleep(5);
  }
}

/**
 * A WebSocket class for the SDK that records every frame both ways and can take the
 * network away: `cut()` kills the open socket, and while `offline` is set new sockets
 * point at a closed port, so the SDK's reconnect attempts fail until it is cleared.
 */
function recordingNetwork() {
  const net = { sent: [], received: [], sockets: [], offline: false };
  class RecordingWebSocket extends WebSocket {
    constructor(url, ...rest) {
      super(net.offline ? 'ws://127.0.0.1:9/connection/websocket' : url, ...rest);
      net.sockets.push(this);
      this.on('message', (data) => {
        for (const line of data.toString().split('\n')) {
          net.received.push(JSON.parse(line));
        }
      });
    }

    send(data, ...rest) {
      net.sent.push(data.toString().split('\n').map((line) => JSON.parse(line)));
      return super.send(data, ...rest);
    }
  }
  net.WebSocket = RecordingWebSocket;
  net.cut = () => {
    net.offline = true;
    for (const socket of net.sockets) {
      socket.terminate();
    }
  };
  /** Every command sent with this method, in order. */
  net.commands = (method) => net.sent.flat().filter((cmd) => method in cmd);
  /** Every reply received to a command of this method (matched by id). */
  net.replies = (method) => {
    const ids = new Set(net.commands(method).map((cmd) => cmd.id));
    return net.received.filter((msg) => msg.id && ids.has(msg.id));
  };
  return net;
}

/**
 * fetch and EventSource for the SDK's emulation transports (http_stream, sse), recording
 * every command posted to the emulation endpoint with its status, and able to take the
 * network away: `cut()` aborts every open stream, and while `offline` is set every
 * request fails as a network error would, until it is cleared.
 */
function httpNetwork() {
  const { EventSource } = require('eventsource');
  const net = { posts: [], streams: [], offline: false };
  net.fetch = async (url, options = {}) => {
    if (net.offline) {
      throw new TypeError('fetch failed (network is down)');
    }
    const own = new AbortController();
    const signal = options.signal ? AbortSignal.any([options.signal, own.signal]) : own.signal;
    let post = null;
    if (String(url).endsWith('/emulation')) {
      // Kept in the order sent: a reply may come down the stream before the post's answer.
      const body = JSON.parse(options.body);
      post = { status: null, node: body.node,
        commands: body.data.split('\n').map((line) => JSON.parse(line)) };
      net.posts.push(post);
    } else {
      net.streams.push(own);
    }
    const response = await fetch(url, { ...options, signal });
    if (post) {
      post.status = response.status;
    }
    return response;
  };
  class CuttableEventSource extends EventSource {
    constructor(url, init) {
      super(url, { ...init, fetch: net.fetch });
    }
  }
  net.EventSource = CuttableEventSource;
  net.cut = () => {
    net.offline = true;
    for (const stream of net.streams.splice(0)) {
      // A network failure, not an abort: an EventSource takes an AbortError for its own close.
      stream.abort(new TypeError('network connection lost'));
    }
  };
  /** Every command posted with this method, in order. */
  net.commands = (method) => net.posts.flatMap((p) => p.commands).filter((cmd) => method in cmd);
  return net;
}

/** A Centrifuge client with fast reconnects, its state changes logged and kept in
 * `client.states` (not `history`, which is the SDK's own method). */
function newClient(net, options, name = 'client', endpoint = WS_URL) {
  const client = new Centrifuge(endpoint, {
    websocket: net.WebSocket,
    minReconnectDelay: 50,
    maxReconnectDelay: 300,
    timeout: scaled(3000),
    ...options,
  });
  client.states = [];
  for (const event of ['connecting', 'connected', 'disconnected']) {
    client.on(event, (ctx) => {
      client.states.push({ event, ...ctx });
      log(`${name}.${event}`, ctx);
    });
  }
  client.on('error', (ctx) => log(`${name}.error`, { type: ctx.type, error: ctx.error }));
  return client;
}

/** Publications of a subscription (or of a client's server-side subscriptions), kept. */
function collect(emitter, name) {
  const pubs = [];
  emitter.on('publication', (ctx) => pubs.push(ctx));
  emitter.subscribedEvents = [];
  emitter.on('subscribed', (ctx) => {
    emitter.subscribedEvents.push(ctx);
    log(`${name}.subscribed`, ctx);
  });
  emitter.on('subscribing', (ctx) => log(`${name}.subscribing`, ctx));
  emitter.on('unsubscribed', (ctx) => log(`${name}.unsubscribed`, ctx));
  emitter.on('error', (ctx) => log(`${name}.error`, { type: ctx.type, error: ctx.error }));
  return pubs;
}

async function api(method, body) {
  const response = await fetch(`${HTTP_URL}/api/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  check(response.status === 200, `POST /api/${method} answered ${response.status}: ${text}`);
  return JSON.parse(text);
}

function publish(channel, data) {
  return api('publish', { channel, data });
}

module.exports = {
  Centrifuge,
  HTTP_URL,
  UnauthorizedError,
  api,
  check,
  collect,
  env,
  fail,
  hardTimeout,
  httpNetwork,
  log,
  newClient,
  ok,
  publish,
  recordingNetwork,
  scaled,
  sleep,
  tokens,
  waitFor,
};
