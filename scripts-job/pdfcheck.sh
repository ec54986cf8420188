#!/bin/sh
# pdfcheck: outputs {"pdf": true, "bytes": N} for a document that starts as a PDF does (%PDF-);
# anything else is a broken document no retry can fix, so it answers
#   {"error": "not a PDF: ...", "retry": false}
# and the task ends in error at once, whatever its tries left (the answer counts whatever the
# exit code: this script exits 1, as a failure).
set -eu
IFS= read -r req
input=${req#*'"input":"'}; input=${input%%'"'*}
out=${req#*'"outputDir":"'}; out=${out%%'"'*}
head=$(head -c 5 "$input")
if [ "$head" != "%PDF-" ]; then
  echo "pdfcheck: the document does not start with %PDF-" >&2
  echo '{"error":"not a PDF: the document does not start with %PDF-","retry":false}'
  exit 1
fi
printf '{"pdf":true,"bytes":%s}' "$(wc -c < "$input" | tr -d ' ')" > "$out/pdfcheck.json"
echo '{"output":"pdfcheck.json"}'
