"""contrib/: the systemd unit passes `systemd-analyze verify`, and fail2ban loads the jail
with the filter as Debian's fail2ban-client reads them (a copy of /etc/fail2ban with ours
added). The filter's matching is tested against real logs in tests/test_fail2ban.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (apt-get install {package})")
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return path


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze", "systemd")
    unit = (CONTRIB / "systemd" / "pbxtui.service").read_text()
    assert "ExecStart=/usr/local/bin/pbxtui --headless" in unit
    assert "SyslogIdentifier=pbxtui" in unit  # the name the fail2ban filter expects
    # verify checks that the command exists: point it at one that does.
    copy = tmp_path / "pbxtui.service"
    copy.write_text(unit.replace("/usr/local/bin/pbxtui", "/bin/true"))
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_fail2ban_loads_the_jail_on_the_services_journal(tmp_path: Path) -> None:
    client = _tool("fail2ban-client", "fail2ban")
    config = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", config)
    shutil.copy(CONTRIB / "fail2ban/filter.d/pbxtui.conf", config / "filter.d")
    shutil.copy(CONTRIB / "fail2ban/jail.d/pbxtui.conf", config / "jail.d")
    result = subprocess.run(
        [client, "-c", str(config), "-d"], capture_output=True, text=True, timeout=60, check=False
    )
    ours = [line for line in result.stdout.splitlines() if "'pbxtui'" in line]
    assert "['add', 'pbxtui', 'systemd']" in ours, result.stdout + result.stderr
    assert "['set', 'pbxtui', 'addjournalmatch', '_SYSTEMD_UNIT=pbxtui.service']" in ours
    assert "['set', 'pbxtui', 'maxretry', 1]" in ours
    assert any("addfailregex" in line and "action=(?:banned|flood-banned)" in line for line in ours)
    assert any("'addaction'" in line and "allports" in line for line in ours)
