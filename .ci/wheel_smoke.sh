#!/usr/bin/env bash
# Wheel smoke test: install the built wheel, with no extras, into a new venv and run the
# offline demo against it from outside the repository: killed after 3 steps, then resumed.
# Usage: .ci/wheel_smoke.sh DIST_DIR
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
wheels=("$1"/agentdur-*.whl)
if [ "${#wheels[@]}" -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
  echo "wheel smoke: expected one agentdur wheel in $1, found: ${wheels[*]}" >&2
  exit 1
fi
wheel="$(cd "$(dirname "${wheels[0]}")" && pwd)/$(basename "${wheels[0]}")"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check "$wheel"

# From a folder outside the repository, with nothing added to sys.path, `import agentdur`
# can only find the installed wheel (examples/ holds no agentdur package).
cd "$work"
unset PYTHONPATH
export PYTHONNOUSERSITE=1
site="$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
where="$("$py" -c 'import agentdur; print(agentdur.__file__)')"
if [ "$where" != "$site/agentdur/__init__.py" ] || [ -e "$repo/examples/agentdur" ]; then
  echo "wheel smoke: agentdur is imported from $where, not from $site" >&2
  exit 1
fi
echo "wheel smoke: agentdur from $where"

demo="$repo/examples/support_agent.py"
status=0
# (the braces keep bash's "Killed" notice out of the log: the SIGKILL is the point)
{ "$py" "$demo" --crash-after 3 >first.txt 2>&1; } 2>/dev/null || status=$?
if [ "$status" -ne 137 ] || ! grep -q "3 steps checkpointed: SIGKILL" first.txt; then
  cat first.txt >&2
  echo "wheel smoke: the demo with --crash-after 3 exited $status, expected SIGKILL (137)" >&2
  exit 1
fi
echo "wheel smoke: the demo killed itself after 3 steps; resuming it"
if ! "$py" "$demo" >second.txt 2>&1 \
  || ! grep -q "run support-demo: SUCCEEDED, 7 steps, executed by 2 process(es)" second.txt \
  || ! grep -q "refunds executed: 1 " second.txt; then
  cat second.txt >&2
  echo "wheel smoke: the resumed demo did not finish with one refund" >&2
  exit 1
fi
tail -n 2 second.txt
"$work/venv/bin/agentdur" runs list --database-url sqlite:///demo-state/support.db \
  | grep -q "support-demo" || { echo "wheel smoke: agentdur runs list failed" >&2; exit 1; }
echo "wheel smoke: OK"
