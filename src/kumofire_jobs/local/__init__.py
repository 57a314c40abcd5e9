"""The embedded Cloudflare bindings: D1 on SQLite, Queues, Durable Objects with alarms, cron."""
