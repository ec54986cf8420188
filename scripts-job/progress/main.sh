#!/bin/sh
# progress: params.steps steps (default 5) of params.ms milliseconds (default 200), a progress
# line before each, then {"steps": N} as output. See job.yaml.
#
# A progress line is one JSON object on stdout before the answer: {"progress": <0..1>, "message": "..."}
# (message optional). docq reads stdout as it comes and keeps the latest in the task's record.
set -eu
IFS= read -r req || true
out=${req#*'"outputDir":"'}; out=${out%%'"'*}
params=${req#*'"params":'}; params=${params%%'}'*}
steps=5; ms=200
case $params in *'"steps":'*) steps=${params#*'"steps":'}; steps=${steps%%[!0-9]*} ;; esac
case $params in *'"ms":'*) ms=${params#*'"ms":'}; ms=${ms%%[!0-9]*} ;; esac
frac=$((ms % 1000))
case $frac in ?) frac=00$frac ;; ??) frac=0$frac ;; esac
i=0
while [ "$i" -lt "$steps" ]; do
  # The fraction done before this step (below 1), with two decimals, in sh arithmetic.
  printf '{"progress":0.%02d,"message":"step %s of %s"}\n' "$((i * 100 / steps))" "$((i + 1))" "$steps"
  sleep "$((ms / 1000)).$frac"
  i=$((i + 1))
done
printf '{"steps":%s}' "$steps" > "$out/progress.json"
echo '{"output":"progress.json"}'
