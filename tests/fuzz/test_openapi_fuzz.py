"""Schemathesis against ``/v1/openapi.json`` on a live orchestrator with agents.

The orchestrator runs in this test's loop with three raw agents: one with local rooms
whose ids need percent-encoding and a fleet room, one holding the same fleet room id
(so a namespaced ``<processUid>~dup`` id is listed) and draining, and one with a
connection cap. They answer every command, so a 5xx could only come from the
orchestrator itself (a silent agent's ``504``/``502`` are covered by the command tests).
The schemathesis CLI runs in a subprocess against it (examples, coverage, fuzzing and
stateful phases) with every check but ``positive_data_acceptance``: the document cannot
say that a ``cursor`` is only valid if this API wrote it and only together with
``limit`` (OpenAPI has no parameter dependencies), so schema-valid cursors are rightly
refused with 400.

Proven: no 5xx, every status, content type, header and body as the document says,
schema-invalid input refused with 4xx, no ERROR logged by the orchestrator.
``FUZZ_EXAMPLES`` (default 4) sets examples per operation; ``make fuzz`` runs a long
random run (``FUZZ_SEED`` unset).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from tests.support.agents import RawAgents
from tests.support.figures import report
from tests.support.keys import ADMIN
from tests.support.orchestrators import running_orchestrator
from tests.support.raw_agent import RawRoom

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "4"))
SEED = os.environ.get("FUZZ_SEED", "1" if "FUZZ_EXAMPLES" not in os.environ else "")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.timeout(max(60, EXAMPLES * 3))
async def test_schemathesis_finds_no_5xx_and_no_response_off_the_document(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        running_orchestrator(
            api=True,
            heartbeat_ms=200,
            command_timeout_ms=300,
            auth_failure_limit=10**9,  # schemathesis tries missing keys too; never throttle it
        ) as orch,
        RawAgents(orch) as agents,
    ):
        await agents.connect(
            name="eu1",
            labels={"region": "eu"},
            rooms={
                "caf\u00e9": RawRoom("match", 2),
                "lobby/eu~1": RawRoom("lobby", 1),
                "dup": RawRoom("match", 0, "fleet"),
            },
            room_types=["match", "lobby"],
        )
        await agents.connect(
            name="eu2",
            labels={"region": "eu", "tier": "premium"},
            rooms={"dup": RawRoom("match", 3, "fleet")},
            status="draining",
            max_rooms=50,
        )
        await agents.connect(name="us1", labels={"region": "us"}, max_connections=10)
        started = time.monotonic()
        args = [
            str(SCHEMATHESIS),
            "run",
            f"http://127.0.0.1:{orch.port}/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {ADMIN}",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--exclude-path",
            "/v1/events",  # an endless stream; tests/fuzz/test_hostile_clients.py has it
            "--max-examples",
            str(EXAMPLES),
            "--request-timeout",
            "10",
            "--max-response-time",
            "5",
            "--workers",
            "1",  # ast.parse is not thread-safe on CPython 3.11: hypothesis crashes with 2
            "--output-truncate",
            "false",
        ]
        if SEED:
            args += ["--seed", SEED]
        output = tmp_path / "schemathesis.txt"
        with output.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                *args,
                cwd=tmp_path,  # its .schemathesis/ state stays out of the repo
                env={**os.environ, "NO_COLOR": "1"},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink,
                stderr=asyncio.subprocess.STDOUT,
            )
            code = await proc.wait()
        text = output.read_text(errors="replace")
        assert code == 0, text[-6000:]
        summary = next((line.strip() for line in text.splitlines() if "generated" in line), "?")
        report(
            "schemathesis",
            examples_per_operation=EXAMPLES,
            seconds=time.monotonic() - started,
            summary=summary.replace(" ", "_"),
        )
        errors = [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.ERROR and r.name.startswith("fleet")
        ]
        assert not errors, errors
