// The JS side of tests/ui/pass/all_shapes.rs: the entrypoint and Durable Object its traits
// declare (`JsThing`, `RemoteRoom`), implemented in JS for the pass worker's Rust clients.
import { DurableObject, WorkerEntrypoint } from "cloudflare:workers";

export class JsThing extends WorkerEntrypoint {
  add(a, b) {
    return a + b;
  }
  log(line) {
    console.log(`JsThing.log: ${line}`);
  }
}

export class RemoteRoom extends DurableObject {
  async join(who) {
    const count = ((await this.ctx.storage.get("count")) ?? 0) + 1;
    await this.ctx.storage.put("count", count);
    return count;
  }
}

export default {
  fetch() {
    return new Response("pass-peer");
  },
};
