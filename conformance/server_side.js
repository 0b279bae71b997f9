'use strict';
// Server-side subscriptions: the token's `channels` claim subscribes the connection; the
// SDK reports them with the client-level `subscribed` and `publication` events.
const {
  check, collect, env, hardTimeout, log, newClient, ok, publish, recordingNetwork, tokens, waitFor,
} = require('./lib');

hardTimeout(15000);

async function main() {
  const channels = env('CHANNELS').split(',');
  const net = recordingNetwork();
  const client = newClient(net, { token: tokens.main });
  const pubs = collect(client, 'client');
  client.connect();
  await waitFor(() => client.subscribedEvents.length === channels.length, 5000,
    'a client-level subscribed event per channel of the token');
  const subscribed = client.subscribedEvents.map((s) => s.channel).sort();
  check(JSON.stringify(subscribed) === JSON.stringify([...channels].sort()),
    'subscribed to other channels than the token names', { subscribed, channels });
  for (const s of client.subscribedEvents) {
    check(s.recoverable === true && s.positioned === true, 'not recoverable/positioned', s);
  }
  check(net.commands('subscribe').length === 0, 'the SDK had to send subscribe commands');
  check(Object.keys(client.subscriptions()).length === 0, 'client-side subscriptions exist');

  for (const [i, channel] of channels.entries()) {
    await publish(channel, { i });
  }
  await publish('not-subscribed', { never: true });
  await publish(channels[0], { last: true });
  await waitFor(() => pubs.length >= channels.length + 1, 5000, 'the publications');
  log('publications', { pubs: pubs.map((p) => ({ channel: p.channel, data: p.data, offset: p.offset })) });
  check(pubs.length === channels.length + 1, 'wrong number of publications', { count: pubs.length });
  channels.forEach((channel, i) => {
    check(pubs[i].channel === channel && pubs[i].data.i === i, 'wrong publication', pubs[i]);
  });
  check(pubs[channels.length].data.last === true, 'the last publication is wrong');
  check(pubs.every((p) => p.offset > 0), 'publication without an offset');
  client.disconnect();
  ok({ received: pubs.length });
}

main();
