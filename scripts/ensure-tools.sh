#!/usr/bin/env bash
# The command-line tools the tests use besides Python packages: `age` (the encryption tests prove that files we
# encrypt open with the real age binary and the other way round; without it they are skipped). Installed with
# apt-get when missing and this user may; otherwise a warning says which tests will be skipped.
set -euo pipefail

missing=()
command -v age >/dev/null 2>&1 || missing+=(age)
[ ${#missing[@]} -eq 0 ] && exit 0

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  echo "ensure-tools: installing ${missing[*]} (apt-get)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  command -v age >/dev/null 2>&1 && exit 0
fi
echo "ensure-tools: warning: ${missing[*]} not installed; the age interoperability tests will be skipped" >&2
