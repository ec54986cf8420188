#!/bin/sh
# wordcount: counts the input's lines, words and bytes as `wc` does, and outputs them as
# the JSON {"lines":L,"words":W,"bytes":B} (no trailing newline).
#
# Contract (fully described in scripts-job/noop): one JSON line on stdin, keys in the
# order mode, input, outputDir, params, task; the result file goes under outputDir and
# the answer {"output":"file"} is the last line on stdout; non-zero exit = failure.
# Fields are taken with parameter expansion (first occurrence of each key), which
# assumes the paths hold no `"` or `\`: true of docq's temp dirs. Costs one sh and one wc.
set -eu
IFS= read -r req || true
case $req in *'"input":"'*'"outputDir":"'*) ;; *) echo "wordcount: the request has no input or outputDir" >&2; exit 2 ;; esac
input=${req#*'"input":"'}; input=${input%%'"'*}
out=${req#*'"outputDir":"'}; out=${out%%'"'*}
case $input$out in *\\*) echo "wordcount: paths with \\ or \" are not supported" >&2; exit 2 ;; esac
counts=$(wc < "$input")
set -- $counts
printf '{"lines":%s,"words":%s,"bytes":%s}' "$1" "$2" "$3" > "$out/wordcount.json"
echo '{"output":"wordcount.json"}'
