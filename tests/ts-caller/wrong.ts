// Deliberately wrong calls: each line marked `@expect-error` must fail tsc, and no other line
// may (tests/workerd/typescript.test.mjs checks the lines tsc reports against the marks).
import type { GreeterEntrypointErrors, ProxyFetchHandlerError } from "../worker/build/worker.js";
import type { Env } from "./env.js";

export async function wrong(env: Env, e: unknown): Promise<void> {
  await env.GREETER.greet({ name: "x", times: 1 }, "!"); // @expect-error `blob` is missing
  await env.GREETER.greet({ name: "x", times: "1", blob: new Uint8Array() }, "!"); // @expect-error `times` is a number
  await env.GREETER.greet({ name: "x", times: 1, blob: [1, 2] }, "!"); // @expect-error serde_bytes: a Uint8Array, not number[]
  await env.GREETER.greet({ name: "x", times: 1, blob: new Uint8Array() }); // @expect-error `suffix` is missing
  await env.GREETER.greeet({ name: "x", times: 1, blob: new Uint8Array() }, "!"); // @expect-error no such method
  const text: number = (await env.GREETER.greet({ name: "x", times: 1, blob: new Uint8Array() }, "!")).text; // @expect-error `text` is a string
  const version: number = await env.RUST_DEFAULT.version(); // @expect-error version() resolves to a string
  const counter = env.COUNTER.get(env.COUNTER.idFromName("x"));
  await counter.set("5"); // @expect-error set takes a number
  await counter.reset(); // @expect-error the Durable Object has no `reset`
  const ack: string = await env.GREETER.recordLater("k", 1, 0); // @expect-error a #[wait_until] method resolves to undefined
  await env.GREETER.recordLater("k", 1); // @expect-error `ms` is missing
  const code = (e as ProxyFetchHandlerError<GreeterEntrypointErrors["greet"]>).proxyFetchHandlerError.code; // @expect-error HandlerError has kind and message only
  await env.GREETER.echoU128(5); // @expect-error a u128 crosses as a bigint, not a number
  await env.GREETER.wide({ big: 1n, negative: -1 }, 2); // @expect-error an i128 field is a bigint
  const doubled: bigint = (await env.GREETER.wide({ big: 1n, negative: -1n }, 2)).doubled; // @expect-error a u64 crosses as a number
  const orchestrator = env.DEMO_ORCHESTRATOR.get(env.DEMO_ORCHESTRATOR.idFromName("singleton"));
  const pending: string = (await orchestrator.stats()).pending; // @expect-error `pending` is a number
  await orchestrator.stats(true); // @expect-error stats takes no argument
  await orchestrator.enqueue({}); // @expect-error the protocol's methods are not declared
  await orchestrator.complete("id"); // @expect-error the protocol's methods are not declared
  await env.DEMO_EXECUTOR.executeFetches([]); // @expect-error the protocol's methods are not declared
  const healthy: string = (await env.DEMO_EXECUTOR.health()).ok; // @expect-error `ok` is a boolean
  await env.DEMO_INBOX.get(env.DEMO_INBOX.idFromName("x")).start({ url: "u" }, { flow: "queued" }, "t"); // @expect-error `flow` is "direct" or "orchestrated"
  // Right calls beside them, which must not fail:
  const ok: string = (await env.GREETER.greet({ name: "x", times: 1, blob: new Uint8Array() }, "!")).text;
  const n: number = await counter.get();
  const big: bigint = (await env.GREETER.wide({ big: 1n, negative: -1n }, 2)).wide.big;
  const stats = await orchestrator.statsWithQueries();
  const items: number = stats.items.length + stats.in_flight + stats.overdue + stats.oldest_age_ms;
  const healthOk: boolean = (await env.DEMO_EXECUTOR.health()).ok;
  void [text, version, ack, code, ok, n, doubled, pending, healthy, big, items, healthOk];
}
