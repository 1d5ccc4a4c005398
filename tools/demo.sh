#!/bin/sh
# The main job, end to end on this machine: start `bonetriage serve` on loopback with a demo
# configuration in a temporary folder, send real radiographs over DICOM (DCMTK's storescu and
# dcmsend), drop a PNG study into the drop folder, wait for the triage, print the worklist, write the
# pictures of a study, watch the results (SR and Secondary Captures) arrive in the demo's PACS (Orthanc,
# when installed), and stop everything cleanly. Usage: tools/demo.sh BONETRIAGE_BINARY MODEL DATA_FOLDER
# DATA_FOLDER holds pydicom-data's RG1_UNCR.dcm, RG3_UNCR.dcm and RG3_J2KR.dcm (MIT-licensed).
set -eu
BIN=$(realpath "$1") MODEL=$(realpath "$2") DATA=$(realpath "$3")
DEMO=$(mktemp -d /tmp/bonetriage-demo.XXXXXX)
LOG=$DEMO/daemon.log
step() { printf '\n== %s\n' "$*"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The demo's PACS: Orthanc (Debian package orthanc) with a throwaway configuration on free ports, which
# receives BoneTriage's results. Without Orthanc the demo runs without results.
ORTHANC=""
[ -x /usr/sbin/Orthanc ] && ORTHANC=/usr/sbin/Orthanc
RESULTS_CONFIG=""
ORTHANC_PID=""
if [ -n "$ORTHANC" ]; then
  ORTHANC_HTTP=$(free_port)
  ORTHANC_DICOM=$(free_port)
  mkdir -p "$DEMO/pacs"
  printf '{ "Name": "bonetriage-demo-pacs", "StorageDirectory": "%s", "IndexDirectory": "%s", "HttpPort": %s, "DicomPort": %s,
  "DicomAet": "ORTHANC", "RemoteAccessAllowed": false, "AuthenticationEnabled": false, "Plugins": [] }\n' \
    "$DEMO/pacs/storage" "$DEMO/pacs/index" "$ORTHANC_HTTP" "$ORTHANC_DICOM" > "$DEMO/pacs/orthanc.json"
  "$ORTHANC" "$DEMO/pacs/orthanc.json" >/dev/null 2>"$DEMO/pacs/orthanc.log" &
  ORTHANC_PID=$!
  RESULTS_CONFIG=$(printf '[[results]]\nname = "demo PACS"\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = %s\n%s\n[heatmaps]\ncompute = "all"' \
    "$ORTHANC_DICOM" 'verdicts = "all"   # the demo studies are not all abnormal; a site keeps the default, "abnormal"')
fi

cat > "$DEMO/bonetriage.toml" <<EOF
# Demo configuration: everything under $DEMO, DICOM on loopback only.
[dicom]
ae_title = "BONETRIAGE"
bind_address = "127.0.0.1"
port = 0                      # any free port; the log's 'listening' line says which
allowed_callers = [{ ae_title = "STORESCU", hosts = ["127.0.0.1"] }, { ae_title = "MODALITY", hosts = ["127.0.0.1"] }]
[drop_folder]
path = "$DEMO/drop"
[storage]
spool = "$DEMO/spool"
archive = "$DEMO/archive"
quarantine = "$DEMO/quarantine"
results = "$DEMO/results"
after_triage = "archive"
[worklist]
database = "$DEMO/worklist.sqlite"
[model]
path = "$MODEL"
[triage]
quiet_period_seconds = 3
# Demo only: the packaged radiograph is a lower-extremity CR (body part EXTREMITY); the default model
# was trained on humerus radiographs, so a real site would not triage it.
covered_body_parts = ["HUMERUS", "ARM", "EXTREMITY"]
$RESULTS_CONFIG
EOF

step "starting: $BIN serve --config $DEMO/bonetriage.toml"
"$BIN" serve --config "$DEMO/bonetriage.toml" 2>"$LOG" &
PID=$!
trap 'kill $PID $ORTHANC_PID 2>/dev/null || true' EXIT
i=0
until grep -q listening "$LOG"; do
  i=$((i + 1)); [ $i -lt 300 ] || { cat "$LOG"; echo "the daemon did not start" >&2; exit 1; }
  kill -0 $PID 2>/dev/null || { cat "$LOG"; echo "the daemon exited" >&2; exit 1; }
  sleep 0.1
