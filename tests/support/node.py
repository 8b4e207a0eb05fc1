"""Node.js packages for the cross-language tests, installed once per lock file.

A package directory (``package.json`` + ``package-lock.json``) is installed with
``npm ci`` into a cache directory under ``.cache/``; later runs reuse it while the two
files are unchanged.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_FILES = ("package.json", "package-lock.json")
INSTALL_TIMEOUT_S = 300

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="Node.js and npm are needed for the cross-language test",
)


async def run(*args: str, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    """Run a command to its end; (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{' '.join(args[:2])} took over {timeout} s") from None
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _installed(package: Path, cache: Path) -> bool:
    marker = cache / "node_modules" / ".package-lock.json"
    return marker.exists() and all(
        (cache / name).exists() and (cache / name).read_bytes() == (package / name).read_bytes()
        for name in PACKAGE_FILES
    )


async def install_node_packages(package: Path, cache_name: str) -> Path:
    """``npm ci`` of ``package`` into ``.cache/<cache_name>`` unless the same lock is
    already installed there; the ``node_modules`` directory (for ``NODE_PATH``)."""
    cache = ROOT / ".cache" / cache_name
    if _installed(package, cache):
        return cache / "node_modules"
    staging = cache.with_name(f"{cache.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in PACKAGE_FILES:
        shutil.copy2(package / name, staging / name)
    env = {**os.environ, "npm_config_update_notifier": "false"}
    code, out, err = await run(
        "npm",
        "ci",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        "--prefix",
        str(staging),
        cwd=staging,
        env=env,
        timeout=INSTALL_TIMEOUT_S,
    )
    if code != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise AssertionError(f"npm ci failed ({code}):\n{out}\n{err}")
    shutil.rmtree(cache, ignore_errors=True)
    staging.rename(cache)
    return cache / "node_modules"
