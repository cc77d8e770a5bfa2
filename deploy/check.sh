#!/usr/bin/env bash
# Checks the deployment artefacts: renders the Helm chart with every values file (Helm's own
# engine), lints it, validates every manifest against the Kubernetes schemas, checks that
# deploy/manifests/ is the chart's output, and lints the Dockerfile. `--update` rewrites
# deploy/manifests/ from the chart. The pinned tools go into target/deploy-tools.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=target/deploy-tools
stamp="$tools/.requirements"
if ! cmp -s deploy/requirements.txt "$stamp" 2>/dev/null; then
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check -r deploy/requirements.txt
  cp deploy/requirements.txt "$stamp"
fi

"$tools/bin/python" deploy/check.py "$@"
"$tools/bin/hadolint" --config deploy/hadolint.yaml deploy/Dockerfile
echo "ok   hadolint deploy/Dockerfile"
