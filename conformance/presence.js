'use strict';
// Presence, presence stats, join/leave and client publish with the unmodified SDK:
// A subscribes asking for join/leave, B joins (A sees the join, presence shows both), B
// publishes (both receive it, with B's info), a publish without permission is refused
// with 103, B leaves (A sees the leave, presence shows A alone). On a namespace with
// force_push_join_leave, C gets joins without asking. With B_NODE_URL, B and D are
// clients of another node: joins, leaves and publications cross between the nodes, and
// presence converges there within PRESENCE_WITHIN ms (the cluster's documented bound).
const {
  check, collect, env, eventually, fail, hardTimeout, log, network, newClient, ok, tokens,
  waitFor,
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
  const bNode = env('B_NODE_URL', '') || undefined;
  const within = Number(env('PRESENCE_WITHIN', '0'));

  const a = newClient(network(), { token: tokens.a }, 'a');
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

  const b = newClient(network(), { token: tokens.b, node: bNode }, 'b');
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

  const both = [aId, bId].sort().join();
  const presence = await eventually(() => subA.presence(),
    (p) => Object.keys(p.clients).sort().join() === both, within, 'presence of exactly A and B');
  log('presence', presence);
  check(presence.clients[aId].user === 'alice' && presence.clients[aId].connInfo.name === 'Alice',
    "A's presence entry lacks its user or conn_info", presence.clients[aId]);
  const stats = await eventually(() => subA.presenceStats(),
    (st) => st.numClients === 2 && st.numUsers === 2, within, 'stats of two clients');
  const seenByB = await eventually(() => subB.presence(),
    (p) => Object.keys(p.clients).sort().join() === both, within, 'the same presence at B');
  check(seenByB.clients[aId].user === 'alice', "B does not see A's user", seenByB);

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
  const after = await eventually(() => subA.presenceStats(),
    (st) => st.numClients === 1 && st.numUsers === 1, within, 'stats of one client after B left');
  await eventually(() => subA.presence(), (p) => Object.keys(p.clients).join() === aId, within,
    'presence of A alone after B left');

  // force_push_join_leave: C gets the join of D without asking for it.
  const c = newClient(network(), { token: tokens.a }, 'c');
  const subC = c.newSubscription(lobby);
  collect(subC, 'subC');
  const joinsC = [];
  subC.on('join', (ctx) => joinsC.push(ctx.info));
  subC.subscribe();
  c.connect();
  await waitFor(() => subC.state === 'subscribed', 5000, 'C subscribed');
  const d = newClient(network(), { token: tokens.b, node: bNode }, 'd');
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
