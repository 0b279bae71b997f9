'use strict';
// The emulation transports: TRANSPORT=http_stream or sse, alone in the SDK's transport
// list, so nothing can fall back to WebSocket. Connect (with a token that must be
// refreshed), subscribe, receive publications; the token is refreshed through the
// emulation endpoint without reconnecting; then the network fails mid-stream, MISSED
// events are published meanwhile, and on return every one arrives once, in order, with
// `recovered: true`. With FALLBACK=1 a WebSocket entry that cannot connect comes first:
// the SDK must move on to TRANSPORT and do all of the above there. EMULATION_URL (default:
// the node's own address) is where the commands are posted: another node's, to prove that
// a post reaches the session's worker wherever it lands.
const WebSocket = require('ws');
const {
  HTTP_URL, check, collect, env, hardTimeout, httpNetwork, log, newClient, ok, publish, tokens,
  waitFor,
} = require('./lib');

hardTimeout(30000);

const channel = env('CHANNEL');
const transport = env('TRANSPORT');
const missed = Number(env('MISSED', '20'));
const fallback = env('FALLBACK', '') === '1';
const emulationUrl = env('EMULATION_URL', HTTP_URL);
const paths = { http_stream: '/connection/http_stream', sse: '/connection/sse' };

async function main() {
  const net = httpNetwork();
  const endpoints = [{ transport, endpoint: HTTP_URL + paths[transport] }];
  if (fallback) {
    // A path with no WebSocket behind it: the upgrade is refused (404), as a proxy that
    // breaks WebSocket would.
    endpoints.unshift({ transport: 'websocket', endpoint: HTTP_URL.replace('http', 'ws') + '/no-ws' });
  }
  let getTokenCalls = 0;
  const client = newClient(net, {
    websocket: WebSocket,
    fetch: net.fetch,
    eventsource: net.EventSource,
    emulationEndpoint: emulationUrl + '/emulation',
    token: tokens.short,
    getToken: async () => {
      getTokenCalls += 1;
      log('getToken', { calls: getTokenCalls });
      return tokens.long;
    },
  }, 'client', endpoints);
  const transports = [];
  client.on('connected', (ctx) => transports.push(ctx.transport));
  const sub = client.newSubscription(channel);
  const pubs = collect(sub, 'sub');
  sub.subscribe();
  client.connect();
  await waitFor(() => sub.state === 'subscribed', 10000, 'the subscription');
  check(transports[0] === transport, `connected over ${transports[0]}, not ${transport}`);
  const subscribes = net.commands('subscribe');
  await waitFor(() => net.posts[0].status !== null, 5000, 'the answer to the first post');
  check(subscribes.length === 1 && net.posts[0].status === 204,
    'the subscribe was not posted to the emulation endpoint', { posts: net.posts });

  let seq = 0;
  for (let i = 0; i < 3; i++) {
    await publish(channel, { seq: ++seq });
  }
  await waitFor(() => pubs.length === 3, 5000, 'the first publications');

  await waitFor(() => net.commands('refresh').length === 1 && getTokenCalls === 1, 6000,
    'the token refresh');
  await publish(channel, { seq: ++seq });
  await waitFor(() => pubs.length === 4, 5000, 'a publication after the refresh');
  check(JSON.stringify(client.states.map((h) => h.event)) === '["connecting","connected"]',
    'the connection did not survive the refresh', { states: client.states });

  // The network goes away mid-stream; the publisher does not stop for it.
  net.cut();
  const away = { from: seq + 1 };
  for (let i = 0; i < missed; i++) {
    await publish(channel, { seq: ++seq });
  }
  away.to = seq;
  net.offline = false;
  log('away', away);
  await waitFor(() => sub.subscribedEvents.length === 2, 10000, 'the resubscription');
  const again = sub.subscribedEvents[1];
  check(again.wasRecovering === true && again.recovered === true,
    'the subscription did not recover', again);
  const resubscribe = net.commands('subscribe').pop().subscribe;
  check(resubscribe.recover === true && resubscribe.offset === pubs[3].offset,
    'the SDK did not ask to recover from its last position', resubscribe);
  await publish(channel, { seq: ++seq });
  await waitFor(() => pubs.length >= seq && pubs[pubs.length - 1].data.seq === seq, 10000,
    `publication ${seq}`);
  const got = pubs.map((p) => p.data.seq);
  check(JSON.stringify(got) === JSON.stringify(Array.from({ length: seq }, (_, i) => i + 1)),
    'publications missing, repeated or out of order', { got });
  check(transports.every((t) => t === transport), 'a reconnect changed the transport',
    { transports });
  const answered = net.posts.filter((p) => p.status !== null);
  check(answered.every((p) => p.status === 204), 'a post was not accepted', { posts: net.posts });
  client.disconnect();
  ok({ received: pubs.length, transports, posts: net.posts.length, getTokenCalls });
}

main();
