"""Web Push (RFC 8030, 8291, 8292): a user whose tabs are all closed still hears of a
publication to their channel, through the push service of their browser.

- :mod:`.vapid`: the application server's key (VAPID) and the ``Authorization`` it signs;
- :mod:`.subscription`: a browser's push subscription, checked, and how it is stored;
- :mod:`.message`: one push message (payload, encryption, headers), pure;
- :mod:`.address`: which push endpoints tidings may reach (no requests into its own network);
- :mod:`.sender`: the bounded queue, the HTTP requests, retries, dropping gone subscriptions;
- :mod:`.service`: registration and the decision of what is pushed, to whom, by which worker.
"""
