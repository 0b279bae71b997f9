'use strict';
// Subscription token expiry: the subscribe result says expires/ttl, the SDK calls the
// Subscription's getToken again in time and sends `sub_refresh`; the subscription outlives
// its first token without resubscribing.
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
  const client = newClient(net, { token: tokens.main });
  let calls = 0;
  const sub = client.newSubscription(channel, {
    getToken: async (ctx) => {
      calls += 1;
      log('sub.getToken', { calls, channel: ctx.channel, msBeforeExpiry: firstExpiry - Date.now() });
      return calls === 1 ? tokens.subShort : tokens.subLong;
    },
  });
  const pubs = collect(sub, 'sub');
  sub.subscribe();
  client.connect();
  await waitFor(() => sub.state === 'subscribed', 5000, 'the subscription');
  const [subscribeReply] = net.replies('subscribe');
  check(subscribeReply.subscribe.expires === true && subscribeReply.subscribe.ttl >= 1,
    'the subscribe result does not announce the expiry', subscribeReply);

  await waitFor(() => net.replies('sub_refresh').length === 1, 6000, 'the sub_refresh reply');
  const [command] = net.commands('sub_refresh');
  const [reply] = net.replies('sub_refresh');
  log('sub_refresh', { command, reply });
  check(command.sub_refresh.channel === channel && command.sub_refresh.token === tokens.subLong,
    'sub_refresh did not carry the channel and the new token', command);
  check(reply.sub_refresh.expires === true && reply.sub_refresh.ttl > 30,
    'the sub_refresh result does not carry the new expiry', reply);

  const wait = firstExpiry + closeDelay + 1000 - Date.now();
  if (wait > 0) {
    await sleep(wait);
  }
  await publish(channel, { after: 'expiry' });
  await waitFor(() => pubs.length === 1, 5000, 'a publication after the first expiry');
  check(sub.subscribedEvents.length === 1, 'the subscription was renewed by resubscribing');
  check(client.states.filter((h) => h.event === 'connected').length === 1, 'the client reconnected',
    { states: client.states });
  client.disconnect();
  ok({ getTokenCalls: calls });
}

main();
