// A TypeScript worker calling the Rust workers tests/worker and examples/demo over Workers RPC
// through bindings typed by their generated build/worker.d.ts. tsc compiles it to
// build/caller.js, which tests/workerd/typescript.test.mjs runs in workerd beside them.
import type {
  GreeterEntrypointErrors,
  Greeting,
  ProxyFetchHandlerError,
  ProxyFetchRpcError,
  Reply,
  WideReply,
} from "../worker/build/worker.js";
import type { ExecutorHealth, Filed, QueueStats, Started } from "../../examples/demo/build/worker.js";
import type { Env } from "./env.js";

/** What a rejected call carried: the RpcError of a call that failed around its handler. */
function rpcError(e: unknown) {
  return { isError: e instanceof Error, rpc: (e as ProxyFetchRpcError).proxyFetchRpcError ?? null };
}

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
      case "/wide": {
        // 128-bit integers are bigint both ways; a u64 is a number.
        const reply: WideReply = await env.GREETER.wide({ big: 2n ** 100n, negative: -(2n ** 100n) }, 2 ** 52 - 1);
        const max: bigint = await env.GREETER.echoU128(2n ** 128n - 1n);
        return Response.json({
          big: reply.wide.big.toString(),
          bigType: typeof reply.wide.big,
          negative: reply.wide.negative.toString(),
          doubled: reply.doubled,
          doubledType: typeof reply.doubled,
          max: max.toString(),
          maxType: typeof max,
        });
      }
      case "/wide-u64-beyond-2-53": {
        // 2 * (2^53 - 1) is beyond what a number holds exactly: the result cannot cross.
        try {
          await env.GREETER.wide({ big: 0n, negative: 0n }, 2 ** 53 - 1);
          return Response.json({ rpc: null });
        } catch (e) {
          return Response.json(rpcError(e));
        }
      }
      case "/wide-u128-as-number": {
        // What the declarations refuse (wrong.ts): a number where a u128 is expected.
        try {
          await env.GREETER.echoU128(5 as unknown as bigint);
          return Response.json({ rpc: null });
        } catch (e) {
          return Response.json(rpcError(e));
        }
      }
      case "/system-start": {
        // proxy-fetch's own classes, served by examples/demo: an orchestrated request is queued
        // while its upstream waits, and the orchestrator's stats show it.
        const inbox = env.DEMO_INBOX.get(env.DEMO_INBOX.idFromName(key));
        const started: Started = await inbox.start(
          { url: `${url.searchParams.get("upstream")}/slow?delay=1500&key=secret` },
          { flow: "orchestrated" },
          key,
        );
        const orchestrator = env.DEMO_ORCHESTRATOR.get(env.DEMO_ORCHESTRATOR.idFromName("singleton"));
        const stats: QueueStats = await orchestrator.stats();
        const withQueries: QueueStats = await orchestrator.statsWithQueries();
        const health: ExecutorHealth = await env.DEMO_EXECUTOR.health();
        return Response.json({
          requestId: started.request_id,
          pending: stats.pending,
          ids: stats.items.map((item) => item.id),
          url: stats.items[0]?.url ?? null,
          urlWithQuery: withQueries.items[0]?.url ?? null,
          healthOk: health.ok,
          policyOk: "Ok" in health.policy && health.policy.Ok === undefined,
        });
      }
      case "/system-results": {
        const orchestrator = env.DEMO_ORCHESTRATOR.get(env.DEMO_ORCHESTRATOR.idFromName("singleton"));
        const { pending }: QueueStats = await orchestrator.stats();
        const filed: Array<Filed> = await env.DEMO_INBOX.get(env.DEMO_INBOX.idFromName(key)).results();
        return Response.json({ pending, filed: filed.map((f) => ({ id: f.request_id, outcome: f.outcome, status: f.status })) });
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
