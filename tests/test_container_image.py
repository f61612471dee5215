"""The generated Dockerfile builds an image that runs a pass, as the generated README says.

No container registry is reachable here, so the Dockerfile's base image
(`docker.io/library/python:3.11-slim`) is made from the Debian archive apt uses: Debian
12's Python 3.11 with venv, made with mmdebstrap and imported under that name. The image
is then built with `--pull=never` from the project and a wheelhouse (`wheels/`: the
README's way to ship lobeflow-runtime when the registry does not serve it; here every
dependency too, fetched by the base image's own pip so that its Python's markers apply,
and the build itself needs no network), and run in production mode against an engine
on this machine: its health route answers, it runs as a user of its own, a pass of
`lobeflow run` completes, and `lobeflow doctor` finds nothing wrong.

Where no container can run (no podman, no mmdebstrap, or a sandbox that refuses it) the
test skips, saying why.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lobeflow.engine import EngineConfig, EngineServer

from tests.helpers import free_port, run_cli, wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BASE_IMAGE = "docker.io/library/python:3.11-slim"
IMAGE = "localhost/lobeflow-test-shop"
PODMAN = shutil.which("podman")
# Some sandboxes refuse the OCI runtime's default rlimits and crun's cgroup handling: runc
# with limits below the host's works there, and anywhere else.
RUN_OPTIONS = [
    [],
    ["--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"],
]


def _podman(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    assert PODMAN is not None
    return subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _base_image() -> None:
    """The Dockerfile's base image, made from the Debian archive when it is not here."""
    if _podman("image", "exists", BASE_IMAGE).returncode == 0:
        return
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        pytest.skip(f"{BASE_IMAGE} is not here and mmdebstrap is not installed to make it")
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    with_sources = [str(sources)] if sources.is_file() else []
    tarball = Path(os.environ.get("TMPDIR", "/tmp")) / f"lobeflow-base-{os.getpid()}.tar"
    try:
        made = subprocess.run(
            [mmdebstrap, "--variant=minbase", "--include=python3,python3-venv,ca-certificates"]
            + ["bookworm", str(tarball), *with_sources],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if made.returncode != 0:
            pytest.skip(f"mmdebstrap could not make the base image: {made.stderr[-500:]}")
        imported = _podman("import", str(tarball), BASE_IMAGE)
        assert imported.returncode == 0, imported.stderr
    finally:
        tarball.unlink(missing_ok=True)


def _run_options() -> list[str]:
    """Options with which this machine runs a container (skip when none work)."""
    errors = []
    for options in RUN_OPTIONS:
        tried = _podman("run", "--rm", *options, BASE_IMAGE, "true", timeout=120)
        if tried.returncode == 0:
            return options
        errors.append(tried.stderr.strip().splitlines()[-1:] or ["?"])
    pytest.skip(f"no container runs here: {errors}")


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """The image of a freshly generated project, and how to run containers here."""
    if PODMAN is None:
        pytest.skip("podman is not installed (apt-get install podman runc mmdebstrap)")
    if _podman("info", timeout=120).returncode != 0:
        pytest.skip(f"podman does not work here: {_podman('info').stderr[-300:]}")
    _base_image()
    options = _run_options()
    project = tmp_path_factory.mktemp("image") / "shop"
    args = ["new", "user", "--workflow", "welcome-placeholder", "--verb", "generate"]
    assert run_cli(*args, "--dest", str(project), "--defaults").exit_code == 0
    # The wheelhouse: every dependency, lobeflow-runtime from this checkout.
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    wheels = project / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = _run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(REPO / "runtime")])
    assert built.returncode == 0, built.stderr
    # Every dependency, as the image's own Python resolves it (its version's markers), from
    # the package registry; lobeflow-runtime from the wheel above.
    (wheels / "requirements.txt").write_text("\n".join(pyproject["project"]["dependencies"]))
    ca = Path("/etc/ssl/certs/ca-certificates.crt")  # this machine's view of the registry
    trust = ["-v", f"{ca}:{ca}:ro", "-e", f"PIP_CERT={ca}"] if ca.is_file() else []
    fetch = "python3 -m venv /tmp/venv && /tmp/venv/bin/pip download --quiet --disable-pip-version-check -d /w --find-links /w -r /w/requirements.txt"
    fetched = _podman(
        *options_run(options), "--network", "host", "-v", f"{wheels}:/w", *trust,
        BASE_IMAGE, "sh", "-c", fetch, timeout=900,
    )  # fmt: skip
    if fetched.returncode != 0:
        pytest.skip(
            f"the package registry is not reachable from a container: {fetched.stderr[-300:]}"
        )
    built = _podman(
        "build", "--isolation=chroot", "--pull=never", "--format", "docker",
        "--build-arg", "PIP_NO_INDEX=1", "-t", IMAGE, str(project),
        timeout=900,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    try:
        yield project, options
    finally:
        _podman("rmi", "-f", IMAGE)


def options_run(options: list[str]) -> list[str]:
    """`podman run --rm` with this machine's run options (see RUN_OPTIONS)."""
    return ["run", "--rm", *options]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)


