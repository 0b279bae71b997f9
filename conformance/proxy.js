'use strict';
// The application's backend in Node, written for Centrifugo's proxy protocol: it
// authenticates connections that come without a token (connect proxy, by the SDK's
// connect `data`), answers `client.rpc(method, data)` (RPC proxy) and moderates
// `sub.publish(data)` (publish proxy: refuses one, rewrites another). A wrong secret gets
// a terminal disconnect code of the application's own range, and the SDK stops.
const http = require('http');
const {
  check, collect, env, hardTimeout, log, network, newClient, ok, sleep, scaled,
  waitFor,
} = require('./lib');

hardTimeout(20000);

function backend(port) {
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (chunk) => { raw += chunk; });
    req.on('end', () => {
      const body = JSON.parse(raw);
      log('backend', { path: req.url, body });
      let answer;
      if (req.url === '/connect') {
        const secret = body.data && body.data.secret;
        answer = secret === 'letmein'
          ? { result: { user: 'js-user', data: { welcome: 'js-user' } } }
          : { disconnect: { code: 4501, reason: 'bad secret' } };
      } else if (req.url === '/publish') {
        answer = body.data.text === 'spam'
          ? { error: { code: 1003, message: 'not allowed here' } }
          : { result: { data: { text: body.data.text.toUpperCase(), by: body.user } } };
      } else if (body.method === 'sum') {
        answer = { result: { data: { sum: body.data.numbers.reduce((a, b) => a + b, 0), user: body.user } } };
      } else {
        answer = { error: { code: 1000, message: `no method ${body.method}` } };
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(answer));
    });
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

async function main() {
  const server = await backend(Number(env('BACKEND_PORT')));
  const net = network();
  const client = newClient(net, { data: { secret: 'letmein' } });
  client.connect();
  await waitFor(() => client.state === 'connected', 5000, 'the connection');
  const connected = client.states.find((h) => h.event === 'connected');
  check(connected.data && connected.data.welcome === 'js-user',
    'the connect data of the backend did not reach the client', connected);
  check(net.commands('connect')[0].connect.token === undefined, 'the SDK sent a token');

  const answer = await client.rpc('sum', { numbers: [1, 2, 3] });
  log('rpc', { answer });
  check(answer.data.sum === 6 && answer.data.user === 'js-user',
    'the rpc result is not the backend answer', answer);
  let refused = null;
  try {
    await client.rpc('drop', {});
  } catch (err) {
    refused = err;
  }
  log('rpc-refused', { refused });
  check(refused && refused.code === 1000 && refused.message === 'no method drop',
    'the backend error did not reach the caller', { refused });

  const sub = client.newSubscription(env('CHANNEL'));
  const pubs = collect(sub, 'sub');
  sub.subscribe();
  await waitFor(() => sub.state === 'subscribed', 5000, 'the subscription');
  let spam = null;
  try {
    await sub.publish({ text: 'spam' });
  } catch (err) {
    spam = err;
  }
  check(spam && spam.code === 1003, 'the backend did not refuse the publication', { spam });
  await sub.publish({ text: 'hi' });
  await waitFor(() => pubs.length === 1, 5000, 'the publication');
  log('publication', { data: pubs[0].data });
  check(pubs[0].data.text === 'HI' && pubs[0].data.by === 'js-user',
    'the publication is not the data the backend gave', pubs[0]);
  await sleep(scaled(200));
  check(pubs.length === 1, 'the refused publication was delivered', { pubs });
  client.disconnect();

  const intruderNet = network();
  const intruder = newClient(intruderNet, { data: { secret: 'guess' } }, 'intruder');
  intruder.connect();
  await waitFor(() => intruder.state === 'disconnected', 5000, 'the refusal');
  const disconnected = intruder.states.find((h) => h.event === 'disconnected');
  check(disconnected.code === 4501 && disconnected.reason === 'bad secret',
    'not disconnected with the backend code and reason', disconnected);
  await sleep(scaled(800));
  check(intruderNet.commands('connect').length === 1, 'the SDK retried a terminal refusal');
  server.close();
  ok({ sum: answer.data.sum });
}

main();
