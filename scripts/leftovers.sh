#!/usr/bin/env bash
# Fails when a lab or a test left network namespaces, links or processes behind (DESIGN §4).
set -u
bad=0
ns=$(ip netns list 2>/dev/null | awk '{print $1}' | grep '^kncl-' || true)
if [ -n "$ns" ]; then echo "leftover network namespaces: $ns" >&2; bad=1; fi
links=$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^kncl-' || true)
if [ -n "$links" ]; then echo "leftover links in the root namespace: $links" >&2; bad=1; fi
claims=$(ls /run/knetcheck-lab-prefixes 2>/dev/null || true)
if [ -n "$claims" ]; then
  echo "leftover lab prefix claims in /run/knetcheck-lab-prefixes: $claims" >&2
  # The claim names the lab's state directory (/run/knetcheck-<test tag>-…): which test leaked it.
  for c in $claims; do echo "  $c claimed by $(cat "/run/knetcheck-lab-prefixes/$c" 2>/dev/null)" >&2; done
  bad=1
fi
procs=$(pgrep -af 'clusters\.lab\.' 2>/dev/null | grep -v pgrep || true)
if [ -n "$procs" ]; then echo "leftover lab processes: $procs" >&2; bad=1; fi
exit $bad
