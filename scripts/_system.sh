# Sourced by scripts/test: the Debian packages some tests need, `prometheus` (promtool
# checks the alert rules and /metrics) and `chromium` (the dashboard's browser tests).
# When one is missing and this runs as root with apt-get, both are installed in one
# quiet step, without starting Prometheus's service; otherwise it says once what is
# missing, and those tests skip (or fail, with CI=true). It never stops the run itself.
_es_missing=()
command -v promtool >/dev/null 2>&1 || _es_missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || _es_missing+=(chromium)
if [ ${#_es_missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    _es_log=$(mktemp)
    # Debian's maintainer scripts ask policy-rc.d before starting a service: 101 = don't.
    _es_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      _es_policy=/usr/sbin/policy-rc.d
      { printf '#!/bin/sh\nexit 101\n' > "$_es_policy" && chmod 755 "$_es_policy"; } 2>/dev/null \
        || _es_policy=
    fi
    _es_install() {
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=300 prometheus chromium >>"$_es_log" 2>&1
    }
    # apt-get update only when the package lists are missing or stale
    if ! _es_install && ! { apt-get update -q >>"$_es_log" 2>&1 && _es_install; }; then
      echo "scripts/_system.sh: could not install prometheus and chromium (${_es_missing[*]} missing):" >&2
      tail -n 20 "$_es_log" >&2
    fi
    [ -z "$_es_policy" ] || rm -f "$_es_policy"
    rm -f "$_es_log"
    unset -f _es_install
    unset _es_log _es_policy
  else
    echo "note: ${_es_missing[*]} not installed (as root: apt-get install prometheus chromium);" \
      "the tests that need them skip (and fail with CI=true)" >&2
  fi
fi
unset _es_missing
