"""The examples of README.md and docs/ that can be checked cheaply, run as a reader would copy
them (the README's Python snippets: tests/test_readme.py; docs/testing.md's complete example:
tests/test_testing_kit.py)."""

from __future__ import annotations

import ast
import json
import re
import shlex
import textwrap
import tomllib
from pathlib import Path
from typing import Any

import httpx

from kumofire_jobs import demo
from kumofire_jobs.testing import JobsHarness
from kumofire_jobs.web import create_app

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def section(path: Path, heading: str) -> str:
    """The text under `heading` (a whole line, `## ...` or `### ...`) up to the next `##` to
    `######` heading (a line `# ...` is a comment in a code block)."""
    text = path.read_text(encoding="utf-8")
    body = text.split(f"\n{heading}\n", 1)[1]
    return re.split(r"\n#{2,6} ", body, maxsplit=1)[0]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.DOTALL)


def test_no_table_is_cut_by_a_blank_line() -> None:
    # A row after a blank line is no longer part of the table above: Markdown shows it as a
    # paragraph of pipes (docs/api.md's last "Command line" row did).
    cut = []
    for path in MARKDOWN:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i in range(1, len(lines) - 1):
            above, blank, row = lines[i - 1], lines[i], lines[i + 1]
            below = lines[i + 2] if i + 2 < len(lines) else ""
            if (
                blank.strip() == ""
                and above.startswith("|")
                and row.startswith("|")
                and not below.startswith("|---")
            ):
                cut.append(f"{path.name}:{i + 2}")
    assert cut == []


def test_every_python_toml_and_json_block_parses() -> None:
    # Fragments too: a Python block may await at top level (it stands for a handler's body).
    broken = []
    for path in MARKDOWN:
        text = path.read_text(encoding="utf-8")
        for language, body in re.findall(r"```(python|toml|json)\n(.*?)```", text, re.DOTALL):
            body = textwrap.dedent(body)  # a block inside a list item is indented
            try:
                if language == "python":
                    compile(body, path.name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                elif language == "toml":
                    tomllib.loads(body)
                else:
                    json.loads(body)
            except (SyntaxError, ValueError) as error:
                broken.append(f"{path.name} {language}: {error}")
    assert broken == []


async def test_testing_md_harness_and_virtual_sleep_snippets_run() -> None:
    # Both are fragments: the first uses a `send_email` of the reader's, the second is whole.
    harness = blocks(section(ROOT / "docs" / "testing.md", "## The harness"), "python")[0]
    sleeping = blocks(section(ROOT / "docs" / "testing.md", "## Virtual sleep"), "python")[0]
    source = (
        "import asyncio\n"
        "from kumofire_jobs.testing import JobsHarness\n"
        "async def send_email(ctx):\n    pass\n"
        "async def main():\n"
        + "".join(f"    {line}\n" if line else "\n" for line in harness.splitlines())
        + "".join(f"    {line}\n" if line else "\n" for line in sleeping.splitlines())
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, "snippets.py", "exec"), namespace)
    await namespace["main"]()


async def test_local_md_time_example_passes(tmp_path: Path) -> None:
    source = blocks(section(ROOT / "docs" / "local.md", "## Time"), "python")[0]
    namespace: dict[str, Any] = {}
    exec(compile(source, "test_time.py", "exec"), namespace)
    await namespace["test_a_delayed_email_runs_when_due"](tmp_path)


def curl_requests(text: str) -> list[tuple[str, str, Any]]:
    """(method, path, JSON body or None) of each `curl` command in a ```sh block."""
    found = []
    for command in text.replace("\\\n", " ").splitlines():
        words = shlex.split(command, comments=True)
        if not words or words[0] != "curl":
            continue
        method, body, path = "GET", None, ""
        for i, word in enumerate(words):
            if word == "-X":
                method = words[i + 1]
            elif word == "-d":
                body = json.loads(words[i + 1])
            elif word.startswith("localhost:"):
                path = word.split("/", 1)[1]
        found.append((method, "/" + path, body))
    return found


async def test_readme_pause_and_concurrency_example_goes_two_by_two() -> None:
    # "Pause a job, give it work, resume it": its three commands against the demo `dev` runs.
    text = section(ROOT / "README.md", "## Quick start")
    pause = next(block for block in blocks(text, "sh") if "/pause" in block)
    requests = curl_requests(pause)
    assert [(method, path) for method, path, _ in requests] == [
        ("POST", "/v1/jobs/slow/pause"),
        ("POST", "/v1/runs:batch"),
        ("POST", "/v1/jobs/slow/resume"),
    ]
    options = demo.runtime.policies.options
    async with JobsHarness(demo.runtime.handlers, options, virtual_sleep=True) as h:
        app = create_app(lambda request: h.jobs)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers = []
            for method, path, body in requests[:2]:
                answers.append(await client.request(method, path, json=body))
            await h.drain()
            assert [answer.status_code for answer in answers] == [200, 202]
            waiting = (await client.get("/v1/jobs/slow")).json()
            assert waiting["paused"] is True and waiting["counts"]["queued"] == 5

            start = h.now()
            method, path, body = requests[2]
            assert (await client.request(method, path, json=body)).status_code == 200
            await h.drain()  # each run sleeps a second of the harness's clock
            runs = await h.runs("slow", "succeeded")
            assert len(runs) == 5
            starts = sorted(
                round((run.started_at - start).total_seconds()) for run in runs if run.started_at
            )
            assert starts == [0, 0, 1, 1, 2]  # two by two
