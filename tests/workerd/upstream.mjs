// The "external API" of the tests: a real HTTP server on 127.0.0.1 whose behaviour each request
// chooses through its query string, so tests need no shared state:
//   ?delay=ms          wait before answering
//   ?status=N          answer with status N (default 200)
//   ?bytes=N           body of N bytes (a repeating 0..255 pattern), else a JSON echo
//   ?header=k:v        add a response header (repeatable)
//   ?reset=1           destroy the connection without answering
//   ?hang=1            never answer
//   ?stall=length|chunked  send the headers (with a content-length of 10, or chunked) and 3
//                      bytes of the body, then nothing more
//   ?redirect=path     answer 302 with `location: path`
//   ?fail=N&key=K      the first N requests with key K answer 503, or ?failStatus (then as asked)
//   ?gate=G&n=N        hold the answer until N requests of gate G arrived, then answer them all
// The JSON echo is { method, path, headers, body (base64), count } where count is how many
// requests this key has seen. `count(key)` and `times(key)` say when requests arrived;
// `answered(key)` when the server finished answering them (a reset or a hang never is);
// `bodies(key)` the length and SHA-256 of each request body it received.
import { createHash } from "node:crypto";
import { createServer } from "node:http";

export async function startUpstream() {
  const seen = new Map();
  const times = new Map();
  const answers = new Map();
  const bodies = new Map();
  const closes = new Map();
  const sockets = new Set();
  /** Gate name -> the requests of it waiting to be answered (`?gate=G&n=N`). */
  const gates = new Map();
  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://upstream");
    const q = (k) => url.searchParams.get(k);
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      const key = q("key") ?? url.pathname;
      res.on("finish", () => answers.set(key, [...(answers.get(key) ?? []), Date.now()]));
      res.on("close", () => closes.set(key, [...(closes.get(key) ?? []), Date.now()]));
      const count = (seen.get(key) ?? 0) + 1;
      seen.set(key, count);
      times.set(key, [...(times.get(key) ?? []), Date.now()]);
      const received = Buffer.concat(chunks);
      bodies.set(key, [...(bodies.get(key) ?? []), { length: received.length, sha256: createHash("sha256").update(received).digest("hex") }]);
      if (q("gate")) {
        const waiting = gates.get(q("gate")) ?? [];
        gates.set(q("gate"), waiting);
        await new Promise((open) => {
          waiting.push(open);
          if (waiting.length >= Number(q("n"))) waiting.splice(0).forEach((o) => o());
        });
      }
      if (q("delay")) await new Promise((r) => setTimeout(r, Number(q("delay"))));
      if (q("reset")) return req.socket.destroy();
      if (q("hang")) return;
      if (q("stall")) {
        res.writeHead(200, q("stall") === "length" ? { "content-length": "10" } : {});
        return res.write("abc");
      }
      if (q("redirect")) {
        res.writeHead(302, { location: q("redirect") });
        return res.end();
      }
      let status = Number(q("status") ?? 200);
      if (q("fail") && count <= Number(q("fail"))) status = Number(q("failStatus") ?? 503);
      const headers = {};
      for (const h of url.searchParams.getAll("header")) {
        const i = h.indexOf(":");
        headers[h.slice(0, i)] = h.slice(i + 1);
      }
      if (q("bytes")) {
        const body = Buffer.alloc(Number(q("bytes")));
        for (let i = 0; i < body.length; i++) body[i] = i % 256;
        res.writeHead(status, { "content-type": "application/octet-stream", ...headers });
        return res.end(body);
      }
      res.writeHead(status, { "content-type": "application/json", ...headers });
      res.end(JSON.stringify({
        method: req.method, path: url.pathname + url.search, headers: req.headers,
        body: Buffer.concat(chunks).toString("base64"), count,
      }));
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${server.address().port}`;
  return {
    base,
    url: (path = "/", params = {}) => {
      const u = new URL(path, base);
      for (const [k, v] of Object.entries(params)) u.searchParams.append(k, v);
      return u.toString();
    },
    count: (key) => seen.get(key) ?? 0,
    /** When each request with this key arrived (ms since epoch). */
    times: (key) => times.get(key) ?? [],
    /** When the answers to requests with this key were fully written (ms since epoch). */
    answered: (key) => answers.get(key) ?? [],
    /** The length and SHA-256 (hex) of each request body received with this key. */
    bodies: (key) => bodies.get(key) ?? [],
    /** When the exchanges with this key ended: answered, or cut by either side. */
    closed: (key) => closes.get(key) ?? [],
    close: () => new Promise((r) => {
      for (const s of sockets) s.destroy();
      server.close(r);
    }),
  };
}
