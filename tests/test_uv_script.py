"""scripts/uv.sh, which every script sources first: uv from pip, else (a Debian or Ubuntu
system Python refuses pip, PEP 668) from a private virtual environment, else a clear line."""

from __future__ import annotations

import glob
import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "uv.sh"

# A python3 like Debian 12's: pip refuses (externally managed), `-m venv` works unless
# FAKE_NO_VENV is set (python3-venv not installed), and the venv's pip installs a fake uv.
FAKE_PYTHON = r"""#!/bin/bash
log="$HOME/calls"; echo "python3 $*" >> "$log"
case "$1 $2" in
  "-m uv") exit 1 ;;
  "-c import uv; print(uv.find_uv_bin())")
    [ -x "$HOME/site/bin/uv" ] && echo "$HOME/site/bin/uv" && exit 0
    exit 1 ;;
  "-m pip")
    if [ -n "${FAKE_PIP_OK:-}" ]; then
      mkdir -p "$HOME/site/bin"
      printf '#!/bin/bash\necho "uv 0.0.0 (pip)"\n' > "$HOME/site/bin/uv"
      chmod +x "$HOME/site/bin/uv"
      exit 0
    fi
    if [ -n "${FAKE_NO_PIP:-}" ]; then echo "/usr/bin/python3: No module named pip" >&2
    else echo "error: externally-managed-environment" >&2; fi
    exit 1 ;;
  "-m venv")
    mkdir -p "$3/bin"
    if [ -n "${FAKE_NO_VENV:-}" ]; then
      echo "The virtual environment was not created successfully: no ensurepip." >&2
      exit 1
    fi
    cat > "$3/bin/python" <<EOS
#!/bin/bash
echo "venv python \$*" >> "$log"
printf '#!/bin/bash\necho "uv 0.0.0 (fake)"\n' > "$3/bin/uv"; chmod +x "$3/bin/uv"
EOS
    chmod +x "$3/bin/python"; exit 0 ;;
esac
exit 2
"""


def source_it(home: Path, path: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; source "{SCRIPT}"; command -v uv; uv --version'],
        env={"HOME": str(home), "PATH": path, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def fake_path(tmp_path: Path) -> str:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python3"
    python.write_text(FAKE_PYTHON, encoding="utf-8")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return f"{bin_dir}:/usr/bin:/bin"


def test_where_pip_installs_it_uv_is_an_executable_on_path(tmp_path: Path, fake_path: str) -> None:
    done = subprocess.run(
        ["bash", "-c", f'set -euo pipefail; source "{SCRIPT}"; exec uv --version'],
        env={"HOME": str(tmp_path), "PATH": fake_path, "FAKE_PIP_OK": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # `exec uv`, as scripts/dev does: a shell function would not do
    assert (done.returncode, done.stdout) == (0, "uv 0.0.0 (pip)\n"), done.stderr
    assert not (tmp_path / ".cache").exists()


def test_where_pip_refuses_uv_goes_into_a_private_venv(tmp_path: Path, fake_path: str) -> None:
    venv = tmp_path / ".cache" / "kumofire-jobs" / "uv"
    done = source_it(tmp_path, fake_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{venv}/bin/uv", "uv 0.0.0 (fake)"]
    assert f"Installing uv into {venv}" in done.stderr
    calls = (tmp_path / "calls").read_text(encoding="utf-8").splitlines()
    assert f"python3 -m venv {venv}" in calls
    assert any(c.startswith("venv python -m pip install") and c.endswith(" uv") for c in calls)

    (tmp_path / "calls").unlink()
    again = source_it(tmp_path, fake_path)  # the next script finds it: no pip, no venv
    assert again.returncode == 0 and again.stdout.splitlines()[0] == f"{venv}/bin/uv"
    assert "Installing" not in again.stderr and not (tmp_path / "calls").exists()


def test_a_python_without_pip_takes_the_same_way(tmp_path: Path, fake_path: str) -> None:
    done = source_it(tmp_path, fake_path, FAKE_NO_PIP="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "uv 0.0.0 (fake)"


def test_without_venv_it_says_what_to_install(tmp_path: Path, fake_path: str) -> None:
    done = source_it(tmp_path, fake_path, FAKE_NO_VENV="1")
    assert done.returncode == 1 and done.stdout == ""
    assert "`python3 -m venv` is missing" in done.stderr
    assert "sudo apt install python3-venv" in done.stderr and "pipx install uv" in done.stderr
    assert not (tmp_path / ".cache" / "kumofire-jobs" / "uv").exists()  # no half-made venv


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    not (os.path.exists("/usr/bin/python3") and glob.glob("/usr/lib/python3*/EXTERNALLY-MANAGED")),
    reason="needs an externally managed /usr/bin/python3 (Debian 12 or newer, Ubuntu 23.04+)",
)
def test_on_the_system_python_of_debian_for_real(tmp_path: Path) -> None:
    # PEP 668 refuses pip here; uv comes from PyPI into the private venv.
    done = source_it(tmp_path, "/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    uv, version = done.stdout.splitlines()
    assert uv == f"{tmp_path}/.cache/kumofire-jobs/uv/bin/uv" and version.startswith("uv ")
