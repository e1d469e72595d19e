"""`natrelay publish … --print-systemd [user|system]`: the same command as a systemd service.

The unit restarts the publisher when it fails (not for a bad command line or config: exit
2), keeps its session file in the unit's state directory (so a restart takes its names
back), and reads the publish token from an environment file, never from the unit itself
(units are world-readable). A system unit runs as the user who printed it (as a dynamic
user when that is root).
"""

from __future__ import annotations

import getpass
import os
import re
import sys
from pathlib import Path

from natrelay_cli.exits import EXIT_USAGE

UNIT_NAME = "natrelay-publish"
SESSION_FILE = "%S/natrelay/session.json"
ENV_FILES = {"user": "%h/.config/natrelay/publish.env", "system": "/etc/natrelay/publish.env"}
# Longer than the publisher's default shutdown grace (30 s) and the deregistration after it.
STOP_SECONDS = 45
_PLAIN = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")


def executable() -> list[str]:
    """How to run this very `natrelay`: the script beside this Python, or `python -m`."""
    script = Path(sys.executable).parent / "natrelay"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "natrelay_cli"]


def quote(arg: str) -> str:
    """One argument for ExecStart: `%` and `$` escaped (specifiers, variables), quoted
    when it holds anything but plain characters."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN.match(arg):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(
    scope: str,
    publish_args: list[str],
    *,
    token_file_required: bool,
    environment: dict[str, str] | None = None,
) -> str:
    """The unit for `natrelay publish PUBLISH_ARGS` (with `environment` set), its install
    steps as comments."""
    env_file = ENV_FILES[scope]
    command = " ".join(
        [
            *(quote(a) for a in [*executable(), "publish", *publish_args]),
            "--session-file",
            SESSION_FILE,
        ]
    )
    user = scope == "user"
    shown_env = env_file.replace("%h", "~")
    ctl = "systemctl --user" if user else "sudo systemctl"
    place = "~/.config/systemd/user" if user else "/etc/systemd/system"
    lines = [
        f"# natrelay publisher, a systemd {scope} unit. To install it:",
        f"#   natrelay publish … --print-systemd{'' if user else ' system'} > "
        f"{place}/{UNIT_NAME}.service",
        f"#   install -D -m 600 /dev/null {shown_env}   # then write in it:",
        "#     NATRELAY_PUBLISH_TOKEN=<the publisher key>",
        f"#   {ctl} daemon-reload && {ctl} enable --now {UNIT_NAME}",
    ]
    if user:
        lines.append('#   sudo loginctl enable-linger "$USER"   # start at boot, logged in or not')
    lines += [
        f"# Logs: journalctl{' --user' if user else ''} -u {UNIT_NAME} -f",
        "",
        "[Unit]",
        "Description=natrelay publisher: this machine's LLM backends on a natrelay relay",
    ]
    if not user:  # a user manager knows neither target nor the system's ollama.service
        lines += ["Wants=network-online.target", "After=network-online.target ollama.service"]
    lines += [
        "",
        "[Service]",
        "Type=exec",
        f"EnvironmentFile={'' if token_file_required else '-'}{env_file}",
        *(f"Environment={quote(f'{k}={v}')}" for k, v in (environment or {}).items()),
        f"ExecStart={command}",
        "StateDirectory=natrelay",
        "StateDirectoryMode=0700",
        "Restart=on-failure",
        "RestartSec=10",
        f"RestartPreventExitStatus={EXIT_USAGE}",
        f"TimeoutStopSec={STOP_SECONDS}",
    ]
    if not user:
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            lines.append("DynamicUser=yes")
        else:
            lines.append(f"User={getpass.getuser()}")
        lines += ["NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=strict"]
    lines += ["", "[Install]", f"WantedBy={'default' if user else 'multi-user'}.target", ""]
    return "\n".join(lines)
