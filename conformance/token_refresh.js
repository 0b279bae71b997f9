'use strict';
// Refresh before expiry: the connect result says expires/ttl, the SDK calls getToken in
// time and sends `refresh`; the connection outlives the first token and keeps receiving.
const {
  check, collect, env, hardTimeout, log, newClient, ok, publish, recordingNetwork, sleep, tokens,
  waitFor,
} = require('./lib');

hardTimeout(20000);

async function main() {
  const channel = env('CHANNEL');
  const firstExpiry = Number(env('SHORT_EXP')) * 1000;
  const closeDelay = Number(env('EXPIRED_CLOSE_DELAY')) * 1000;
  const net = recordingNetwork();
  let calls = 0;
  const client = newClient(net, {
    token: tokens.short,
    getToken: async () => {
      calls += 1;
      log('getToken', { calls, msBeforeExpiry: firstExpiry - Date.now() });
      return tokens.long;
    },
  });
  const sub = client.newSubscription(channel);
  const pubs = collect(sub, 'sub');
  sub.subscribe();
  client.connect();
  await waitFor(() => sub.state === 'subscribed', 5000, 'the subscription');
  const [connectReply] = net.replies('connect');
  log('connect-reply', { reply: connectReply });
  check(connectReply.connect.expires === true && connectReply.connect.ttl >= 1,
    'the connect result does not announce the expiry', connectReply);

  await waitFor(() => net.replies('refresh').length === 1, 5000, 'the refresh reply');
  const [refresh] = net.commands('refresh');
  const [refreshReply] = net.replies('refresh');
  log('refresh', { command: refresh, reply: refreshReply });
  check(calls === 1, 'getToken was not called exactly once', { calls });
  check(refresh.refresh.token === tokens.long, 'refresh did not carry the new token', refresh);
  check(refreshReply.refresh.expires === true && refreshReply.refresh.ttl > 30,
    'the refresh result does not carry the new expiry', refreshReply);

  // Past the first token's expiry and the server's grace: still the same connection.
  const wait = firstExpiry + closeDelay + 1000 - Date.now();
  if (wait > 0) {
    await sleep(wait);
  }
  await publish(channel, { after: 'expiry' });
  await waitFor(() => pubs.length === 1, 5000, 'a publication after the first expiry');
  const events = client.states.map((h) => h.event);
  check(JSON.stringify(events) === JSON.stringify(['connecting', 'connected']),
    'the connection did not survive the refresh', { states: client.states });
  client.disconnect();
  ok({ getTokenCalls: calls });
}

main();
