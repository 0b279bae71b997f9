// The demo's service worker: it shows each Web Push message tidings sends while no tab of
// the user is connected, and brings the demo page back when the notification is clicked.
//
// A message is the JSON {"channel", "offset", "data"}, or {"channel", "offset",
// "truncated": true} for a publication too large for a push message (the page would then
// read the channel's history). Served at /sw.js, so its scope is the whole demo ("/")
// without a Service-Worker-Allowed header.
'use strict';

function summary(message) {
  if (message.truncated) return 'A new event, too large to show here: open the page.';
  const data = message.data;
  if (data && typeof data.kind === 'string' && data.invoice) {
    const what = data.kind.replace(/^invoice\./, '');
    return `Invoice #${data.invoice} ${what} · $${data.amount}`;
  }
  return JSON.stringify(data);
}

function read(event) {
  if (!event.data) return {};
  try {
    return event.data.json();
  } catch (error) {
    return { data: event.data.text() };
  }
}

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  const message = read(event);
  const channel = typeof message.channel === 'string' ? message.channel : '';
  const hash = channel.lastIndexOf('#');
  const user = hash >= 0 ? channel.slice(hash + 1) : '';
  event.waitUntil(self.registration.showNotification(`tidings · for ${user || 'you'}`, {
    body: summary(message),
    // One notification per publication, however many times it is delivered.
    tag: `${channel}@${message.offset}`,
    data: { path: user ? `/?user=${encodeURIComponent(user)}` : '/' },
  }));
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = new URL(event.notification.data.path, self.location.origin).href;
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    const same = windows.find((client) => client.url === url);
    if (same) return same.focus();
    if (windows.length) return windows[0].navigate(url).then((client) => client && client.focus());
    return self.clients.openWindow(url);
  })());
});
