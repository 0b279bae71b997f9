'use strict';
// History through the SDK: sub.history with limit, since and reverse returns exactly the
// publications asked for, with the stream position; a channel whose history is off and a
// channel the client may not read answer their documented errors.
const {
  check, collect, env, hardTimeout, network, newClient, ok, publish, tokens, waitFor,
} = require('./lib');

hardTimeout(15000);

async function errorOf(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  return null;
}

async function main() {
  const channel = env('CHANNEL');
  const offChannel = env('OFF_CHANNEL');
  const closedChannel = env('CLOSED_CHANNEL');
  const net = network();
  const client = newClient(net, { token: tokens.main });
  const sub = client.newSubscription(channel);
  const pubs = collect(sub, 'sub');
  sub.subscribe();
  client.connect();
  await waitFor(() => sub.state === 'subscribed', 5000, 'the subscription');

  for (let n = 1; n <= 4; n++) {
    await publish(channel, { n });
  }
  await waitFor(() => pubs.length === 4, 5000, 'the four publications');
  const offsets = pubs.map((p) => p.offset);

  const position = await sub.history({});
  check(position.publications.length === 0, 'history without a limit returned publications',
    position);
  check(position.offset === offsets[3] && position.epoch !== '', 'wrong stream position',
    { position, offsets });

  const first = await sub.history({ limit: 2 });
  check(JSON.stringify(first.publications.map((p) => p.data)) === '[{"n":1},{"n":2}]',
    'limit 2 did not return the two oldest', first);
  check(first.publications[0].offset === offsets[0], 'publication offsets are missing', first);

  const rest = await sub.history({ limit: 10, since: { offset: offsets[1], epoch: first.epoch } });
  check(JSON.stringify(rest.publications.map((p) => p.data.n)) === '[3,4]',
    'since did not return what follows it', rest);

  const newest = await sub.history({ limit: 1, reverse: true });
  check(newest.publications.length === 1 && newest.publications[0].data.n === 4,
    'reverse did not start from the newest', newest);

  const wrongEpoch = await errorOf(sub.history({ limit: 1, since: { offset: 1, epoch: 'x' } }));
  check(wrongEpoch !== null && wrongEpoch.code === 112, 'another epoch was not refused (112)',
    { error: wrongEpoch });

  const off = await errorOf(client.history(offChannel, { limit: 1 }));
  check(off !== null && off.code === 108, 'history off did not answer 108', { error: off });
  const closed = await errorOf(client.history(closedChannel, { limit: 1 }));
  check(closed !== null && closed.code === 103, 'a channel not allowed did not answer 103',
    { error: closed });

  check(client.state === 'connected' && sub.state === 'subscribed',
    'the errors disturbed the connection or the subscription');
  client.disconnect();
  ok({ offsets, first: first.publications.length, rest: rest.publications.length });
}

main();
