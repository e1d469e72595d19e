# shellcheck shell=bash disable=SC2034  # SAM and CFN_LINT are for the sourcing script
# Sourced: .venv-sam with the SAM CLI and cfn-lint, offline-friendly settings.
source scripts/lib/venv.sh
ensure_venv .venv-sam scripts/sam-requirements.txt -r scripts/sam-requirements.txt
export SAM_CLI_TELEMETRY=0
# sam validate needs a region, never credentials.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
SAM=.venv-sam/bin/sam
CFN_LINT=.venv-sam/bin/cfn-lint

# The template's runtime: `sam build` (without a container) installs the layer with a
# local interpreter of exactly that version, found on PATH under its versioned name.
LAMBDA_RUNTIME="$(sed -n 's/^ *Runtime: python\([0-9.]*\)$/\1/p' template.yaml | head -n 1)"

# use_lambda_python DIR: put a working python$LAMBDA_RUNTIME first on PATH, linked from DIR
# ($LAMBDA_PYTHON, the one on PATH, or one pyenv has installed); fail clearly if none.
use_lambda_python() {
    local dir="$1" want="python$LAMBDA_RUNTIME" found="${LAMBDA_PYTHON:-}" root
    if [[ -z "$found" ]] && "$want" -V >/dev/null 2>&1; then
        found="$(command -v "$want")"
    fi
    if [[ -z "$found" ]]; then
        root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
        found="$(ls -d "$root"/versions/"$LAMBDA_RUNTIME".*/bin/"$want" 2>/dev/null | sort -V | tail -n 1)"
    fi
    [[ -n "$found" ]] && "$found" -V >/dev/null 2>&1 ||
        die "sam build needs $want (the template's runtime): install it, or set LAMBDA_PYTHON=/path/to/$want"
    mkdir -p "$dir"
    ln -sf "$(realpath "$found")" "$dir/$want"
    export PATH="$dir:$PATH"
}
