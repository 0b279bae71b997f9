'use strict';
// Presence, presence stats, join/leave and client publish with the unmodified SDK:
// A subscribes asking for join/leave, B joins (A sees the join, presence shows both), B
// publishes (both receive it, with B's info), a publish without permission is refused
// with 103, B leaves (A sees the leave, presence shows A alone). On a namespace with
// force_push_join_leave, C gets joins without asking.
const {
  check, collect, env, fail, hardTimeout, log, newClient, ok, recordingNetwork, tokens, waitFor,
} = require('./lib');

hardTimeout(20000);

async function rejected(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  return fail('the call succeeded but should have been refused');
}

async function main() {
  const room = env('ROOM');
  const lobby = env('LOBBY');
  const denied = env('DENIED');

  const a = newClient(recordingNetwork(), { token: tokens.a }, 'a');
  const subA = a.newSubscription(room, { joinLeave: true });
  const pubsA = collect(subA, 'subA');
  const joinsA = [];
  const leavesA = [];
  subA.on('join', (ctx) => { joinsA.push(ctx.info); log('subA.join', ctx); });
  subA.on('leave', (ctx) => { leavesA.push(ctx.info); log('subA.leave', ctx); });
  subA.subscribe();
  a.connect();
  await waitFor(() => subA.state === 'subscribed', 5000, 'A subscribed');
  const aId = a.states.find((h) => h.event === 'connected').client;

  const b = newClient(recordingNetwork(), { token: tokens.b }, 'b');
  const subB = b.newSubscription(room);
  const pubsB = collect(subB, 'subB');
  subB.on('join', (ctx) => fail('B did not ask for join/leave but got a join', ctx));
  subB.subscribe();
  b.connect();
  await waitFor(() => subB.state === 'subscribed', 5000, 'B subscribed');
  const bId = b.states.find((h) => h.event === 'connected').client;

  await waitFor(() => joinsA.some((i) => i.client === bId), 5000, "B's join at A");
  const join = joinsA.find((i) => i.client === bId);
  check(join.user === 'bob', 'join carries the wrong user', join);

  const presence = await subA.presence();
  log('presence', presence);
  check(Object.keys(presence.clients).sort().join() === [aId, bId].sort().join(),
    'presence does not hold exactly A and B', presence);
  check(presence.clients[aId].user === 'alice' && presence.clients[aId].connInfo.name === 'Alice',
    "A's presence entry lacks its user or conn_info", presence.clients[aId]);
  const stats = await subA.presenceStats();
  check(stats.numClients === 2 && stats.numUsers === 2, 'wrong stats with two clients', stats);

  await subB.publish({ text: 'hi from bob' });
  await waitFor(() => pubsA.length >= 1 && pubsB.length >= 1, 5000, 'the client publication');
  for (const pub of [pubsA[0], pubsB[0]]) {
    check(pub.data.text === 'hi from bob', 'wrong publication data', pub);
    check(pub.offset > 0, 'the publication has no offset', pub);
    check(pub.info && pub.info.user === 'bob' && pub.info.client === bId,
      "the publication lacks the publisher's info", pub);
  }

  const refused = await rejected(b.publish(denied, { text: 'nope' }));
  log('refused', refused);
  check(refused.code === 103, 'publish without permission was not refused with 103', refused);

  b.disconnect();
  await waitFor(() => leavesA.some((i) => i.client === bId), 5000, "B's leave at A");
  const after = await subA.presenceStats();
  check(after.numClients === 1 && after.numUsers === 1, 'wrong stats after B left', after);
  const alone = await subA.presence();
  check(Object.keys(alone.clients).join() === aId, 'presence after B left is not A alone', alone);

  // force_push_join_leave: C gets the join of D without asking for it.
  const c = newClient(recordingNetwork(), { token: tokens.a }, 'c');
  const subC = c.newSubscription(lobby);
  collect(subC, 'subC');
  const joinsC = [];
  subC.on('join', (ctx) => joinsC.push(ctx.info));
  subC.subscribe();
  c.connect();
  await waitFor(() => subC.state === 'subscribed', 5000, 'C subscribed');
  const d = newClient(recordingNetwork(), { token: tokens.b }, 'd');
  const subD = d.newSubscription(lobby);
  collect(subD, 'subD');
  subD.subscribe();
  d.connect();
  await waitFor(() => joinsC.some((i) => i.user === 'bob'), 5000, "D's forced join at C");

  for (const client of [a, c, d]) {
    client.disconnect();
  }
  ok({ joins: joinsA.length, leaves: leavesA.length, stats, after });
}

main();
