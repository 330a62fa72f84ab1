// Runs inside workerd beside the bench worker, so that bursts of requests start from inside the
// runtime rather than through Node: POST {op, ...} with op "burst" or "call".
const plain = (v) => JSON.parse(JSON.stringify(v, (_k, x) => (x instanceof Uint8Array ? x.length : x)));

export default {
  async fetch(request, env) {
    const body = await request.json();
    const probe = (name) => env.PROBE.get(env.PROBE.idFromName(name));
    if (body.op === "call") {
      try {
        return Response.json({ ok: plain(await probe(body.name)[body.method](...(body.args ?? []))) });
      } catch (e) {
        return Response.json({ error: e.message });
      }
    }
    if (body.op === "burst") {
      // n starts at once, spread over the origins, each with its own tag.
      const { origins, n, url, options, prefix } = body;
      const settled = await Promise.allSettled([...Array(n)].map((_, i) =>
        probe(origins[i % origins.length]).start(url.replace("{i}", i), options, `${prefix}${i}`)));
      return Response.json({
        started: settled.filter((s) => s.status === "fulfilled").map((s) => plain(s.value)),
        errors: settled.filter((s) => s.status === "rejected").map((s) => String(s.reason?.message ?? s.reason)),
      });
    }
    return new Response("unknown op", { status: 400 });
  },
};
