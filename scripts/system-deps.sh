#!/usr/bin/env bash
# Install the Debian packages `make run` or `make test` needs, in ONE apt-get call
# (platform-notes: each call costs seconds of dpkg triggers). Not root: print the command.
set -euo pipefail
mode="${1:-run}"

# ghostscript: the PDF/A-1b beside a health document (mssante-spec §3.3, ECO.2.1.5).
# dovecot-auth-lua, lua-socket: the API LPS passdb (deploy/dovecot/lps-auth.lua.tmpl).
# curl: the tests speak IMAP and SMTP with it, as a mail client we did not write.
pkgs=(dovecot-imapd dovecot-lmtpd dovecot-auth-lua lua-socket gnupg ghostscript curl python3-venv)
if [[ "$mode" == "test" || "$mode" == "bench" ]]; then
  pkgs+=(chromium)
  command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
  [[ -x /usr/lib/postgresql/15/bin/initdb ]] || command -v pg_ctl >/dev/null 2>&1 || pkgs+=(postgresql postgresql-contrib)
fi
# The benches compare with Postfix 3.7 (private instances; the system Postfix is never used).
[[ "$mode" == "bench" ]] && pkgs+=(postfix)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# python3-venv is only needed when the interpreter cannot create a venv by itself.
if [[ " ${missing[*]:-} " == *" python3-venv "* ]] && "${PYTHON:-python3.11}" -c "import ensurepip" 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
fi
read -r -a missing <<<"${missing[*]:-}"
((${#missing[@]} == 0)) && exit 0

if [[ "$(id -u)" != "0" ]]; then
  echo "Paquets Debian manquants. Installez-les puis relancez :" >&2
  echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "Installation des paquets Debian : ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >/dev/null
