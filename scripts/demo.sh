#!/usr/bin/env bash
# make demo: sample archive -> de-identify (directory mode) -> re-identify one file -> compare.
set -euo pipefail
demo=${1:-build/demo}
bin=.venv/bin
rm -rf "$demo/archive" "$demo/deidentified" "$demo/restored"
mkdir -p "$demo/keys"
mkdir -p "$demo/state"
export ANONPIPE_STATE_DIR="$(cd "$demo/state" && pwd)"   # secret and store outside the output

echo "== 1. a synthetic archive of fake patients (anonpipe-sample)"
"$bin/anonpipe-sample" "$demo/archive" --patients 4 --studies 2 --series 2 --instances 5 --seed 7

echo "== 2. a demo RSA key and certificate (openssl), kept in $demo/keys"
if [ ! -f "$demo/keys/cert.pem" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=anonpipe-demo \
    -keyout "$demo/keys/key.pem" -out "$demo/keys/cert.pem" 2>/dev/null
  chmod 600 "$demo/keys/key.pem"
fi

echo "== 3. de-identify the archive (PS3.15 E.1.1, reversible)"
"$bin/anonpipe" -c "$demo/keys/cert.pem" -e -r --continue --store "$demo/state/run.sqlite" \
  "$demo/archive" "$demo/deidentified"

echo "== 3b. the run's status and its crosswalk (original -> replacement, 0600) from the store"
"$bin/anonpipe-status" "$demo/state/run.sqlite"
"$bin/anonpipe-crosswalk" "$demo/state/run.sqlite" --csv "$demo/state/crosswalk.csv"
head -n 3 "$demo/state/crosswalk.csv"

first=$(cd "$demo/archive" && find . -name '*.dcm' | sort | head -n 1)
echo "== 4. re-identify one file (E.1.2) and compare with the original: $first"
"$bin/anonpipe" -k "$demo/keys/key.pem" -d "$demo/deidentified/$first" "$demo/restored/$first"
if cmp -s "$demo/archive/$first" "$demo/restored/$first"; then
  echo "restored file is byte-identical to the original"
else
  echo "restored file differs from the original" >&2
  exit 1
fi
"$bin/python" - "$demo/archive/$first" "$demo/deidentified/$first" <<'PY'
import sys, pydicom
a, b = (pydicom.dcmread(p) for p in sys.argv[1:3])
for kw in ("PatientName", "PatientID", "StudyInstanceUID", "PatientIdentityRemoved"):
    print(f"  {kw:24} original: {str(a.get(kw, '-')):40.40} de-identified: {str(b.get(kw, '-'))}")
PY
