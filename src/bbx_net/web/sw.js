// Service worker: keeps the page's shell available so the installed app opens
// instantly; the WebSocket itself is never cached. Network first, cache as fallback.
const CACHE = "bbx-net-v1";
const SHELL = ["/", "/index.html", "/app.js", "/bbx-client.js", "/manifest.webmanifest",
  "/icon.svg"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        const copy = response.clone();
        caches.open(CACHE).then((c) => c.put(url.pathname, copy));
        return response;
      })
      .catch(() => caches.match(url.pathname).then((hit) => hit || caches.match("/"))),
  );
});
