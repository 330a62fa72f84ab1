// A JS worker calling the Rust worker of templates/rpc over its bindings: the named entrypoint
// through a service binding and the Durable Object through its namespace, with plain values.
export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const name = url.searchParams.get("name") ?? "";
    switch (url.pathname) {
      case "/greet":
        try {
          return Response.json({ ok: await env.GREETER.greet(name) });
        } catch (e) {
          // A Rust handler's error: the Error's message, and its typed value as a property.
          return Response.json({ error: { message: e.message, handler: e.proxyFetchHandlerError, rpc: e.proxyFetchRpcError } });
        }
      case "/visits":
        return Response.json(await env.COUNTER.get(env.COUNTER.idFromName(name)).visits());
      case "/bad-payload":
        try {
          return Response.json({ ok: await env.GREETER.phrase(name, "many") });
        } catch (e) {
          return Response.json({ error: { message: e.message, rpc: e.proxyFetchRpcError } });
        }
      default:
        return new Response("not found", { status: 404 });
    }
  },
};
