// The JavaScript Worker of the real-runtime suite: calls the service's JobsService over RPC
// (POST /rpc {method, args}), sends raw messages to the service's queue (POST /queue), and is
// the target of remote handlers (the Handlers entrypoint).
import { WorkerEntrypoint } from "cloudflare:workers";

export class Handlers extends WorkerEntrypoint {
  async run_job(run) {
    const payload = run.payload || {};
    if (payload.non_retryable) {
      throw new Error(`non_retryable: ${payload.non_retryable}`);
    }
    if (run.attempt <= (payload.fail_attempts || 0)) {
      throw new Error(`js relay failed (attempt ${run.attempt})`);
    }
    if (payload.carry) {
      // An answer carrying log lines and progress back (cloudflare/remote_answer.py).
      return {
        kumofireJobsAnswer: 1,
        logs: [{ level: "info", event: "carried", fields: { by: "js" }, at: new Date().toISOString() }],
        progress: { step: payload.carry },
        result: { handled_by: "js", id: run.id },
      };
    }
    return { handled_by: "js", id: run.id };
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/health") {
      return Response.json({ ok: true });
    }
    const body = request.method === "POST" ? await request.json() : {};
    if (url.pathname === "/rpc") {
      // An error may be thrown, or answered as an Error value; a caller sees both the same way.
      try {
        const result = await env.JOBS[body.method](...body.args);
        if (result instanceof Error) {
          // JobsService answers an error as an Error value: "<code>: <message>", and `code`.
          return Response.json({
            ok: false, how: "answered", answered: true, name: result.name,
            message: result.message, code: result.code,
          });
        }
        return Response.json({ ok: true, result });
      } catch (error) {
        return Response.json({ ok: false, how: "thrown", message: String(error && error.message) });
      }
    }
    if (url.pathname === "/queue") {
      for (const message of body.messages) {
        await env.QUEUE.send(message, { contentType: body.contentType || "json" });
      }
      return Response.json({ sent: body.messages.length });
    }
    return new Response("not found", { status: 404 });
  },
};
