# Sourced by the other scripts: make ./.venv with this project installed in it.
# Needs only Python 3.11+ (set PYTHON to choose the interpreter). pip runs only when
# the venv is new or the project's dependencies changed (pyproject.toml, or extras not
# installed yet), so a restart needs no network.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "EventStream needs Python 3.11 or newer")'
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
fi
# .venv/.installed: one line "<sha256 of pyproject.toml> <extras>" per install done with
# this pyproject.toml; an install with extras ("[dev]") serves a plain one too.
extras=${EXTRAS:-}
stamp=.venv/.installed
hash=$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
if ! { grep -qxF -- "$hash $extras" "$stamp" 2>/dev/null \
       || { [ -z "$extras" ] && grep -q "^$hash " "$stamp" 2>/dev/null; }; }; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$extras"
  { grep "^$hash " "$stamp" 2>/dev/null || true; echo "$hash $extras"; } > "$stamp.new"
  mv "$stamp.new" "$stamp"
fi
