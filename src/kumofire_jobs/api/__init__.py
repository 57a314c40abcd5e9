"""The jobs API as it crosses a boundary: the wire codec (`wire`) that the HTTP layer, the RPC
entrypoint, `JobsClient` and remote handlers all share. Imports only the core and msgspec."""
