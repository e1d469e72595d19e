# shellcheck shell=bash
# Shared by the scripts: find a Python >= 3.11 and keep a virtualenv installed.
# Sourced, not run. Every script works from the repository root.

PYTHON="${PYTHON:-python3}"

die() {
    echo "$*" >&2
    exit 1
}

# require_python: fail clearly unless $PYTHON is Python 3.11 or newer.
require_python() {
    command -v "$PYTHON" >/dev/null 2>&1 ||
        die "natrelay needs Python >= 3.11, and '$PYTHON' was not found; set PYTHON=/path/to/python3.11"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "natrelay needs Python >= 3.11; '$PYTHON' is $("$PYTHON" -V 2>&1). Set PYTHON=/path/to/python3.11"
}

# ensure_venv DIR STAMP_INPUT PIP_ARGS...: create DIR if missing and pip-install PIP_ARGS into
# it, again only when the file STAMP_INPUT (what decides the install) or PIP_ARGS changed.
ensure_venv() {
    local dir="$1" stamp_input="$2"
    shift 2
    local want have=""
    want="$( (cat "$stamp_input"; echo "$*") | cksum)"
    if [[ ! -x "$dir/bin/python" ]]; then
        require_python
        echo "Creating $dir with $("$PYTHON" -V 2>&1)" >&2
        "$PYTHON" -m venv "$dir" ||
            die "could not create $dir (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    "$dir/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$dir has $("$dir/bin/python" -V 2>&1); remove it and set PYTHON to Python >= 3.11"
    [[ -f "$dir/.natrelay-stamp" ]] && have="$(cat "$dir/.natrelay-stamp")"
    if [[ "$want" != "$have" ]]; then
        echo "Installing into $dir: $*" >&2
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@" ||
            die "pip install into $dir failed"
        echo "$want" >"$dir/.natrelay-stamp"
    fi
}
