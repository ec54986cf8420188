#!/bin/sh
# pages: the example of a splitting job (job.yaml says `split: true`).
#   split: one child per non-empty input line (each line in its own file part-NNNNNN.txt),
#          answers {"children":[{"input":"part-000001.txt"},...]}; an input without any
#          non-empty line answers an empty output instead, as there is nothing to split.
#   child: outputs its line upper-cased.
#   merge: outputs the children's outputs (`inputs`, in order) joined with newlines.
#   simple: does the whole job at once, with the same result as split + child + merge.
#
# Contract (fully described in scripts-job/noop): one JSON line on stdin, keys in the
# order mode, input|inputs, outputDir, params, task; the answer is the last line on
# stdout. Fields are taken with parameter expansion, assuming the paths hold no `"` or
# `\` (true of docq's temp dirs). awk does the line work: one process per run.
set -eu
IFS= read -r req || true
case $req in '{"mode":"'*'"outputDir":"'*) ;; *) echo "pages: the request has no mode or outputDir" >&2; exit 2 ;; esac
mode=${req#'{"mode":"'}; mode=${mode%%'"'*}
out=${req#*'"outputDir":"'}; out=${out%%'"'*}

input_path() {
  case $req in *'"input":"'*) ;; *) echo "pages: $mode mode needs an input" >&2; exit 2 ;; esac
  input=${req#*'"input":"'}; input=${input%%'"'*}
  case $input$out in *\\*) echo "pages: paths with \\ or \" are not supported" >&2; exit 2 ;; esac
}

case $mode in
  split)
    input_path
    # ENVIRON, not awk -v: -v would interpret backslash escapes in the path.
    OUT=$out awk '
      $0 != "" { n++; f = sprintf("%s/part-%06d.txt", ENVIRON["OUT"], n); print > f; close(f) }
      END {
        if (n == 0) { f = ENVIRON["OUT"] "/empty.txt"; printf "" > f; close(f); print "{\"output\":\"empty.txt\"}"; exit }
        printf "{\"children\":["
        for (i = 1; i <= n; i++) printf "%s{\"input\":\"part-%06d.txt\"}", (i > 1 ? "," : ""), i
        print "]}"
      }' < "$input"
    ;;
  child | simple)
    input_path
    awk '$0 != "" { print toupper($0) }' < "$input" > "$out/upper.txt"
    echo '{"output":"upper.txt"}'
    ;;
  merge)
    set --
    case $req in
      *'"inputs":[]'*) ;;
      *'"inputs":["'*)
        list=${req#*'"inputs":["'}; list=${list%%'"]'*}
        case $list in *\\*) echo "pages: paths with \\ or \" are not supported" >&2; exit 2 ;; esac
        while :; do
          case $list in
            *'","'*) set -- "$@" "${list%%'","'*}"; list=${list#*'","'} ;;
            *) set -- "$@" "$list"; break ;;
          esac
        done
        ;;
      *) echo "pages: merge mode needs inputs" >&2; exit 2 ;;
    esac
    if [ $# -eq 0 ]; then
      : > "$out/merged.txt"
    else
      # awk would take a relative operand like a=b for an assignment; docq's inputs are absolute.
      awk '{ print }' "$@" > "$out/merged.txt"
    fi
    echo '{"output":"merged.txt"}'
    ;;
  *)
    echo "pages: unknown mode \"$mode\"" >&2
    exit 2
    ;;
esac
