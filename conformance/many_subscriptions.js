'use strict';
// Many subscriptions on one connection: COUNT channels subscribed at once (the server API's
// `channels` shows every one), one publication to each arrives on its own subscription
// only; after half are unsubscribed (and the server has let them go), a second round
// reaches the other half alone, and the connection was never re-established.
const {
  api, check, collect, env, hardTimeout, network, newClient, ok, publish, sleep, tokens, waitFor,
} = require('./lib');

hardTimeout(20000);

async function main() {
  const prefix = env('CHANNEL_PREFIX');
  const count = Number(env('COUNT', '50'));
  const client = newClient(network(), { token: tokens.main });
  const subs = [];
  for (let i = 0; i < count; i++) {
    const sub = client.newSubscription(`${prefix}-${i}`);
    sub.pubs = collect(sub, `sub${i}`);
    sub.subscribe();
    subs.push(sub);
  }
  client.connect();
  await waitFor(() => subs.every((s) => s.state === 'subscribed'), 10000,
    `all ${count} subscriptions`);
  const serverSide = async () => {
    const answer = await api('channels', { pattern: `${prefix}-*` });
    return Object.keys(answer.result.channels).sort();
  };
  const names = (list) => list.map((s) => s.channel).sort();
  check(JSON.stringify(await serverSide()) === JSON.stringify(names(subs)),
    'the server does not hold every subscription', { held: await serverSide() });

  await Promise.all(subs.map((s, i) => publish(s.channel, { i, round: 1 })));
  await waitFor(() => subs.every((s) => s.pubs.length === 1), 10000,
    'one publication on every subscription');
  subs.forEach((s, i) => check(s.pubs[0].data.i === i && s.pubs[0].channel === s.channel,
    'a publication arrived on the wrong subscription', { channel: s.channel, pub: s.pubs[0] }));

  const dropped = subs.filter((_, i) => i % 2 === 0);
  const kept = subs.filter((_, i) => i % 2 === 1);
  for (const sub of dropped) {
    sub.unsubscribe();
  }
  // The SDK forgets a channel at once; the server lets it go when the command arrives.
  for (let held = await serverSide(); JSON.stringify(held) !== JSON.stringify(names(kept));
    held = await serverSide()) {
    await sleep(20);
  }
  // Once every kept channel has its second publication, a dropped one's would have too.
  await Promise.all(subs.map((s, i) => publish(s.channel, { i, round: 2 })));
  await waitFor(() => kept.every((s) => s.pubs.length === 2), 10000,
    'the second round on the kept subscriptions');
  check(dropped.every((s) => s.pubs.length === 1 && s.state === 'unsubscribed'),
    'an unsubscribed channel still delivered',
    { late: dropped.filter((s) => s.pubs.length !== 1).map((s) => s.channel) });
  const connects = client.states.filter((h) => h.event === 'connected');
  check(connects.length === 1, 'the client reconnected', { states: client.states });
  client.disconnect();
  ok({ subscriptions: count, kept: kept.length, transport: connects[0].transport });
}

main();
