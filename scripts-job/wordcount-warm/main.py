# wordcount-warm: `wordcount` as a warm job, with the same output: the input's lines, words and
# bytes as `wc` counts them, as the JSON {"lines":L,"words":W,"bytes":B} (no trailing newline).
# docq starts this once per worker slot; everything above serve() runs once per process.
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ folders in scripts-job/
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from docq_warm import serve  # noqa: E402
from wc import wc_counts  # noqa: E402  (beside this file: wc's exact rules, locale included)


def wordcount(req):
    with open(req["input"], "rb") as f:
        counts = wc_counts(f.read())
    with open(os.path.join(req["outputDir"], "wordcount.json"), "w") as f:
        f.write(json.dumps(counts, separators=(",", ":")))
    return "wordcount.json"


serve(wordcount)
