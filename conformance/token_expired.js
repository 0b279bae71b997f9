'use strict';
// Expired tokens. (a) The first token is already expired: connect gets error 109, the SDK
// calls getToken and connects with the new token. (b) The token expires on a live
// connection that does not refresh in time (getToken is slow): the server closes with
// 3005 after its grace, the SDK reconnects, gets a new token and resubscribes.
const {
  check, collect, env, hardTimeout, log, newClient, ok, publish, recordingNetwork, scaled, sleep,
  tokens, waitFor,
} = require('./lib');

hardTimeout(25000);

async function expiredAtConnect(channel) {
  const net = recordingNetwork();
  let calls = 0;
  const client = newClient(net, {
    token: tokens.expired,
    getToken: async () => {
      calls += 1;
      log('a.getToken', { calls });
      return tokens.long;
    },
  }, 'a');
  const sub = client.newSubscription(channel);
  const pubs = collect(sub, 'a.sub');
  sub.subscribe();
  client.connect();
  await waitFor(() => sub.state === 'subscribed', 5000, '(a) the subscription');
  const replies = net.replies('connect');
  log('a.connect-replies', { replies });
  check(replies.length === 2, '(a) expected two connect attempts', { replies });
  check(replies[0].error && replies[0].error.code === 109, '(a) first connect not refused with 109',
    replies[0]);
  check('connect' in replies[1], '(a) second connect failed', replies[1]);
  check(net.commands('connect')[1].connect.token === tokens.long,
    '(a) the second connect did not use the new token');
  check(calls === 1, '(a) getToken not called exactly once', { calls });
  await publish(channel, { phase: 'a' });
  await waitFor(() => pubs.length === 1, 5000, '(a) a publication');
  client.disconnect();
}

async function expiresWhileConnected(channel) {
  const net = recordingNetwork();
  let calls = 0;
  let release = null;
  const client = newClient(net, {
    token: tokens.short,
    getToken: () => {
      calls += 1;
      log('b.getToken', { calls });
      if (calls === 1) {
        // The refresh call hangs (a slow auth backend) until the connection is gone.
        return new Promise((resolve) => { release = () => resolve(tokens.long); });
      }
      return Promise.resolve(tokens.long);
    },
  }, 'b');
  const sub = client.newSubscription(channel);
  const pubs = collect(sub, 'b.sub');
  sub.subscribe();
  client.connect();
  await waitFor(() => sub.state === 'subscribed', 5000, '(b) the subscription');
  const firstClient = client.states.find((h) => h.event === 'connected').client;

  await waitFor(() => client.states.some((h) => h.event === 'connecting' && h.code === 3005),
    Number(env('SHORT_TTL')) * 1000 + 8000, '(b) the server to close the expired connection (3005)');
  const closedAt = Date.now();
  const expiry = Number(env('SHORT_EXP')) * 1000;
  log('b.closed', { msAfterExpiry: closedAt - expiry });
  check(closedAt >= expiry, '(b) closed before the token expired');
  release();
  await waitFor(() => client.states.filter((h) => h.event === 'connected').length === 2, 5000,
    '(b) the reconnection');
  const second = client.states.filter((h) => h.event === 'connected')[1];
  check(second.client !== firstClient, '(b) same client id after reconnecting');
  const replies = net.replies('connect');
  log('b.connect-replies', { replies: replies.map((r) => ('error' in r ? r : { id: r.id, ok: true })) });
  check(replies.some((r) => r.error && r.error.code === 109), '(b) the old token was not refused with 109');
  check(calls >= 2, '(b) getToken was not called for the reconnect', { calls });
  check(client.state === 'connected', '(b) not connected at the end');
  await waitFor(() => sub.state === 'subscribed', 5000, '(b) the resubscription');
  await publish(channel, { phase: 'b' });
  await waitFor(() => pubs.length === 1, 5000, '(b) a publication after reconnecting');
  client.disconnect();
  return calls;
}

async function main() {
  await expiredAtConnect(env('CHANNEL') + '-a');
  const calls = await expiresWhileConnected(env('CHANNEL') + '-b');
  ok({ getTokenCalls: calls });
}

main();
