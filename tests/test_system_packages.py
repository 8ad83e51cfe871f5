"""scripts/_system.sh (sourced by scripts/test): installs the Debian packages the tests
need, `prometheus` (promtool) and `chromium`, when one is missing and it runs as root
with apt-get; quietly when that works, and without ever failing the run.

Each test runs the script as scripts/test does (sourced under ``set -euo pipefail``,
then the run goes on) with a PATH of its own: the few real tools the script uses, and
stand-ins for ``id`` (root or not) and ``apt-get`` (which logs its calls and may fail).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "_system.sh"
TOOLS = ("mktemp", "tail", "rm", "chmod", "grep")  # the script's, and grep for apt-get's stand-in
INSTALL = "install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 prometheus chromium"

APT_GET = """#!/bin/bash
# "install" fails while $FAILS has more lines than "update" calls were made (FAILS=always: always)
echo "$*" >> "$APT_LOG"
if [ "$1" = install ]; then
  if [ -x /usr/sbin/policy-rc.d ]; then
    /usr/sbin/policy-rc.d prometheus start; echo "policy-rc.d $?" >> "$APT_LOG"
  fi
  echo "E: Unable to locate package prometheus"
  [ "$FAILS" = always ] && exit 100
  [ "$(grep -c '^update' "$APT_LOG")" -ge "$FAILS" ] || exit 100
fi
exit 0
"""


def run(
    tmp_path: Path, *, uid: int, fails: str = "0", present: tuple[str, ...] = ()
) -> tuple[str, str, list[str]]:
    """Source the script as scripts/test does; (stdout, stderr, apt-get's calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    for name, text in {"id": f"#!/bin/sh\necho {uid}\n", "apt-get": APT_GET}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for name in present:  # an installed promtool / chromium
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "apt.log"
    log.touch()
    done = subprocess.run(
        ["/bin/bash", "-c", f"set -euo pipefail; source {SCRIPT}; echo the run goes on"],
        env={"PATH": str(bin_dir), "APT_LOG": str(log), "FAILS": fails},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("the run goes on\n")
    calls = log.read_text().splitlines()
    return done.stdout.removesuffix("the run goes on\n"), done.stderr, calls


@pytest.fixture(autouse=True)
def _needs_bash() -> None:
    if not Path("/bin/bash").exists():
        pytest.skip("no /bin/bash")


def test_as_root_both_packages_install_in_one_quiet_step(tmp_path: Path) -> None:
    out, err, calls = run(tmp_path, uid=0)
    assert (out, err) == ("", "")
    assert [c for c in calls if not c.startswith("policy-rc.d")] == [INSTALL]


def test_no_service_starts_while_installing(tmp_path: Path) -> None:
    policy = Path("/usr/sbin/policy-rc.d")
    had_one = policy.exists()
    _, _, calls = run(tmp_path, uid=0)
    assert "policy-rc.d 101" in calls  # Debian's maintainer scripts are told not to start one
    assert policy.exists() == had_one  # one the script made for the install is gone again


def test_the_package_lists_are_updated_only_when_the_install_fails(tmp_path: Path) -> None:
    out, err, calls = run(tmp_path, uid=0, fails="1")
    assert (out, err) == ("", "")
    assert [c for c in calls if not c.startswith("policy-rc.d")] == [INSTALL, "update -q", INSTALL]


def test_a_failed_install_is_told_and_the_run_goes_on(tmp_path: Path) -> None:
    out, err, calls = run(tmp_path, uid=0, fails="always")
    assert out == ""
    assert "could not install prometheus and chromium (prometheus chromium missing)" in err
    assert "E: Unable to locate package prometheus" in err  # apt's own words
    assert [c for c in calls if not c.startswith("policy-rc.d")] == [INSTALL, "update -q", INSTALL]


def test_not_root_it_says_once_what_is_missing(tmp_path: Path) -> None:
    out, err, calls = run(tmp_path, uid=1000, present=("chromium",))
    assert calls == []
    assert out == ""
    assert err.count("\n") == 1
    assert "prometheus not installed (as root: apt-get install prometheus chromium)" in err


def test_nothing_happens_when_both_are_there(tmp_path: Path) -> None:
    assert run(tmp_path, uid=0, present=("promtool", "chromium")) == ("", "", [])
