// The floor of alarm lateness on workerd: a JavaScript Durable Object that only records how
// late its alarm fired (no D1, no queue). GET /arm?n=50&delay=2000 arms n objects for one
// instant; GET /late?key=K&n=50 answers their lateness in ms once all fired (else null).
import { DurableObject } from "cloudflare:workers";

export class Timer extends DurableObject {
  async arm(due) {
    await this.ctx.storage.put("due", due);
    await this.ctx.storage.setAlarm(due);
  }
  async alarm() {
    const due = await this.ctx.storage.get("due");
    await this.ctx.storage.put("late", Date.now() - due);
  }
  async late() {
    return (await this.ctx.storage.get("late")) ?? null;
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    const n = Number(url.searchParams.get("n") || 1);
    if (url.pathname === "/health") return new Response("ok");
    if (url.pathname === "/arm") {
      const due = Date.now() + Number(url.searchParams.get("delay") || 2000);
      await Promise.all(
        Array.from({ length: n }, (_, i) => env.TIMER.getByName(`${due}-${i}`).arm(due)),
      );
      return Response.json({ key: String(due) });
    }
    const key = url.searchParams.get("key");
    const lates = await Promise.all(
      Array.from({ length: n }, (_, i) => env.TIMER.getByName(`${key}-${i}`).late()),
    );
    return Response.json({ lates: lates.includes(null) ? null : lates });
  },
};
