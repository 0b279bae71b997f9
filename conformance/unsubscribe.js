'use strict';
// Unsubscribe: the server answers, nothing of the channel arrives afterwards, the other
// subscription and the connection are unaffected.
const {
  check, collect, env, hardTimeout, log, newClient, ok, publish, recordingNetwork, tokens, waitFor,
} = require('./lib');

hardTimeout(15000);

async function main() {
  const channel = env('CHANNEL');
  const control = env('CONTROL_CHANNEL');
  const net = recordingNetwork();
  const client = newClient(net, { token: tokens.main });
  const sub = client.newSubscription(channel);
  const pubs = collect(sub, 'sub');
  const controlSub = client.newSubscription(control);
  const controlPubs = collect(controlSub, 'control');
  sub.subscribe();
  controlSub.subscribe();
  client.connect();
  await waitFor(() => sub.state === 'subscribed' && controlSub.state === 'subscribed', 5000,
    'both subscriptions');

  await publish(channel, { before: 1 });
  await waitFor(() => pubs.length === 1, 5000, 'the publication before unsubscribing');

  let unsubscribed = null;
  sub.on('unsubscribed', (ctx) => { unsubscribed = ctx; });
  sub.unsubscribe();
  await waitFor(() => net.replies('unsubscribe').length === 1, 5000,
    'the reply to the unsubscribe command');
  const [reply] = net.replies('unsubscribe');
  log('unsubscribe-reply', { reply });
  check(!('error' in reply) && 'unsubscribe' in reply, 'unsubscribe was not answered', reply);
  check(unsubscribed !== null && unsubscribed.code === 0, 'no unsubscribed event', unsubscribed);

  for (let n = 1; n <= 3; n++) {
    await publish(channel, { after: n });
  }
  // The control channel's publication is sent after those, on the same connection, in
  // order: once it has arrived, any publication of the dropped channel would have too.
  await publish(control, { control: true });
  await waitFor(() => controlPubs.length === 1, 5000, 'the control publication');
  check(pubs.length === 1, 'publications arrived after unsubscribe',
    { pubs: pubs.map((p) => p.data) });
  check(sub.state === 'unsubscribed', 'subscription state is not unsubscribed');
  check(client.states.filter((h) => h.event === 'connecting').length === 1,
    'the client reconnected', { states: client.states });
  client.disconnect();
  ok({ before: pubs.length, control: controlPubs.length });
}

main();
