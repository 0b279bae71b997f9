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
/** The SDK transport a scenario runs over: websocket (default), http_stream or sse. */
const TRANSPORT = env('TIDINGS_TRANSPORT', 'websocket');
const STREAM_PATHS = { http_stream: '/connection/http_stream', sse: '/connection/sse' };
if (TRANSPORT !== 'websocket' && !(TRANSPORT in STREAM_PATHS)) {
  fail(`unknown TIDINGS_TRANSPORT ${TRANSPORT}`);
}

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

/** Calls `read()` until `accept(value)` holds and returns that value; fails the scenario
 * with the last value after `ms` milliseconds (what is eventually true, as across nodes). */
async function eventually(read, accept, ms, what) {
  const deadline = Date.now() + scaled(ms);
  for (;;) {
    const value = await read();
    if (accept(value)) {
      return value;
    }
    if (Date.now() > deadline) {
      fail(`timed out after ${scaled(ms)} ms waiting for ${what}`, { last: value });
    }
    await sleep(20);
  }
}

/**
 * A WebSocket class for the SDK that records every frame both ways and can take the
 * network away: `cut()` kills the open socket, and while `offline` is set new sockets
 * point at a closed port, so the SDK's reconnect attempts fail until it is cleared. With
 * `redirect` set, new sockets go to that URL instead (another node, as a load balancer
 * would send a reconnecting client).
 */
function recordingNetwork() {
  const net = { sent: [], received: [], sockets: [], offline: false, redirect: null };
  class RecordingWebSocket extends WebSocket {
    constructor(url, ...rest) {
      super(net.offline ? 'ws://127.0.0.1:9/connection/websocket' : net.redirect || url, ...rest);
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
  net.opened = () => net.sockets.length;
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
 * every command posted to the emulation endpoint with its status (`posts`) and every
 * command that opened a stream (`connect`, and what the SDK sent with it), and able to
 * take the network away: `cut()` aborts every open stream, and while `offline` is set
 * every request fails as a network error would, until it is cleared.
 */
function httpNetwork() {
  const { EventSource } = require('eventsource');
  // `sent`: every request's commands in the order sent, posts and stream openings alike.
  const net = { posts: [], streams: [], sent: [], openings: 0, offline: false };
  const decode = (data) => data.split('\n').map((line) => JSON.parse(line));
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
      post = { status: null, node: body.node, commands: decode(body.data) };
      net.posts.push(post);
      net.sent.push(post.commands);
    } else {
      // http_stream posts its first commands as the body, sse puts them in `cf_connect`.
      const initial = options.body || new URL(String(url)).searchParams.get('cf_connect');
      net.sent.push(decode(initial));
      net.openings += 1;
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
  /** Every command sent with this method, in order. */
  net.commands = (method) => net.sent.flat().filter((cmd) => method in cmd);
  /** How many streams were opened (connect attempts that reached the network). */
  net.opened = () => net.openings;
  return net;
}

/** The recording network of TIDINGS_TRANSPORT: WebSocket frames, or HTTP requests for the
 * emulation transports. Both have `commands(method)`, `opened()` and `cut()`. */
function network() {
  return TRANSPORT === 'websocket' ? recordingNetwork() : httpNetwork();
}

/** A Centrifuge client with fast reconnects, its state changes logged and kept in
 * `client.states` (not `history`, which is the SDK's own method). Without an `endpoint`
 * it connects over TIDINGS_TRANSPORT, alone in its transport list (no fallback), through
 * `net` (from `network()`), to the node at `options.node` (default TIDINGS_HTTP_URL). */
function newClient(net, options, name = 'client', endpoint = undefined) {
  const { node, ...sdkOptions } = options;
  const explicit = endpoint !== undefined;
  let transportOptions = { websocket: net.WebSocket };
  if (!explicit && TRANSPORT === 'websocket') {
    endpoint = node === undefined ? WS_URL : node.replace(/^http/, 'ws') + '/connection/websocket';
  } else if (!explicit) {
    const base = node === undefined ? HTTP_URL : node;
    endpoint = [{ transport: TRANSPORT, endpoint: base + STREAM_PATHS[TRANSPORT] }];
    transportOptions = {
      fetch: net.fetch, eventsource: net.EventSource, emulationEndpoint: base + '/emulation',
    };
  }
  const client = new Centrifuge(endpoint, {
    ...transportOptions,
    minReconnectDelay: 50,
    maxReconnectDelay: 300,
    timeout: scaled(3000),
    ...sdkOptions,
  });
  client.states = [];
  for (const event of ['connecting', 'connected', 'disconnected']) {
    client.on(event, (ctx) => {
      client.states.push({ event, ...ctx });
      log(`${name}.${event}`, ctx);
    });
  }
  client.on('error', (ctx) => log(`${name}.error`, { type: ctx.type, error: ctx.error }));
  if (!explicit) {
    client.on('connected', (ctx) => check(ctx.transport === TRANSPORT,
      `${name} connected over ${ctx.transport}, not ${TRANSPORT}`, ctx));
  }
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
  STREAM_PATHS,
  TRANSPORT,
  UnauthorizedError,
  api,
  check,
  collect,
  env,
  eventually,
  fail,
  hardTimeout,
  httpNetwork,
  log,
  network,
  newClient,
  ok,
  publish,
  recordingNetwork,
  scaled,
  sleep,
  tokens,
  waitFor,
};
