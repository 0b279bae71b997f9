'use strict';
// Recovery from the log. The client sees one live publication, goes away, and MISSED
// events of its channel are published among many of other users' (by the Python side,
// straight into RabbitMQ, far more than the channel's history window holds). The scenario
// waits for the file GO_FILE, then reconnects (to RECONNECT_URL when set: another node):
// - EXPECT_RECOVERED=true: `subscribed` says recovered: true, the subscribe reply carries
//   every missed event, each once, in order, and a live event follows;
// - EXPECT_RECOVERED=false (past recovery_max_publications): recovered: false, nothing of
//   what was missed is delivered, and a live event follows.
const fs = require('fs');
const {
  check, collect, env, hardTimeout, log, newClient, ok, publish, recordingNetwork, sleep, tokens,
  waitFor,
} = require('./lib');

hardTimeout(90000);

const channel = env('CHANNEL');
const missed = Number(env('MISSED'));
const expectRecovered = env('EXPECT_RECOVERED') === 'true';
const goFile = env('GO_FILE');
const reconnectUrl = env('RECONNECT_URL', '');

async function main() {
  const net = recordingNetwork();
  // The subscribe reply waits for the read of the log: more than the usual test timeout.
  const client = newClient(net, { token: tokens.main, timeout: 30000 });
  const sub = client.newSubscription(channel);
  const pubs = collect(sub, 'sub');
  sub.subscribe();
  client.connect();
  await waitFor(() => sub.state === 'subscribed', 5000, 'the subscription');
  await publish(channel, { seq: 0 });
  await waitFor(() => pubs.length === 1, 5000, 'the live publication');
  client.disconnect();
  log('away', { offset: pubs[0].offset });
  while (!fs.existsSync(goFile)) {
    await sleep(20);
  }
  if (reconnectUrl) {
    net.redirect = reconnectUrl;
  }
  client.connect();
  await waitFor(() => sub.subscribedEvents.length === 2, 60000, 'the resubscription');
  const again = sub.subscribedEvents[1];
  check(again.wasRecovering === true, 'subscribed event without wasRecovering', again);
  check(again.recovered === expectRecovered,
    `expected recovered: ${expectRecovered}, got ${again.recovered}`, { again });
  const replies = net.received.filter((m) => m.subscribe && m.subscribe.was_recovering);
  const replayed = replies.length ? (replies[0].subscribe.publications || []).length : 0;
  await publish(channel, { seq: 'live' });
  await waitFor(() => pubs.length > 1 && pubs[pubs.length - 1].data.seq === 'live', 10000,
    'the live publication after the recovery');
  const got = pubs.slice(1, -1).map((p) => p.data.seq);
  if (expectRecovered) {
    const wrong = got.findIndex((seq, i) => seq !== i + 1);
    check(got.length === missed && wrong === -1,
      `expected seq 1..${missed} once each in order, got ${got.length} (first wrong at ${wrong})`,
      { around: got.slice(Math.max(0, wrong - 3), wrong + 3) });
    for (let i = 1; i < pubs.length; i++) {
      check(pubs[i].offset > pubs[i - 1].offset, 'offsets out of order', { at: i });
    }
    check(replayed === missed, `the subscribe reply replayed ${replayed}, not ${missed}`);
  } else {
    check(got.length === 0, `a failed recovery delivered ${got.length} publications`);
    check(replayed === 0, 'a failed recovery replayed publications', { replayed });
  }
  client.disconnect();
  ok({ received: pubs.length, replayed, recovered: again.recovered });
}

main();
