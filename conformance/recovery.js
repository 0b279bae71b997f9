'use strict';
// Recovery. The client goes away in the middle of a stream, MISSED events are published
// while it is away, and it comes back:
// - with history enough, every event arrives exactly once and in order, the `subscribed`
//   event says recovered: true, and the missed ones came in the subscribe reply;
// - with a window smaller than what was missed, `subscribed` says recovered: false and
//   none of the missed events is delivered (no partial replay), live ones continue.
// MODE=disconnect uses client.disconnect()/connect(); MODE=outage kills the socket while
// a publisher keeps going, and keeps the network down until MISSED events went by.
const {
  check, collect, env, hardTimeout, log, newClient, ok, publish, recordingNetwork, tokens, waitFor,
} = require('./lib');

hardTimeout(30000);

const channel = env('CHANNEL');
const missed = Number(env('MISSED', '100'));
const before = 5;
const after = 5;
const expectRecovered = env('EXPECT_RECOVERED') === 'true';
const mode = env('MODE', 'disconnect');

function checkSequence(pubs, expected) {
  const got = pubs.map((p) => p.data.seq);
  const seen = new Set();
  for (const seq of got) {
    check(!seen.has(seq), `publication ${seq} was delivered twice`, { got });
    seen.add(seq);
  }
  for (let i = 1; i < pubs.length; i++) {
    check(pubs[i].data.seq > pubs[i - 1].data.seq, 'publications out of order', { got });
    check(pubs[i].offset > pubs[i - 1].offset, 'offsets out of order', { got });
  }
  const missing = expected.filter((seq) => !seen.has(seq));
  check(missing.length === 0, `${missing.length} publications missing`, { missing, got });
  const extra = got.filter((seq) => !expected.includes(seq));
  check(extra.length === 0, 'unexpected publications delivered', { extra, got });
}

async function main() {
  const net = recordingNetwork();
  const client = newClient(net, { token: tokens.main });
  const sub = client.newSubscription(channel);
  const pubs = collect(sub, 'sub');
  sub.subscribe();
  client.connect();
  await waitFor(() => sub.state === 'subscribed', 5000, 'the subscription');

  let seq = 0;
  for (; seq < before; ) {
    await publish(channel, { seq: ++seq });
  }
  await waitFor(() => pubs.length === before, 5000, 'the live publications');
  const away = { from: seq + 1 };

  if (mode === 'disconnect') {
    client.disconnect();
    for (let i = 0; i < missed; i++) {
      await publish(channel, { seq: ++seq });
    }
    away.to = seq;
    client.connect();
  } else {
    // The network fails mid-stream: the publisher does not stop for it.
    net.cut();
    for (let i = 0; i < missed; i++) {
      await publish(channel, { seq: ++seq });
    }
    away.to = seq;
    net.offline = false;
  }
  log('away', { ...away, mode });
  await waitFor(() => sub.subscribedEvents.length === 2, 10000, 'the resubscription');
  const again = sub.subscribedEvents[1];
  const resubscribe = net.commands('subscribe').filter((c) => c.subscribe.channel === channel);
  log('resubscribe-command', { command: resubscribe[resubscribe.length - 1] });
  const last = resubscribe[resubscribe.length - 1].subscribe;
  check(last.recover === true && last.offset === pubs[before - 1].offset
        && last.epoch === sub.subscribedEvents[0].streamPosition.epoch,
        'the SDK did not ask to recover from its last position', last);
  check(again.wasRecovering === true, 'subscribed event without wasRecovering', again);
  check(again.recovered === expectRecovered,
    `expected recovered: ${expectRecovered}, got ${again.recovered}`, again);

  for (let i = 0; i < after; i++) {
    await publish(channel, { seq: ++seq });
  }
  const total = seq;
  const all = Array.from({ length: total }, (_, i) => i + 1);
  const expected = expectRecovered
    ? all
    : all.filter((s) => s < away.from || s > away.to);
  await waitFor(() => pubs.length >= expected.length && pubs[pubs.length - 1].data.seq === total,
    10000, `publication ${total}`);
  const replies = net.received.filter((m) => m.subscribe && m.subscribe.was_recovering);
  const replayed = replies.length ? (replies[0].subscribe.publications || []).length : 0;
  log('received', { count: pubs.length, replayed, expected: expected.length });
  checkSequence(pubs, expected);
  if (expectRecovered) {
    check(replayed === missed, `the subscribe reply replayed ${replayed}, not ${missed}`);
  } else {
    check(replayed === 0, 'a failed recovery replayed publications', { replayed });
  }
  client.disconnect();
  ok({ received: pubs.length, replayed, recovered: again.recovered });
}

main();