done
PORT=$(sed -n 's/.*address=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$LOG" | head -n 1)
echo "listening on 127.0.0.1:$PORT"

step "C-ECHO, then C-STORE: an extremity CR (uncompressed, storescu) and the same study's JPEG 2000 copy (dcmsend)"
echoscu -aet STORESCU -aec BONETRIAGE 127.0.0.1 "$PORT" && echo "echoscu: OK"
storescu -aet STORESCU -aec BONETRIAGE 127.0.0.1 "$PORT" "$DATA/RG3_UNCR.dcm" && echo "storescu RG3_UNCR.dcm: stored"
dcmsend -aet MODALITY -aec BONETRIAGE 127.0.0.1 "$PORT" "$DATA/RG3_J2KR.dcm" && echo "dcmsend RG3_J2KR.dcm: stored"
step "a chest CR (not covered by the model), and the extremity CR again (a repeat is stored once)"
storescu -aet STORESCU -aec BONETRIAGE 127.0.0.1 "$PORT" "$DATA/RG1_UNCR.dcm" "$DATA/RG3_UNCR.dcm" && echo "storescu: stored"
step "a caller the configuration does not know is refused"
storescu -aet UNKNOWN -aec BONETRIAGE 127.0.0.1 "$PORT" "$DATA/RG3_UNCR.dcm" 2>&1 | sed -n '1,3p' || true

step "drop folder: a MURA-style PNG study (XR_HUMERUS/<patient>/<study>/imageN.png), moved in whole"
mkdir -p "$DEMO/stage/XR_HUMERUS/demo-patient/study1"
dcmj2pnm +on "$DATA/RG3_UNCR.dcm" "$DEMO/stage/XR_HUMERUS/demo-patient/study1/image1.png"
dcmj2pnm +on +Sxv 1200 "$DATA/RG3_UNCR.dcm" "$DEMO/stage/XR_HUMERUS/demo-patient/study1/image2.png"
mv "$DEMO/stage/XR_HUMERUS" "$DEMO/drop/"
echo "not an image" > "$DEMO/drop/notes.dcm"
echo "dropped 2 PNG images and one unreadable file"

step "waiting for the triage (quiet period 3 s)"
i=0
while :; do
  # Finished studies: CSV rows (one per study, after the header) of the states a triage ends in.
  done_count=$("$BIN" list --db "$DEMO/worklist.sqlite" --state triaged --state not_applicable --state failed --format csv | tail -n +2 | wc -l)
  [ "$done_count" -ge 3 ] && break
  i=$((i + 1)); [ $i -lt 120 ] || { cat "$LOG"; echo "triage did not finish" >&2; exit 1; }
  sleep 0.5
done

step "bonetriage list   (what a radiologist sees; flagged studies first)"
"$BIN" list --db "$DEMO/worklist.sqlite"
ID=$("$BIN" list --db "$DEMO/worklist.sqlite" --format csv | awk -F, 'NR==2 {print $1}')
step "bonetriage show $ID"
"$BIN" show "$ID" --db "$DEMO/worklist.sqlite"
# The extremity CR received over DICOM: its pictures, and (below) its results in the PACS.
CR_ID=$("$BIN" list --db "$DEMO/worklist.sqlite" --body-part EXTREMITY --format csv | awk -F, 'NR==2 {print $1}')
step "bonetriage show $CR_ID --images $DEMO/pictures   (the radiograph with its heatmap, and plain)"
# Heatmaps are made after the verdicts, while no study waits: wait until every eligible image has one
# (CSV columns "eligible_images" and "heatmaps").
i=0
until "$BIN" list --db "$DEMO/worklist.sqlite" --format csv | awk -F, -v id="$CR_ID" '
    NR == 1 {for (c = 1; c <= NF; c++) {if ($c == "heatmaps") h = c; if ($c == "eligible_images") e = c}; next}
    $1 == id && h && e && $h >= $e && $h > 0 {found = 1} END {exit !found}'; do
  i=$((i + 1)); [ $i -lt 60 ] || break
  sleep 0.5
done
"$BIN" show "$CR_ID" --db "$DEMO/worklist.sqlite" --images "$DEMO/pictures"

if [ -n "$ORTHANC_PID" ]; then
  step "results in the demo's PACS (Orthanc): waiting for the outbox to deliver"
  i=0
  while :; do
    pending=$("$BIN" outbox --db "$DEMO/worklist.sqlite" --format csv | tail -n +2 | wc -l)
    [ "$pending" -eq 0 ] && break
    i=$((i + 1)); [ $i -lt 120 ] || { echo "the outbox still holds $pending entries"; break; }
    sleep 0.5
  done
  "$BIN" outbox --db "$DEMO/worklist.sqlite" --all
  step "what the demo's PACS holds now, per study and series (Orthanc's REST API)"
  python3 - "http://127.0.0.1:$ORTHANC_HTTP" <<'PY'
import json, sys, urllib.request
base = sys.argv[1]
get = lambda path: json.load(urllib.request.urlopen(base + path))
for study in get("/studies?expand"):
    print("study", study["MainDicomTags"].get("StudyInstanceUID"))
    for sid in study["Series"]:
        series = get(f"/series/{sid}")
        tags = series["MainDicomTags"]
        print(f"  {tags.get('Modality', '?'):3} {len(series['Instances'])} instance(s)  {tags.get('SeriesDescription', '')}")
PY
fi

step "quarantine"
for f in "$DEMO"/quarantine/*.reason; do cat "$f"; done

step "stopping (SIGTERM)"
kill -TERM $PID
wait $PID && echo "the daemon stopped cleanly (exit 0)"
if [ -n "$ORTHANC_PID" ]; then kill -TERM "$ORTHANC_PID" 2>/dev/null || true; wait "$ORTHANC_PID" 2>/dev/null || true; fi
trap - EXIT
step "the daemon's log"
cat "$LOG"
echo
echo "Everything is in $DEMO (remove it when done). Outputs are triage aids, not diagnoses."
