#!/bin/sh
# sleep: waits params.ms milliseconds, then outputs a copy of its input.
#
# Contract (fully described in scripts-job/noop): one JSON line on stdin, keys in the
# order mode, input, outputDir, params, task; the answer {"output":"file"} is the last
# line on stdout. Fields are taken with parameter expansion, assuming the paths hold no
# `"` or `\` (true of docq's temp dirs). job.yaml validates params to exactly {"ms":N},
# so the first `"ms":` after `"params":{` is the param.
set -eu
IFS= read -r req || true
case $req in *'"input":"'*'"outputDir":"'*'"params":{'*'"ms":'*) ;; *) echo "sleep: the request has no input, outputDir or params.ms" >&2; exit 2 ;; esac
input=${req#*'"input":"'}; input=${input%%'"'*}
out=${req#*'"outputDir":"'}; out=${out%%'"'*}
case $input$out in *\\*) echo "sleep: paths with \\ or \" are not supported" >&2; exit 2 ;; esac
ms=${req#*'"params":{'}; ms=${ms#*'"ms":'}; ms=${ms%%[!0-9]*}
case $ms in '') echo "sleep: params.ms must be a non-negative integer" >&2; exit 2 ;; esac
if [ "$ms" -gt 0 ]; then
  frac=$((ms % 1000))
  case $frac in ?) frac=00$frac ;; ??) frac=0$frac ;; esac
  sleep "$((ms / 1000)).$frac"
fi
cp "$input" "$out/output"
echo '{"output":"output"}'
