"""The ops commands of `kumofire-jobs` (`runs`, `schedules`, `jobs`): a running service's runs,
schedules and jobs, listed, shown and controlled over its HTTP API (`HttpJobsClient`).
`commands` holds the parsers and what each command does, `render` how it prints."""

from .commands import COMMANDS, add_ops_parsers, run_ops

__all__ = ["COMMANDS", "add_ops_parsers", "run_ops"]
