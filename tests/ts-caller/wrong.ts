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
  // Right calls beside them, which must not fail:
  const ok: string = (await env.GREETER.greet({ name: "x", times: 1, blob: new Uint8Array() }, "!")).text;
  const n: number = await counter.get();
  void [text, version, ack, code, ok, n];
}
