"""docq_warm: turn a Python function into a docq job, warm or one-shot.

    import sys, os
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
    from docq_warm import serve

    def handle(req):              # req: the request as a dict (mode, input|inputs, outputDir, params, task)
        ...                       # write the result under req["outputDir"]
        return "result.json"      # or {"output": "result.json"} or {"children": [{"input": "part-1"}, ...]}

    serve(handle)

With `warm: true` in job.yaml docq starts the script once per worker slot and sends one JSON
request per line on stdin, each with a "requestId"; serve() calls handle() for each one and
prints the answer, with the same requestId, as one JSON line on stdout. With `concurrency: N` in
job.yaml docq may send up to N requests before the first is answered: serve() answers them in
turn, in the order they came. Everything before
serve() (imports, models, connections) is loaded once per process, not once per task.

Without `warm: true` the same script is a one-shot job: one request without requestId, then
end of input; serve() answers it and returns (an exception then means exit code 1).

While handle() runs, sys.stdout is stderr: print() cannot corrupt the protocol, and what it
prints is kept in the task's stderr tail. An exception fails only its task (the answer is
{"requestId": ..., "error": "..."}, the traceback goes to stderr); the process stays up, and the
task is retried after its backoff. Raise Fatal for a document that can never work (a broken
file): the answer then says "retry": false and the task ends in error at once.

    from docq_warm import serve, progress, Fatal

    def handle(req):
        for i, page in enumerate(pages):
            progress(i / len(pages), "page %d of %d" % (i + 1, len(pages)))   # shown in the task's record
        if broken:
            raise Fatal("not a PDF")
"""

import json
import sys
import traceback

__all__ = ["serve", "progress", "Fatal"]


class Fatal(Exception):
    """A failure no retry can fix: the task ends in error at once ({"error": ..., "retry": false})."""


# Where answers and progress go (the real stdout, saved by serve()), and the request being handled.
_out = None
_request_id = None


def progress(fraction, message=None):
    """Reports how far the current request is (0..1) and what it does, e.g. progress(0.4, "page 4 of 10")."""
    if _out is None:
        return
    line = {"progress": float(fraction)}
    if message is not None:
        line["message"] = str(message)
    if _request_id is not None:
        line["requestId"] = _request_id
    _out.write(json.dumps(line) + "\n")
    _out.flush()


def serve(handle):
    """Answers requests from stdin with handle(request) until stdin ends."""
    global _out, _request_id
    stdin = sys.stdin.buffer
    out = sys.stdout
    _out = out
    sys.stdout = sys.stderr
    failed = False
    try:
        while True:
            line = stdin.readline()
            if not line:
                break
            if not line.strip():
                continue
            request = json.loads(line)
            request_id = request.pop("requestId", None)
            _request_id = request_id
            try:
                answer = _as_answer(handle(request))
            except Fatal as err:  # the task fails for good, whatever its tries left
                answer = {"error": str(err) or "Fatal", "retry": False}
                failed = request_id is None
            except Exception as err:  # the task fails, not the process
                traceback.print_exc(file=sys.stderr)
                sys.stderr.flush()
                if request_id is None:
                    failed = True
                    continue
                answer = {"error": "%s: %s" % (type(err).__name__, err)}
            finally:
                _request_id = None
            if request_id is not None:
                answer = dict(answer, requestId=request_id)
            out.write(json.dumps(answer) + "\n")
            out.flush()
    finally:
        sys.stdout = out
        _out = None
    if failed:
        sys.exit(1)


def _as_answer(result):
    if isinstance(result, str):
        return {"output": result}
    if isinstance(result, dict) and ("output" in result or "children" in result):
        return result
    raise TypeError("the handler returned %r: return an output file name, or a dict with output or children" % (result,))
