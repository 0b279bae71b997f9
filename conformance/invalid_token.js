'use strict';
// A token the server cannot verify is final: close 3500, state disconnected with that
// code, and no reconnect attempt.
const {
  check, hardTimeout, log, network, newClient, ok, sleep, scaled, tokens, waitFor,
} = require('./lib');

hardTimeout(15000);

async function main() {
  const net = network();
  const client = newClient(net, { token: tokens.invalid });
  client.connect();
  await waitFor(() => client.state === 'disconnected', 5000, 'the disconnected state');
  const disconnected = client.states.find((h) => h.event === 'disconnected');
  check(disconnected.code === 3500, 'not disconnected with 3500', disconnected);
  // Give a (wrong) reconnect every chance to happen: several reconnect delays.
  await sleep(scaled(1500));
  const events = client.states.map((h) => h.event);
  log('history', { events });
  check(JSON.stringify(events) === JSON.stringify(['connecting', 'disconnected']),
    'the client tried again after a terminal close', { states: client.states });
  check(net.commands('connect').length === 1, 'more than one connect attempt');
  check(net.opened() === 1, 'more than one socket or stream was opened');
  check(client.state === 'disconnected', 'state changed after the terminal close');
  ok({ code: disconnected.code, reason: disconnected.reason });
}

main();
