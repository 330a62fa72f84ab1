// A plain JS worker beside the Rust one: it calls the Rust entrypoint and Durable Object with
// plain objects, and serves JsMath, an entrypoint the Rust side calls through a generated client.
import { WorkerEntrypoint } from "cloudflare:workers";

export class JsMath extends WorkerEntrypoint {
  add(a, b) {
    return a + b;
  }
  describe(g) {
    return { text: `${g.name} seen by JS (blob is Uint8Array: ${g.blob instanceof Uint8Array})`, blob: g.blob };
  }
  fail() {
    throw new TypeError("JsMath.fail says no");
  }
}

async function outcome(promise) {
  try {
    return { ok: await promise };
  } catch (e) {
    return { error: { name: e.name, message: e.message, rpc: e.proxyFetchRpcError, handler: e.proxyFetchHandlerError } };
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const greeter = env.GREETER;
    switch (url.pathname) {
      case "/greet": {
        const r = await greeter.greet({ name: "js", times: 2, blob: new Uint8Array([1, 2, 3]) }, "?");
        return Response.json({ text: r.text, blobIsUint8Array: r.blob instanceof Uint8Array, blob: [...r.blob] });
      }
      case "/same-name": {
        const a = await env.GREETER.greet({ name: "x", times: 1, blob: new Uint8Array() }, "");
        const b = await env.ADMIN.greet({ name: "x", times: 1, blob: new Uint8Array() }, "");
        return Response.json({ greeter: a.text, admin: b.text, version: await env.RUST_DEFAULT.version() });
      }
      case "/panic": {
        const counter = env.COUNTER.get(env.COUNTER.idFromName("survives-crash"));
        await counter.set(5);
        // Acknowledged background work in flight when the instance crashes.
        await greeter.recordLater("lost-in-crash", 1, 2000);
        const t0 = Date.now();
        const crash = await outcome(env.CRASHER.explode(10));
        const crashMs = Date.now() - t0;
        const after = await outcome(greeter.greet({ name: "after", times: 1, blob: new Uint8Array() }, "!"));
        const kept = await outcome(counter.get());
        return Response.json({ crash, crashMs, after: after.ok?.text ?? after.error, counterAfter: kept.ok ?? kept.error });
      }
      case "/panic-isolated": {
        // Two calls in flight in the Rust worker's isolate (an awaited one and a wait_until
        // task that writes 9 to the Counter named `key`), then a call that panics.
        const key = url.searchParams.get("key");
        const counter = env.COUNTER.get(env.COUNTER.idFromName(key));
        const ticksBefore = await env.CRASHER.tick();
        const settled = [];
        const napping = outcome(env.CRASHER.nap(1500)).then((r) => (settled.push("nap"), r));
        const ack = await outcome(greeter.recordLater(key, 9, 1000));
        const crash = await outcome(env.CRASHER.explode(10));
        settled.push("explode");
        const valueAtCrash = await outcome(counter.get());
        const nap = await napping;
        const ticksAfter = await env.CRASHER.tick();
        return Response.json({ ticksBefore, ticksAfter, ack, crash, valueAtCrash, nap, settled });
      }
      case "/panic-later": {
        const ack = await outcome(env.CRASHER.explodeLater(10));
        return Response.json({ ack, ticks: await env.CRASHER.tick() });
      }
      case "/panic-do": {
        const counter = env.COUNTER.get(env.COUNTER.idFromName(url.searchParams.get("key")));
        await counter.set(4);
        const crash = await outcome(counter.explode());
        return Response.json({ crash, explosions: await counter.explosions(), value: await counter.get() });
      }
      case "/ticks":
        return Response.json(await env.CRASHER.tick());
      case "/greet-error":
        return Response.json(await outcome(greeter.greet({ name: "js", times: 0, blob: new Uint8Array() }, "")));
      case "/bad-payload": {
        const bad = await outcome(greeter.greet({ name: "js", times: "many", blob: new Uint8Array() }, ""));
        const missing = await outcome(greeter.greet({ name: "js", blob: new Uint8Array() }, ""));
        const arity = await outcome(greeter.greet({ name: "js", times: 1, blob: new Uint8Array() }));
        const next = await outcome(greeter.greet({ name: "again", times: 1, blob: new Uint8Array() }, "."));
        return Response.json({ bad, missing, arity, next: next.ok?.text });
      }
      case "/counter": {
        const counter = env.COUNTER.get(env.COUNTER.idFromName(url.searchParams.get("key")));
        const set = await counter.set(Number(url.searchParams.get("value")));
        return Response.json({ set, get: await counter.get(), fetched: await (await counter.fetch("http://do/")).text() });
      }
      default:
        return new Response("not found", { status: 404 });
    }
  },
};
