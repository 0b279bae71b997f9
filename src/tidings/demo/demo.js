// The tidings demo page: one EventSource per tab, toasts for the chosen user's events,
// and who is online: the presence of the shared channel demo:online, kept current by its
// join/leave pushes.
//
// The stream is /events?token=…; every event carries `id: <epoch>:<position>`, so the
// browser's own reconnects send Last-Event-ID and resume. A reopen by this page (the
// "drop connection" button, a new token) passes the id as ?last_event_id=, because a
// browser sends the header only on its own reconnects.
'use strict';

(() => {
  const params = new URLSearchParams(window.location.search);
  const USERS = ['alice', 'bob', 'carol'];
  const DROP_SECONDS = Number(params.get('reconnect_delay') || 4);
  const TOAST_MS = 8000;
  const MAX_TOASTS = 4;  // the feed keeps every event
  const VERBS = {
    'invoice.created': 'created',
    'invoice.sent': 'sent',
    'invoice.paid': 'paid',
    'invoice.overdue': 'is overdue',
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    user: USERS.includes(params.get('user')) ? params.get('user') : 'alice',
    source: null,       // the open EventSource
    token: '',          // the connection token of the open stream (also Web Push's)
    generation: 0,      // bumps on every (re)open; stale callbacks compare against it
    lastEventId: '',    // "<epoch>:<position>", echoed back on reopen
    head: 0,            // the position at connect: events at or below it were replayed
    seen: new Set(),    // channel:position of every publication shown
    timer: null,
    retries: 0,
    online: new Map(),  // client id -> user, on demo:online
    left: new Set(),    // clients that left since this connect (the snapshot may be older)
    presenceRound: 0,   // bumps per connect; a late snapshot of an older one is dropped
  };
  const ONLINE_CHANNEL = 'demo:online';

  // ------------------------------------------------------------------ status
  function setStatus(kind, text) {
    $('status').dataset.state = kind;
    $('status-text').textContent = text;
    $('drop').disabled = kind !== 'live';
  }

  function showPosition() {
    const id = state.lastEventId;
    $('last-id').textContent = id || '–';
    $('position').textContent = id ? id.slice(id.lastIndexOf(':') + 1) : '–';
  }

  // ------------------------------------------------------------------ stream
  async function open(resumeFrom) {
    clearTimeout(state.timer);
    const generation = ++state.generation;
    setStatus('connecting', resumeFrom ? 'Reconnecting…' : 'Connecting…');
    let token;
    try {
      const response = await fetch(`/demo/token?user=${encodeURIComponent(state.user)}`);
      if (!response.ok) throw new Error(`token request failed (${response.status})`);
      token = (await response.json()).token;
    } catch (error) {
      if (generation === state.generation) retryLater(`Offline: ${error.message}`);
      return;
    }
    if (generation !== state.generation) return;  // the user switched meanwhile
    state.token = token;
    let url = `/events?token=${encodeURIComponent(token)}`;
    if (resumeFrom) url += `&last_event_id=${encodeURIComponent(resumeFrom)}`;
    const source = new EventSource(url);
    state.source = source;
    source.onmessage = (event) => {
      if (generation === state.generation) onMessage(event);
    };
    source.addEventListener('gap', (event) => {
      if (generation === state.generation) onGap(event);
    });
    source.onerror = () => {
      if (generation !== state.generation) return;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (e.g. an expired token): the browser gives up, so this page retries.
        retryLater('Connection refused; retrying…');
      } else {
        setStatus('reconnecting', 'Connection lost; the browser is reconnecting…');
      }
    };
  }

  function close() {
    state.generation++;
    clearPresence();
    clearTimeout(state.timer);
    if (state.source) state.source.close();
    state.source = null;
  }

  function retryLater(text) {
    close();
    const delay = Math.min(30, 2 ** state.retries++);
    setStatus('offline', `${text} (retry in ${delay} s)`);
    const generation = state.generation;
    state.timer = setTimeout(() => {
      if (generation === state.generation) open(state.lastEventId);
    }, delay * 1000);
  }

  function onMessage(event) {
    if (event.lastEventId) state.lastEventId = event.lastEventId;
    const push = JSON.parse(event.data);
    if (push.connect) {
      state.retries = 0;
      const sub = (push.connect.subs || {})[`user#${state.user}`] || {};
      state.head = sub.offset || 0;
      $('client').textContent = push.connect.client.slice(0, 8);
      setStatus('live', sub.was_recovering ? 'Live · caught up after reconnect' : 'Live');
      loadPresence(push.connect.client);
    } else if (push.channel === ONLINE_CHANNEL && (push.join || push.leave)) {
      onPresenceChange(push.join ? 'join' : 'leave', (push.join || push.leave).info);
    } else if (push.pub) {
      onPublication(push.channel, push.pub);
    } else if (push.disconnect) {
      setStatus('reconnecting', `Server closed the stream: ${push.disconnect.reason}`);
    }
    showPosition();
  }

  function onGap(event) {
    if (event.lastEventId) state.lastEventId = event.lastEventId;
    const gap = JSON.parse(event.data);
    // demo:online carries no publications; its list is read afresh on every connect.
    if (gap.channel === ONLINE_CHANNEL) return;
    // A real application reloads this channel's state from its own API here.
    addDivider(`Missed events on ${gap.channel} could not be replayed (the server restarted?). ` +
      'A real app would reload its state now.');
    toast('Some events could not be recovered', 'Reloading state is up to the app.', 'warning');
    showPosition();
  }

  // ------------------------------------------------------------------ presence
  // On every connect: a fresh list from GET /demo/presence (the channel's presence,
  // cluster-wide), merged with the join/leave pushes that arrive meanwhile.
  async function loadPresence(ownClient) {
    const round = ++state.presenceRound;
    state.online = new Map([[ownClient, state.user]]);
    state.left = new Set();
    renderPresence();
    let presence;
    try {
      const response = await fetch('/demo/presence');
      if (!response.ok) throw new Error(`presence request failed (${response.status})`);
      presence = (await response.json()).presence;
    } catch (error) {
      if (round === state.presenceRound) $('online-empty').textContent = error.message;
      return;
    }
    if (round !== state.presenceRound) return;
    for (const [client, info] of Object.entries(presence)) {
      if (!state.left.has(client)) state.online.set(client, info.user);
    }
    renderPresence();
  }

  function onPresenceChange(kind, info) {
    if (kind === 'join') {
      state.left.delete(info.client);
      state.online.set(info.client, info.user);
    } else {
      state.left.add(info.client);
      state.online.delete(info.client);
    }
    renderPresence();
  }

  function clearPresence() {
    state.presenceRound++;
    state.online = new Map();
    renderPresence();
  }

  function renderPresence() {
    const tabs = new Map();  // user -> connections (tabs) open
    for (const user of state.online.values()) tabs.set(user, (tabs.get(user) || 0) + 1);
    const items = [...tabs.keys()].sort().map((user) => {
      const item = document.createElement('li');
      item.className = user === state.user ? 'online-user you' : 'online-user';
      item.dataset.user = user;
      item.append(user === state.user ? `${user} (you)` : user);
      if (tabs.get(user) > 1) {
        const count = document.createElement('span');
        count.className = 'tabs';
        count.textContent = `${tabs.get(user)} tabs`;
        item.append(count);
      }
      return item;
    });
    $('online').replaceChildren(...items);
    $('online-count').textContent = items.length ? `(${items.length})` : '';
    $('online-empty').hidden = items.length > 0;
    if (!items.length) $('online-empty').textContent = 'Not connected.';
  }

  // ------------------------------------------------------------------ events
  function describe(data) {
    if (data && VERBS[data.kind]) {
      return `Invoice #${data.invoice} ${VERBS[data.kind]} — $${data.amount}`;
    }
    return JSON.stringify(data);
  }

  function onPublication(channel, pub) {
    const key = `${channel}:${pub.offset}`;
    const duplicate = state.seen.has(key);
    state.seen.add(key);
    const replayed = pub.offset <= state.head;
    const text = describe(pub.data);
    addEvent(text, pub, { replayed, duplicate });
    if (!duplicate) {
      toast(text, replayed ? 'Missed while disconnected, delivered on reconnect' : `for ${state.user}`,
        pub.data && pub.data.kind === 'invoice.overdue' ? 'warning' : 'info');
    }
  }

  function addEvent(text, pub, { replayed, duplicate }) {
    const item = document.createElement('li');
    item.className = 'event';
    item.dataset.offset = String(pub.offset);
    item.dataset.kind = (pub.data && pub.data.kind) || '';
    const main = document.createElement('span');
    main.className = 'event-text';
    main.textContent = text;
    const meta = document.createElement('span');
    meta.className = 'event-meta';
    meta.textContent = `#${pub.offset} · ${new Date().toLocaleTimeString()}`;
    item.append(main);
    if (replayed) item.append(tag('replayed', 'recovered'));
    if (duplicate) item.append(tag('duplicate', 'duplicate!'));
    item.append(meta);
    prepend(item);
  }

  function addDivider(text) {
    const item = document.createElement('li');
    item.className = 'divider';
    item.textContent = text;
    prepend(item);
  }

  function tag(kind, text) {
    const span = document.createElement('span');
    span.className = `tag ${kind}`;
    span.textContent = text;
    return span;
  }

  function prepend(item) {
    const feed = $('feed');
    feed.prepend(item);
    while (feed.children.length > 200) feed.lastElementChild.remove();
    const count = feed.querySelectorAll('.event').length;
    $('feed-count').textContent = `${count} event${count === 1 ? '' : 's'}`;
    $('feed-empty').hidden = feed.children.length > 0;
  }

  function toast(title, detail, tone) {
    const box = document.createElement('div');
    box.className = `toast ${tone}`;
    box.setAttribute('role', 'status');
    const strong = document.createElement('strong');
    strong.textContent = title;
    const small = document.createElement('span');
    small.textContent = detail;
    box.append(strong, small);
    box.addEventListener('click', () => box.remove());
    const stack = $('toasts');
    stack.append(box);
    while (stack.children.length > MAX_TOASTS) stack.firstElementChild.remove();
    setTimeout(() => box.classList.add('leaving'), TOAST_MS - 300);
    setTimeout(() => box.remove(), TOAST_MS);
  }

  // ------------------------------------------------------------------ web push
  // "Notify me when the tab is closed": the service worker /sw.js shows each push; the
  // browser's push subscription, made with the server's VAPID key (GET /push/key), is
  // handed to tidings with this tab's token (POST /push/subscribe). tidings then pushes a
  // publication to user#<you> whenever no tab of yours is connected. #push's data-step
  // names the step under way, and data-failed-at the one that failed.
  function pushStep(step, text) {
    $('push').dataset.step = step;
    $('push-text').textContent = text;
  }

  async function json(response) {
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    return answer.result;
  }

  async function enablePush() {
    delete $('push').dataset.failedAt;
    if (!('serviceWorker' in navigator) || !('PushManager' in window)) {
      pushStep('unsupported', 'This browser offers no Web Push.');
      return;
    }
    const user = state.user;
    $('notify').disabled = true;
    try {
      pushStep('key', 'Asking tidings for its key…');
      const { key } = await json(await fetch('/push/key'));
      pushStep('permission', 'Asking for permission to notify…');
      if (await Notification.requestPermission() !== 'granted') {
        throw new Error('notifications are not allowed for this page');
      }
      pushStep('worker', 'Starting the service worker…');
      await navigator.serviceWorker.register('/sw.js', { scope: '/' });
      const registration = await navigator.serviceWorker.ready;
      pushStep('subscribing', "Subscribing with the browser's push service…");
      const subscription = await registration.pushManager.subscribe({
        userVisibleOnly: true, applicationServerKey: key,
      });
      pushStep('registering', 'Registering with tidings…');
      await json(await fetch('/push/subscribe', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${state.token}` },
        body: JSON.stringify(subscription.toJSON()),
      }));
      pushStep('done', `On: close every tab of ${user}, then send ${user} an event.`);
    } catch (error) {
      $('push').dataset.failedAt = $('push').dataset.step;
      pushStep('failed', `Not enabled: ${error.message}`);
    } finally {
      $('notify').disabled = false;
    }
  }

  // ------------------------------------------------------------------ controls
  function selectUser(user) {
    close();
    state.user = user;
    state.lastEventId = '';
    state.head = 0;
    state.seen.clear();
    state.retries = 0;
    $('feed').replaceChildren();
    prepend(Object.assign(document.createElement('li'), {
      className: 'divider', textContent: `Signed in as ${user}`,
    }));
    for (const button of document.querySelectorAll('.user')) {
      button.setAttribute('aria-checked', String(button.dataset.user === user));
    }
    $('channel').textContent = `user#${user}`;
    $('client').textContent = '–';
    const other = USERS.find((u) => u !== user);
    $('other-tab').href = `/?user=${other}`;
    $('other-tab').textContent = `Open as ${other}`;
    const url = new URL(window.location.href);
    url.searchParams.set('user', user);
    window.history.replaceState(null, '', url);
    showPosition();
    open('');
  }

  function drop() {
    close();
    let left = DROP_SECONDS;
    const tick = () => {
      if (left <= 0) {
        open(state.lastEventId);
        return;
      }
      setStatus('dropped', `Disconnected · reopening in ${left} s`);
      left -= 1;
      state.timer = setTimeout(tick, 1000);
    };
    tick();
  }

  async function send(event) {
    event.preventDefault();
    const body = {
      user: $('to').value,
      kind: $('kind').value,
      invoice: Number($('invoice').value),
      amount: $('amount').value.trim(),
    };
    const result = $('send-result');
    try {
      const response = await fetch('/demo/publish', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      const answer = await response.json();
      if (!response.ok) throw new Error(answer.error || response.statusText);
      result.textContent = `Sent to ${body.user}: ${describe(answer.result.data)}`;
      $('invoice').value = String(body.invoice + 1);
    } catch (error) {
      result.textContent = `Not sent: ${error.message}`;
    }
  }

  for (const button of document.querySelectorAll('.user')) {
    button.addEventListener('click', () => {
      if (button.dataset.user !== state.user) selectUser(button.dataset.user);
    });
  }
  $('drop').addEventListener('click', drop);
  $('notify').addEventListener('click', enablePush);
  $('send-form').addEventListener('submit', send);
  $('to').value = USERS.find((u) => u !== state.user);
  selectUser(state.user);
})();
