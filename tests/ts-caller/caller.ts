// A TypeScript worker calling the Rust worker (tests/worker) over Workers RPC through bindings
// typed by the generated tests/worker/build/worker.d.ts. tsc compiles it to build/caller.js,
// which tests/workerd/typescript.test.mjs runs in workerd beside the Rust worker.
import type {
  GreeterEntrypointErrors,
  Greeting,
  ProxyFetchHandlerError,
  Reply,
} from "../worker/build/worker.js";
import type { Env } from "./env.js";

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const url = new URL(request.url);
    const key = url.searchParams.get("key") ?? "ts";
    switch (url.pathname) {
      case "/greet": {
        const g: Greeting = { name: "ts", times: 2, blob: new Uint8Array([1, 2, 3]) };
        const reply: Reply = await env.GREETER.greet(g, "!");
        return Response.json({
          text: reply.text,
          blobIsUint8Array: reply.blob instanceof Uint8Array,
          blob: [...reply.blob],
        });
      }
      case "/greet-error": {
        try {
          await env.GREETER.greet({ name: "ts", times: 0, blob: new Uint8Array() }, "!");
          return Response.json({ error: null });
        } catch (e) {
          const error = (e as ProxyFetchHandlerError<GreeterEntrypointErrors["greet"]>)
            .proxyFetchHandlerError;
          return Response.json({ isError: e instanceof Error, kind: error.kind, message: error.message });
        }
      }
      case "/counter": {
        const counter = env.COUNTER.get(env.COUNTER.idFromName(key));
        const set: number = await counter.set(41);
        const got: number = await counter.get();
        return Response.json({ set, got });
      }
      case "/counter-get": {
        const counter = env.COUNTER.get(env.COUNTER.idFromName(key));
        return Response.json({ got: await counter.get() });
      }
      case "/record-later": {
        const ack: undefined = await env.GREETER.recordLater(key, 7, 200);
        return Response.json({ ackIsUndefined: ack === undefined });
      }
      case "/version": {
        const version: string = await env.RUST_DEFAULT.version();
        return Response.json({ version });
      }
      default:
        return new Response("not found", { status: 404 });
    }
  },
} satisfies ExportedHandler<Env>;
