'use strict';
// A `$` channel needs a subscription token: the Subscription's getToken is called with
// the channel, its token is accepted; a token for another channel is refused (103).
const {
  check, collect, env, hardTimeout, log, network, newClient, ok, publish, tokens, waitFor,
} = require('./lib');

hardTimeout(15000);

async function main() {
  const channel = env('CHANNEL');
  const other = env('OTHER_CHANNEL');
  const net = network();
  const client = newClient(net, { token: tokens.main });
  const asked = [];
  const sub = client.newSubscription(channel, {
    getToken: async (ctx) => {
      asked.push(ctx.channel);
      return tokens.sub;
    },
  });
  const pubs = collect(sub, 'sub');
  const refused = client.newSubscription(other, {
    getToken: async (ctx) => {
      asked.push(ctx.channel);
      return tokens.sub; // a token for `channel`, not for `other`
    },
  });
  collect(refused, 'other');
  let refusal = null;
  refused.on('unsubscribed', (ctx) => { refusal = ctx; });
  sub.subscribe();
  refused.subscribe();
  client.connect();
  await waitFor(() => sub.state === 'subscribed', 5000, 'the private subscription');
  await waitFor(() => refusal !== null, 5000, 'the refusal of the other channel');
  log('asked', { asked });
  check(asked.includes(channel) && asked.includes(other), 'getToken was not asked per channel',
    { asked });
  const command = net.commands('subscribe').find((c) => c.subscribe.channel === channel);
  check(command.subscribe.token === tokens.sub, 'the subscribe command lacks the token', command);
  check(refusal.code === 103, 'the other channel was not refused with 103', refusal);
  check(refused.state === 'unsubscribed', 'the refused subscription is not unsubscribed');

  await publish(channel, { secret: 42 });
  await waitFor(() => pubs.length === 1, 5000, 'the private publication');
  check(pubs[0].data.secret === 42, 'wrong private publication', pubs[0]);
  check(client.state === 'connected', 'the connection suffered from the refusal');
  client.disconnect();
  ok({ asked });
}

main();