def test_the_image_runs_a_pass_in_production(
    image: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, options = image
    config = EngineConfig(
        token=secrets.token_urlsafe(24),
        current_signing_key="sig_" + secrets.token_urlsafe(24),
        next_signing_key="sig_" + secrets.token_urlsafe(24),
    )
    engine = EngineServer(config, host="127.0.0.1", port=0)
    engine.start()
    port = free_port()
    app_url = f"http://127.0.0.1:{port}"
    settings = {
        "APP_URL": app_url,
        "QSTASH_URL": engine.url,
        "QSTASH_TOKEN": config.token,
        "QSTASH_CURRENT_SIGNING_KEY": config.current_signing_key,
        "QSTASH_NEXT_SIGNING_KEY": config.next_signing_key,
        "LOBEFLOW_STATS_TOKEN": secrets.token_urlsafe(16),
    }
    env_file = tmp_path / "production.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    name = f"lobeflow-test-{port}"
    container = [
        *["run", "-d", "--name", name, "--network", "host", *options],
        *["--env-file", str(env_file), "-e", f"PORT={port}"],
        *["-e", "WELCOME_PLACEHOLDER_EXECUTE_RATE=0", "-e", "WELCOME_PLACEHOLDER_PAGINATE_RATE=0"],
        IMAGE,
    ]
    started = _podman(*container)
    try:
        assert started.returncode == 0, started.stderr

        def healthy() -> bool:
            try:
                return httpx.get(app_url + "/healthz", timeout=2).json() == {"status": "ok"}
            except httpx.HTTPError:
                return False

        wait_for(healthy, "the container's health route", timeout=60, interval=0.2)
        assert _podman("exec", name, "id", "-un").stdout.strip() == "app"
        seeded = _podman(
            "exec", name, "python3", "-c",
            "import asyncio; from app.workflows.welcome_placeholder import logic; "
            "print(len(asyncio.run(logic.seed_items(25))))",
        )  # fmt: skip
        assert seeded.stdout.strip() == "25", seeded.stderr

        for variable, value in settings.items():
            monkeypatch.setenv(variable, value)
        monkeypatch.setenv("LOBEFLOW_ENV", "production")
        result = run_cli(
            "run", "welcome-placeholder", "--project", str(project), "--json",
            "--qstash-url", engine.url, "--app-url", app_url, "--token", config.token,
        )  # fmt: skip
        assert result.exit_code == 0, result.stdout + result.stderr
        assert '"outcome": "completed"' in result.stdout and '"processed": 25' in result.stdout

        doctor = run_cli("doctor", "--project", str(project), "--env-file", str(env_file))
        assert doctor.exit_code == 0, doctor.stdout
        assert "ok  QStash to app: a probe through QStash reached" in doctor.stdout
    finally:
        logs = _podman("logs", name).stdout
        _podman("rm", "-f", name)
        engine.stop()
    assert "Traceback" not in logs, logs[-3000:]
