#!/usr/bin/env bash
# One-time set-up for `make test` / `make check` on a fresh machine: the Debian packages the lab
# needs (when running as root) and the project's virtualenv with pinned dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(containernetworking-plugins iptables nftables iproute2 nginx-light conntrack curl)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    timeout 600 apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: the lab needs Debian packages ${missing[*]}: run 'sudo apt-get install ${missing[*]}' (kind and existing clusters work without them)" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! timeout 900 .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' > .venv/pip-install.log 2>&1; then
  tail -n 20 .venv/pip-install.log >&2
  echo "setup: pip install failed (full log: .venv/pip-install.log)" >&2
  exit 1
fi
