# shellcheck shell=bash disable=SC2034  # SAM and CFN_LINT are for the sourcing script
# Sourced: .venv-sam with the SAM CLI and cfn-lint, offline-friendly settings.
source scripts/lib/venv.sh
ensure_venv .venv-sam scripts/sam-requirements.txt -r scripts/sam-requirements.txt
export SAM_CLI_TELEMETRY=0
# sam validate needs a region, never credentials.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
SAM=.venv-sam/bin/sam
CFN_LINT=.venv-sam/bin/cfn-lint
