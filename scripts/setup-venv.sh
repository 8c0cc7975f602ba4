# Sourced by run.sh and test.sh: create .venv once and install REQUIREMENTS when it changed.
# Usage: source scripts/setup-venv.sh requirements.txt
requirements_file="$1"
python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $("$python_bin" --version)" >&2
  "$python_bin" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
# Reinstall only when the requirement files change (fast restarts).
stamp=".venv/.installed-$(cat requirements*.txt | sha256sum | cut -c1-16)-$(basename "$requirements_file")"
if [ ! -f "$stamp" ]; then
  # pip byte-compiles every module it installs (torch and transformers alone are thousands),
  # which is most of an install's time; Python compiles the few it imports on first use and
  # keeps them, unless told not to write bytecode: then compile ahead, as pip does by default.
  compile_flag="--no-compile"
  if [ -n "${PYTHONDONTWRITEBYTECODE:-}" ]; then compile_flag="--compile"; fi
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet "$compile_flag" -r "$requirements_file"
  python -m pip install --quiet "$compile_flag" --no-deps -r requirements-nodeps.txt
  touch "$stamp"
fi
