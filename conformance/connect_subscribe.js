'use strict';
// Connect, subscribe and receive: connect and subscribe share the first frame, the
// subscription is positioned and recoverable, publications arrive in order with offsets.
const {
  check, collect, env, hardTimeout, log, newClient, ok, publish, recordingNetwork, tokens, waitFor,
} = require('./lib');

hardTimeout(15000);

async function main() {
  const channel = env('CHANNEL');
  const net = recordingNetwork();
  const client = newClient(net, { token: tokens.main });
  const sub = client.newSubscription(channel);
  const pubs = collect(sub, 'sub');
  sub.subscribe();
  client.connect();
  await waitFor(() => sub.state === 'subscribed', 5000, 'the subscription');

  const first = net.sent[0];
  log('first-frame', { frame: first });
  check(first.length === 2 && 'connect' in first[0] && 'subscribe' in first[1],
    'connect and subscribe were not sent in one frame', { first });
  check(first[0].connect.token === tokens.main, 'the connect command lacks the token');
  const connected = client.states.find((h) => h.event === 'connected');
  check(typeof connected.client === 'string' && connected.client.length > 0, 'no client id');
  check(connected.transport === 'websocket', 'not on the websocket transport', connected);
  const subscribed = sub.subscribedEvents[0];
  check(subscribed.recoverable === true && subscribed.positioned === true,
    'subscription is not recoverable/positioned', subscribed);
  check(typeof subscribed.streamPosition.epoch === 'string' && subscribed.streamPosition.epoch,
    'no epoch in the stream position', subscribed);

  for (let n = 1; n <= 3; n++) {
    await publish(channel, { n, text: `hello ${n}` });
  }
  await waitFor(() => pubs.length >= 3, 5000, 'three publications');
  log('publications', { pubs: pubs.map((p) => ({ data: p.data, offset: p.offset })) });
  check(pubs.length === 3, 'wrong number of publications', { count: pubs.length });
  pubs.forEach((p, i) => {
    check(p.channel === channel, 'publication on the wrong channel', p);
    check(p.data.n === i + 1 && p.data.text === `hello ${i + 1}`, 'wrong data or order', p);
    check(i === 0 || p.offset > pubs[i - 1].offset, 'offsets do not increase', p);
  });
  check(pubs[0].offset > subscribed.streamPosition.offset, 'offset not past the subscribe position');
  const connects = client.states.filter((h) => h.event === 'connected').length;
  check(connects === 1, 'the client reconnected', { states: client.states });

  client.disconnect();
  check(client.state === 'disconnected', 'not disconnected after disconnect()');
  ok({ received: pubs.length });
}

main();
